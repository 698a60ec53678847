package nat_test

import (
	"bytes"
	"context"
	"net/netip"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"github.com/nlbridge/bridge/internal/nltestutil"
	"github.com/nlbridge/bridge/nat"
	"golang.org/x/sys/unix"
)

var ctx = context.Background()

func nftType(m netlink.Message) uint16 { return uint16(m.Header.Type) & 0xff }

// fake returns a firewall on a recording conn, with the setup batch
// already recorded.
func fake(t *testing.T) (*nat.Firewall, *nltestutil.Recorder) {
	t.Helper()
	r := &nltestutil.Recorder{}
	f, err := nat.New("t", func() (*nftables.Conn, *netlink.Conn, error) {
		c, err := nftables.New(nftables.WithTestDial(r.Func()))
		return c, r.Dial(), err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err = f.Rebuild(ctx, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	return f, r
}

func TestSetupIsOneBatch(t *testing.T) {
	_, r := fake(t)
	if r.Sends != 1 {
		t.Fatalf("table setup took %d sendmsg, want 1", r.Sends)
	}
	first, last := r.Reqs[0], r.Reqs[len(r.Reqs)-1]
	if first.Header.Type != unix.NFNL_MSG_BATCH_BEGIN || last.Header.Type != unix.NFNL_MSG_BATCH_END {
		t.Fatalf("not a batch: %v ... %v", first.Header.Type, last.Header.Type)
	}
	count := map[uint16]int{}
	for _, m := range r.Reqs[1 : len(r.Reqs)-1] {
		count[nftType(m)]++
	}
	// inet and bridge (the guard) tables.
	want := map[uint16]int{unix.NFT_MSG_NEWTABLE: 4, unix.NFT_MSG_DELTABLE: 2, unix.NFT_MSG_NEWSET: 24,
		unix.NFT_MSG_NEWCHAIN: 16}
	for typ, n := range want {
		if count[typ] != n {
			t.Errorf("message type %d: %d, want %d", typ, count[typ], n)
		}
	}
	if count[unix.NFT_MSG_NEWRULE] < 20 {
		t.Errorf("%d rules", count[unix.NFT_MSG_NEWRULE])
	}
	// add, delete, add: a clean table whether or not one existed.
	if nftType(r.Reqs[1]) != unix.NFT_MSG_NEWTABLE || nftType(r.Reqs[2]) != unix.NFT_MSG_DELTABLE || nftType(r.Reqs[3]) != unix.NFT_MSG_NEWTABLE {
		t.Error("table is not replaced atomically (want NEWTABLE, DELTABLE, NEWTABLE first)")
	}
}

// setElems decodes a NEWSETELEM/DELSETELEM: set name and element keys/values.
func setElems(t *testing.T, m netlink.Message) (set string, keys, vals [][]byte) {
	t.Helper()
	a := nltestutil.Attrs(t, m.Data[4:])
	set = nlenc.String(a[unix.NFTA_SET_ELEM_LIST_SET])
	els, err := netlink.UnmarshalAttributes(a[unix.NFTA_SET_ELEM_LIST_ELEMENTS])
	if err != nil {
		t.Fatal(err)
	}
	for _, el := range els {
		ea := nltestutil.Attrs(t, el.Data)
		if k, ok := ea[unix.NFTA_SET_ELEM_KEY]; ok {
			keys = append(keys, nltestutil.Attrs(t, k)[unix.NFTA_DATA_VALUE])
		}
		if v, ok := ea[unix.NFTA_SET_ELEM_DATA]; ok {
			vals = append(vals, nltestutil.Attrs(t, v)[unix.NFTA_DATA_VALUE])
		}
	}
	return set, keys, vals
}

func TestOnePortIsOneElementWhateverExists(t *testing.T) {
	f, r := fake(t)
	addr := netip.MustParseAddr("172.18.0.2")
	for i := range 1000 {
		if err := f.AddPorts(ctx, nat.Port{Proto: unix.IPPROTO_TCP, HostIP: netip.IPv4Unspecified(), HostPort: uint16(10000 + i), Addr: addr, Port: 80}); err != nil {
			t.Fatal(err)
		}
	}
	sends, n := r.Sends, len(r.Reqs)
	err := f.AddPorts(ctx, nat.Port{Proto: unix.IPPROTO_TCP, HostIP: netip.MustParseAddr("192.0.2.1"), HostPort: 8080, Addr: addr, Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	if r.Sends != sends+1 || len(r.Reqs) != n+3 {
		t.Fatalf("the 1001st port took %d sendmsg and %d messages, want 1 and 3 (begin, element, end)", r.Sends-sends, len(r.Reqs)-n)
	}
	m := r.Reqs[n+1]
	if nftType(m) != unix.NFT_MSG_NEWSETELEM {
		t.Fatalf("type %d, want NEWSETELEM", nftType(m))
	}
	set, keys, vals := setElems(t, m)
	wantKey := []byte{192, 0, 2, 1, 6, 0, 0, 0, 0x1f, 0x90, 0, 0} // addr . tcp . 8080, each padded to 4
	wantVal := []byte{172, 18, 0, 2, 0, 80, 0, 0}                 // addr . 80
	if set != "ports4" || len(keys) != 1 || !bytes.Equal(keys[0], wantKey) || !bytes.Equal(vals[0], wantVal) {
		t.Errorf("element %s %x : %x, want ports4 %x : %x", set, keys, vals, wantKey, wantVal)
	}
}

func TestManyPortsAreFewMessages(t *testing.T) {
	f, r := fake(t)
	var ps []nat.Port
	for i := range 1000 {
		ps = append(ps, nat.Port{Proto: unix.IPPROTO_TCP, HostIP: netip.IPv4Unspecified(), HostPort: uint16(10000 + i),
			Addr: netip.MustParseAddr("172.18.0.2"), Port: 80})
	}
	ps = append(ps, nat.Port{Proto: unix.IPPROTO_UDP, HostIP: netip.IPv6Unspecified(), HostPort: 53, Addr: netip.MustParseAddr("fd00::2"), Port: 53})
	sends, n := r.Sends, len(r.Reqs)
	if err := f.RemovePorts(ctx, ps...); err != nil {
		t.Fatal(err)
	}
	msgs := r.Reqs[n+1 : len(r.Reqs)-1] // without begin and end
	if r.Sends != sends+1 || len(msgs) != 3 {
		t.Fatalf("1,001 ports took %d sendmsg and %d element messages, want 1 and 3 (512 + 488 in portsany4, 1 in portsany6)", r.Sends-sends, len(msgs))
	}
	seen := map[string]int{}
	for _, m := range msgs {
		set, keys, _ := setElems(t, m)
		if nftType(m) != unix.NFT_MSG_DELSETELEM {
			t.Errorf("type %d, want DELSETELEM", nftType(m))
		}
		seen[set] += len(keys)
	}
	if seen["portsany4"] != 1000 || seen["portsany6"] != 1 {
		t.Errorf("elements per set %v, want portsany4:1000 portsany6:1", seen)
	}
}

func TestPortElementsBySetAndFamily(t *testing.T) {
	f, r := fake(t)
	for _, tc := range []struct {
		p   nat.Port
		set string
		key []byte
	}{
		{nat.Port{Proto: 17, HostIP: netip.IPv6Unspecified(), HostPort: 53, Addr: netip.MustParseAddr("fd00::2"), Port: 53},
			"portsany6", []byte{17, 0, 0, 0, 0, 53, 0, 0}},
		{nat.Port{Proto: 6, Routed: true, Addr: netip.MustParseAddr("10.0.0.2"), Port: 80},
			"rports4", []byte{10, 0, 0, 2, 6, 0, 0, 0, 0, 80, 0, 0}},
	} {
		n := len(r.Reqs)
		if err := f.RemovePorts(ctx, tc.p); err != nil {
			t.Fatal(err)
		}
		m := r.Reqs[n+1]
		set, keys, _ := setElems(t, m)
		if nftType(m) != unix.NFT_MSG_DELSETELEM || set != tc.set || !bytes.Equal(keys[0], tc.key) {
			t.Errorf("%v: type %d set %s key %x, want DELSETELEM %s %x", tc.p, nftType(m), set, keys[0], tc.set, tc.key)
		}
	}
}

func TestNetworkElementsPerMode(t *testing.T) {
	for _, tc := range []struct {
		n    nat.Network
		sets []string
	}{
		{nat.Network{Bridge: "br0"}, []string{"bridges", "samebridge", "protect4", "masq4", "protect6", "masq6"}},
		{nat.Network{Bridge: "br0", Mode4: nat.NATUnprotected, Mode6: nat.Routed, SNAT4: netip.MustParseAddr("192.0.2.9")},
			[]string{"bridges", "samebridge", "snat4", "routed6"}},
		{nat.Network{Bridge: "br0", Internal: true}, []string{"bridges", "samebridge", "internal4", "internal6"}},
		{nat.Network{Bridge: "br0", Mode4: nat.Isolated}, []string{"bridges", "samebridge", "internal4", "protect6", "masq6"}},
	} {
		f, r := fake(t)
		n := len(r.Reqs)
		if err := f.AddNetwork(ctx, tc.n); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range r.Reqs[n+1 : len(r.Reqs)-1] {
			set, keys, _ := setElems(t, m)
			got = append(got, set)
			if !bytes.HasPrefix(keys[0], []byte("br0\x00")) {
				t.Errorf("%s key %q", set, keys[0])
			}
		}
		if r.Sends != 2 || len(got) != len(tc.sets) {
			t.Errorf("%+v: %d sendmsg, sets %v, want 1 batch with %v", tc.n, r.Sends-1, got, tc.sets)
			continue
		}
		for i := range got {
			if got[i] != tc.sets[i] {
				t.Errorf("%+v: sets %v, want %v", tc.n, got, tc.sets)
				break
			}
		}
	}
}

func TestConntrackFlushMessages(t *testing.T) {
	msgs := nat.FlushConntrackMsgs(netip.MustParseAddr("172.18.0.2"))
	if len(msgs) != 2 || len(nat.FlushInboundConntrackMsgs(netip.MustParseAddr("172.18.0.2"))) != 1 {
		t.Fatalf("%d messages, want 2 (reply src, orig src); inbound only: 1", len(msgs))
	}
	for i, want := range []struct {
		tuple, ip, filter uint16
		flag              uint32
	}{{2, 1, 2, 1}, {1, 1, 1, 1}} {
		m := msgs[i]
		if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK<<8|2) || !bytes.Equal(m.Data[:4], []byte{unix.AF_INET, 1, 0, 0}) {
			t.Errorf("%d: header %v nfgenmsg %x", i, m.Header.Type, m.Data[:4])
		}
		a := nltestutil.Attrs(t, m.Data[4:])
		ip := nltestutil.Attrs(t, nltestutil.Attrs(t, a[want.tuple])[1])[want.ip]
		flag := nlenc.Uint32(nltestutil.Attrs(t, a[25])[want.filter])
		if !bytes.Equal(ip, []byte{172, 18, 0, 2}) || flag != want.flag {
			t.Errorf("%d: tuple %d ip %d = %x, filter %d = %d", i, want.tuple, want.ip, ip, want.filter, flag)
		}
	}
}

func TestModeString(t *testing.T) {
	for m, want := range map[nat.Mode]string{nat.NAT: "nat", nat.NATUnprotected: "nat-unprotected", nat.Routed: "routed",
		nat.Isolated: "isolated", 9: "mode(9)"} {
		if m.String() != want {
			t.Errorf("%d.String() = %q, want %q", m, m.String(), want)
		}
	}
}

// Every rule carries its tag (a comment with a hash of what it should be),
// which Check compares; Rebuild puts the elements it is given in the same
// batch as the table.
func TestRebuildTagsRulesAndCarriesElements(t *testing.T) {
	f, r := fake(t)
	tags := map[string]bool{}
	for _, m := range r.Reqs {
		if nftType(m) != unix.NFT_MSG_NEWRULE {
			continue
		}
		ud := nltestutil.Attrs(t, m.Data[4:])[unix.NFTA_RULE_USERDATA]
		// TLV: type 0 (comment), length, "nlbridge <16 hex>\0".
		if len(ud) != 2+len("nlbridge 0123456789abcdef")+1 || ud[0] != 0 || !bytes.HasPrefix(ud[2:], []byte("nlbridge ")) {
			t.Fatalf("rule userdata %q: want a comment tag", ud)
		}
		if tags[string(ud)] {
			t.Errorf("two rules share the tag %q", ud)
		}
		tags[string(ud)] = true
	}
	r.Reqs, r.Sends = nil, 0
	p := nat.Port{Proto: unix.IPPROTO_TCP, HostIP: netip.IPv4Unspecified(), HostPort: 80, Addr: netip.MustParseAddr("10.0.0.2"), Port: 80}
	g := nat.Guard{Port: "veth1", MAC: []byte{2, 0, 0, 0, 0, 1}, IPv4: netip.MustParseAddr("10.0.0.2")}
	if err := f.Rebuild(ctx, []nat.Network{{Bridge: "br0"}}, []nat.Port{p}, []nat.Guard{g}); err != nil {
		t.Fatal(err)
	}
	if r.Sends != 1 {
		t.Fatalf("Rebuild took %d sendmsg, want 1", r.Sends)
	}
	sets := map[string]bool{}
	for _, m := range r.Reqs {
		if nftType(m) == unix.NFT_MSG_NEWSETELEM {
			set, _, _ := setElems(t, m)
			sets[set] = true
		}
	}
	for _, want := range []string{"bridges", "samebridge", "protect4", "masq4", "portsany4", "endpoints", "guarded", "macs", "addrs4", "addrs6"} {
		if !sets[want] {
			t.Errorf("Rebuild's batch has no element of %s (has %v)", want, sets)
		}
	}
}
