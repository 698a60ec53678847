package nat_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/nlbridge/bridge/nat"
	"golang.org/x/sys/unix"
)

func TestLinkLocalIsEUI64(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x42, 0xac, 0x1d, 0x00, 0x02}
	if got, want := nat.LinkLocal(mac), netip.MustParseAddr("fe80::42:acff:fe1d:2"); got != want {
		t.Errorf("LinkLocal(%s) = %s, want %s", mac, got, want)
	}
}

func TestGuardElementsAreOneBatch(t *testing.T) {
	port := append([]byte("vethab12cd3"), make([]byte, 5)...)
	mac := net.HardwareAddr{2, 0x42, 172, 29, 0, 2}
	for _, tc := range []struct {
		g    nat.Guard
		want map[string][][]byte
	}{
		{nat.Guard{Port: "vethab12cd3", MAC: mac, IPv4: netip.MustParseAddr("172.29.0.2"), IPv6: netip.MustParseAddr("fd29::2")},
			map[string][][]byte{
				"endpoints": {port},
				"guarded":   {port},
				"macs":      {cat(port, mac, []byte{0, 0})},
				"addrs4":    {cat(port, []byte{172, 29, 0, 2})},
				"addrs6":    {cat(port, nat.LinkLocal(mac).AsSlice()), cat(port, netip.MustParseAddr("fd29::2").AsSlice())},
			}},
		{nat.Guard{Port: "vethab12cd3", MAC: mac, IPv6: netip.MustParseAddr("fd29::2"), AllowSpoofing: true},
			map[string][][]byte{"endpoints": {port}}},
	} {
		f, r := fake(t)
		for _, op := range []struct {
			typ   uint16
			apply func() error
		}{
			{unix.NFT_MSG_NEWSETELEM, func() error { return f.Apply(ctx, nat.Change{AddGuards: []nat.Guard{tc.g}}) }},
			{unix.NFT_MSG_DELSETELEM, func() error { return f.Apply(ctx, nat.Change{RemoveGuards: []nat.Guard{tc.g}}) }},
		} {
			sends, n := r.Sends, len(r.Reqs)
			if err := op.apply(); err != nil {
				t.Fatal(err)
			}
			if r.Sends != sends+1 {
				t.Errorf("%v: %d sendmsg, want 1", tc.g, r.Sends-sends)
			}
			got := map[string][][]byte{}
			for _, m := range r.Reqs[n+1 : len(r.Reqs)-1] {
				if nftType(m) != op.typ {
					t.Errorf("%v: message type %d, want %d", tc.g, nftType(m), op.typ)
				}
				set, keys, _ := setElems(t, m)
				got[set] = append(got[set], keys...)
			}
			if len(got) != len(tc.want) {
				t.Errorf("%v: sets %v, want %v", tc.g, keysOf(got), keysOf(tc.want))
			}
			for set, keys := range tc.want {
				if len(got[set]) != len(keys) {
					t.Errorf("%v: %s has %d elements, want %d", tc.g, set, len(got[set]), len(keys))
					continue
				}
				for i := range keys {
					if !bytes.Equal(got[set][i], keys[i]) {
						t.Errorf("%v: %s key %x, want %x", tc.g, set, got[set][i], keys[i])
					}
				}
			}
		}
	}
}

func TestApplyRemovesPortsAndGuardsInOneBatch(t *testing.T) {
	f, r := fake(t)
	sends := r.Sends
	if err := f.Apply(ctx, nat.Change{}); err != nil || r.Sends != sends {
		t.Fatalf("empty change: %v, %d sendmsg, want none", err, r.Sends-sends)
	}
	g := nat.Guard{Port: "veth1", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, AllowSpoofing: true}
	p := nat.Port{Proto: 6, HostIP: netip.IPv4Unspecified(), HostPort: 8080, Addr: netip.MustParseAddr("10.0.0.2"), Port: 80}
	n := len(r.Reqs)
	if err := f.Apply(ctx, nat.Change{RemovePorts: []nat.Port{p}, RemoveGuards: []nat.Guard{g}}); err != nil {
		t.Fatal(err)
	}
	if r.Sends != sends+1 || len(r.Reqs) != n+4 {
		t.Fatalf("%d sendmsg, %d messages, want 1 batch of begin, 2 elements, end", r.Sends-sends, len(r.Reqs)-n)
	}
	if set, _, _ := setElems(t, r.Reqs[n+1]); set != "portsany4" {
		t.Errorf("first element in %s, want the port first", set)
	}
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func keysOf(m map[string][][]byte) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	return s
}

// Many endpoints' guards (a network delete) go in one message per set and
// 512 elements, not one per element: the kernel acks each message, and
// thousands of acks overflow the socket.
func TestManyGuardsAreFewMessages(t *testing.T) {
	f, r := fake(t)
	var gs []nat.Guard
	for i := range 1000 {
		gs = append(gs, nat.Guard{Port: fmt.Sprintf("veth%07x", i), MAC: net.HardwareAddr{2, 0x42, 10, 0, byte(i >> 8), byte(i)},
			IPv4: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), IPv6: netip.MustParseAddr(fmt.Sprintf("fd00::%x", i+1))})
	}
	sends, n := r.Sends, len(r.Reqs)
	if err := f.Apply(ctx, nat.Change{RemoveGuards: gs}); err != nil {
		t.Fatal(err)
	}
	// endpoints, guarded, macs, addrs4: 1,000 each (2 messages); addrs6: 2,000 (4).
	if msgs := len(r.Reqs) - n - 2; r.Sends != sends+1 || msgs != 12 {
		t.Errorf("%d sendmsg, %d element messages, want 1 and 12", r.Sends-sends, msgs)
	}
}
