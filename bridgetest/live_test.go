package bridgetest_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"github.com/mdlayher/netlink/nltest"
	"github.com/nlbridge/bridge/addr"
	"github.com/nlbridge/bridge/bridgetest"
	"github.com/nlbridge/bridge/internal/linkmsg"
	"github.com/nlbridge/bridge/internal/nl"
	"github.com/nlbridge/bridge/internal/testenv"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/route"
	"golang.org/x/sys/unix"
)

// kernelEnv is a host and a sandbox namespace, real or fake.
type kernelEnv struct {
	host, box *netlink.Conn // NETLINK_ROUTE
	boxFD     int           // the sandbox, for IFLA_NET_NS_FD
	nft       *nftables.Conn
}

// The fake answers what the driver sends as the kernel does: the same
// requests, against a throwaway namespace of the running kernel and
// against the fake, give the same errno at every step.
func TestLiveFakeMatchesTheKernel(t *testing.T) {
	host, box := testenv.NetNS(t, "fkh"), testenv.NetNS(t, "fkb")
	hc, err := host.Dial(unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	bc, err := box.Dial(unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	rn, err := nftables.New(nftables.WithNetNSFd(host.FD()), nftables.AsLasting())
	if err != nil {
		t.Fatal(err)
	}
	defer rn.CloseLasting()
	real := kernelEnv{host: hc, box: bc, boxFD: box.FD(), nft: rn}

	k := bridgetest.New()
	k.AddNS("/run/netns/host") // a fresh one, like the real side's (lo down)
	k.AddNS("/run/netns/box")
	fh, fb := dial(t, k, "/run/netns/host"), dial(t, k, "/run/netns/box")
	fbox := open(t, k, "/run/netns/box")
	fn, fsock, err := open(t, k, "/run/netns/host").NFTables()
	if err != nil {
		t.Fatal(err)
	}
	defer fsock.Close()
	defer fn.CloseLasting()
	fake := kernelEnv{host: fh, box: fb, boxFD: fbox.FD(), nft: fn}

	compare := func(after string) {
		t.Helper()
		for _, side := range []struct {
			name      string
			real, fak *netlink.Conn
		}{{"host", hc, fh}, {"sandbox", bc, fb}} {
			if got, want := describe(t, side.fak), describe(t, side.real); got != want {
				t.Errorf("%s after %q:\nfake:\n%s\nkernel:\n%s", side.name, after, got, want)
			}
		}
	}
	last := ""
	for _, s := range kernelSteps() {
		if s.run == nil {
			compare(last)
			continue
		}
		got, want := errnoOf(s.run(fake)), errnoOf(s.run(real))
		if got != want {
			t.Errorf("%s: fake %v (%d), kernel %v (%d)", s.name, got, got, want, want)
		}
		last = s.name
	}
	compare("the last step")

	// The ruleset, as nft lists it from the kernel and as the fake does.
	want := testenv.Nft(t, host, "list", "ruleset")
	got := regexp.MustCompile(`(?s)^.*?(table )`).ReplaceAllString(k.DumpNS("/run/netns/host"), "$1")
	got = regexp.MustCompile(`(?m)^  `).ReplaceAllString(got, "")
	if got != want {
		t.Errorf("ruleset:\nfake:\n%s\nnft:\n%s", got, want)
	}
}

func ifname(s string) []byte { return append([]byte(s), make([]byte, 16-len(s))...) }

// describe lists what the driver reads of a namespace: links (without
// MACs, which differ), addresses, main-table unicast routes.
func describe(t *testing.T, c *netlink.Conn) string {
	t.Helper()
	var b strings.Builder
	ls, err := link.List(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		fmt.Fprintf(&b, "link %d %s %s mtu=%d up=%v master=%d group=%#x alias=%q peer=%d\n", l.Index, l.Name, l.Kind, l.MTU, l.Up, l.Master, l.Group, l.Alias, l.Peer)
	}
	as, err := addr.List(c, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		if !a.Prefix.Addr().IsLinkLocalUnicast() && !a.Prefix.Addr().IsLoopback() {
			fmt.Fprintf(&b, "addr %d %s\n", a.Index, a.Prefix)
		}
	}
	rs, err := route.List(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if !r.Dst.Addr().IsLinkLocalUnicast() && r.Dst.Addr().Is4() {
			fmt.Fprintf(&b, "route %s via %s dev %d metric %d\n", r.Dst, r.Gw, r.Oif, r.Metric)
		}
	}
	return b.String()
}

// kernelStep is one request (or a few); one with no run compares what
// the driver reads of both sides.
type kernelStep struct {
	name string
	run  func(e kernelEnv) error
}

// kernelSteps run in order, each on the state the ones before left.
func kernelSteps() []kernelStep {
	var br, veth uint32 // the same on both: indexes are per namespace
	exec := func(c *netlink.Conn, msgs ...netlink.Message) error { _, err := nl.Exec(c, msgs...); return err }
	group := func(g uint32) netlink.Message {
		m := link.DeleteMsg(0)
		m.Data = append(m.Data, nltest.MustMarshalAttributes([]netlink.Attribute{{Type: unix.IFLA_GROUP, Data: nlenc.Uint32Bytes(g)}})...)
		return m
	}
	p := netip.MustParsePrefix("10.0.0.1/24")
	tbl := &nftables.Table{Name: "t", Family: nftables.TableFamilyINet}
	m := &nftables.Set{Table: tbl, Name: "m", IsMap: true, KeyType: nftables.TypeInetService, DataType: nftables.TypeIPAddr}
	flush := func(e kernelEnv, fn func(c *nftables.Conn)) error { fn(e.nft); return e.nft.Flush() }
	return []kernelStep{
		{"create bridge", func(e kernelEnv) error {
			l, err := link.CreateBridge(e.host, link.BridgeSpec{Name: "br0", Alias: "x"})
			br = l.Index
			return err
		}},
		{"duplicate name", func(e kernelEnv) error { _, err := link.CreateBridge(e.host, link.BridgeSpec{Name: "br0"}); return err }},
		{"name too long", func(e kernelEnv) error {
			_, err := link.CreateBridge(e.host, link.BridgeSpec{Name: strings.Repeat("b", 16)})
			return err
		}},
		{"address on a missing link", func(e kernelEnv) error { return exec(e.host, addr.AddMsg(99, p)) }},
		{"address", func(e kernelEnv) error { return exec(e.host, addr.AddMsg(br, p)) }},
		{"address again", func(e kernelEnv) error { return exec(e.host, addr.AddMsg(br, p)) }},
		{"delete a missing address", func(e kernelEnv) error {
			return exec(e.host, addr.DeleteMsg(br, netip.MustParsePrefix("10.0.0.9/24")))
		}},
		{"veth into the sandbox", func(e kernelEnv) error {
			l, err := link.CreateVeth(e.host, link.VethSpec{Name: "veth0", Master: br, PeerName: "eth0", PeerNetNS: e.boxFD,
				PeerMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Group: 7})
			veth = l.Peer
			return err
		}},
		{"compare", nil},
		{"peer name taken", func(e kernelEnv) error {
			_, err := link.CreateVeth(e.host, link.VethSpec{Name: "veth1", PeerName: "eth0", PeerNetNS: e.boxFD})
			return err
		}},
		{"missing master", func(e kernelEnv) error {
			_, err := link.CreateVeth(e.host, link.VethSpec{Name: "veth2", Master: 99, PeerName: "eth2", PeerNetNS: e.boxFD})
			return err
		}},
		{"master not a bridge", func(e kernelEnv) error {
			_, err := link.CreateVeth(e.host, link.VethSpec{Name: "veth3", Master: 1, PeerName: "eth3", PeerNetNS: e.boxFD})
			return err
		}},
		{"rename an up device", func(e kernelEnv) error { return exec(e.host, linkmsg.Retire(br, "br9")[1]) }},
		{"alias of 256 bytes", func(e kernelEnv) error { return exec(e.host, link.SetAliasMsg(br, strings.Repeat("a", 256))) }},
		{"alias of 255 bytes", func(e kernelEnv) error { return exec(e.host, link.SetAliasMsg(br, strings.Repeat("a", 255))) }},
		{"route via an off-link gateway", func(e kernelEnv) error {
			return exec(e.host, route.AddDefaultMsg(br, netip.MustParseAddr("192.0.2.1"), 0))
		}},
		{"route via a missing device", func(e kernelEnv) error {
			return exec(e.host, route.AddDefaultMsg(99, netip.MustParseAddr("10.0.0.254"), 0))
		}},
		{"route via a down device", func(e kernelEnv) error {
			return exec(e.box, route.AddDefaultMsg(veth, netip.MustParseAddr("10.0.0.254"), 0))
		}},
		{"sandbox end up, address, route", func(e kernelEnv) error {
			return exec(e.box, link.UpMsg(veth), addr.AddMsg(veth, netip.MustParsePrefix("10.0.0.2/24")),
				route.AddDefaultMsg(veth, netip.MustParseAddr("10.0.0.1"), 100))
		}},
		{"compare", nil},
		{"the same default route", func(e kernelEnv) error {
			return exec(e.box, route.AddDefaultMsg(veth, netip.MustParseAddr("10.0.0.1"), 100))
		}},
		{"host end set up by name (the driver's second message)", func(e kernelEnv) error {
			return exec(e.host, linkmsg.HostEnd("veth0", true, true, "nlbridge/1 ep id=x"))
		}},
		{"host end by a missing name", func(e kernelEnv) error { return exec(e.host, linkmsg.HostEnd("vethX", true, false, "")) }},
		{"addrgenmode none", func(e kernelEnv) error { return exec(e.box, link.AddrGenModeNoneMsg(veth)) }},
		{"group, alias and up", func(e kernelEnv) error { return exec(e.host, link.SetMsg(br, true, 9, "nlbridge/1 net")) }},
		{"route to ff02::1 through the sandbox end", func(e kernelEnv) error {
			// The kernel adds the sandbox end's multicast route when the
			// carrier comes up, which linkwatch reports asynchronously
			// (up to a second later): poll for it.
			deadline := time.Now().Add(3 * time.Second)
			for {
				_, err := route.Get(e.box, netip.IPv6LinkLocalAllNodes(), veth)
				if err == nil || time.Now().After(deadline) {
					return err
				}
				time.Sleep(10 * time.Millisecond)
			}
		}},
		{"compare", nil},
		{"retire the host end", func(e kernelEnv) error {
			l, err := link.Get(e.host, "veth0")
			if err != nil {
				return err
			}
			return exec(e.host, linkmsg.RetireHostEnd(l.Index, 0x6e6c0000))
		}},
		{"retire the sandbox end", func(e kernelEnv) error {
			return exec(e.box, append(linkmsg.Retire(veth, "nlbd1"), addr.DeleteMsg(veth, netip.MustParsePrefix("10.0.0.2/24")))...)
		}},
		{"compare", nil},
		{"delete group 0", func(e kernelEnv) error { return exec(e.host, group(0)) }},
		{"delete an empty group", func(e kernelEnv) error { return exec(e.host, group(8)) }},
		{"delete lo", func(e kernelEnv) error { return exec(e.host, link.DeleteMsg(1)) }},
		{"delete a missing link", func(e kernelEnv) error { return exec(e.host, link.DeleteMsg(99)) }},
		{"delete the retired group", func(e kernelEnv) error { return exec(e.host, group(0x6e6c0000)) }},
		{"the peer went with it", func(e kernelEnv) error { _, err := link.GetIndex(e.box, veth); return err }},

		{"nft table and map", func(e kernelEnv) error {
			return flush(e, func(c *nftables.Conn) { c.AddTable(tbl); c.AddSet(m, nil) })
		}},
		{"nft element", func(e kernelEnv) error {
			return flush(e, func(c *nftables.Conn) {
				c.SetAddElements(m, []nftables.SetElement{{Key: []byte{0, 80}, Val: []byte{10, 0, 0, 2}}})
			})
		}},
		{"nft same element again", func(e kernelEnv) error {
			return flush(e, func(c *nftables.Conn) {
				c.SetAddElements(m, []nftables.SetElement{{Key: []byte{0, 80}, Val: []byte{10, 0, 0, 2}}})
			})
		}},
		{"nft key with other data", func(e kernelEnv) error {
			return flush(e, func(c *nftables.Conn) {
				c.SetAddElements(m, []nftables.SetElement{{Key: []byte{0, 80}, Val: []byte{10, 0, 0, 3}}})
			})
		}},
		{"nft element of a missing set", func(e kernelEnv) error {
			s := &nftables.Set{Table: tbl, Name: "none", KeyType: nftables.TypeInetService}
			return flush(e, func(c *nftables.Conn) { c.SetAddElements(s, []nftables.SetElement{{Key: []byte{0, 1}}}) })
		}},
		{"nft key of the wrong length", func(e kernelEnv) error {
			return flush(e, func(c *nftables.Conn) {
				c.SetAddElements(m, []nftables.SetElement{{Key: []byte{0, 80, 0}, Val: []byte{10, 0, 0, 2}}})
			})
		}},
		{"nft rule looking up a missing set", func(e kernelEnv) error {
			return flush(e, func(c *nftables.Conn) {
				ch := c.AddChain(&nftables.Chain{Name: "c", Table: tbl})
				c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{
					&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
					&expr.Lookup{SourceRegister: 1, SetName: "none"}}})
			})
		}},
		{"nft delete a missing element", func(e kernelEnv) error {
			return flush(e, func(c *nftables.Conn) {
				c.SetDeleteElements(m, []nftables.SetElement{{Key: []byte{0, 81}, Val: []byte{10, 0, 0, 2}}})
			})
		}},
		{"nft delete a missing table", func(e kernelEnv) error {
			return flush(e, func(c *nftables.Conn) { c.DelTable(&nftables.Table{Name: "none", Family: nftables.TableFamilyINet}) })
		}},
		{"nft more elements", func(e kernelEnv) error {
			ifs := &nftables.Set{Table: tbl, Name: "ifs", KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian}
			cat, _ := nftables.ConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)
			pairs := &nftables.Set{Table: tbl, Name: "pairs", KeyType: cat, Concatenation: true}
			return flush(e, func(c *nftables.Conn) {
				c.AddSet(ifs, []nftables.SetElement{{Key: ifname("br0")}, {Key: ifname("veth1234567")}})
				c.AddSet(pairs, []nftables.SetElement{{Key: append(ifname("br0"), 10, 0, 0, 1)}, {Key: append(ifname("br1"), 10, 0, 0, 2)},
					{Key: append(ifname("br2"), 10, 0, 0, 3)}})
				c.AddSet(&nftables.Set{Table: tbl, Name: "addrs", KeyType: nftables.TypeIPAddr}, []nftables.SetElement{
					{Key: []byte{10, 0, 0, 1}}, {Key: []byte{10, 0, 0, 2}}, {Key: []byte{10, 0, 0, 3}}, {Key: []byte{10, 0, 0, 4}}, {Key: []byte{10, 0, 0, 5}}})
				c.AddSet(&nftables.Set{Table: tbl, Name: "svcs", KeyType: nftables.TypeInetService}, []nftables.SetElement{
					{Key: []byte{0, 1}}, {Key: []byte{0, 2}}, {Key: []byte{0, 3}}})
				mm := &nftables.Set{Table: tbl, Name: "mm", IsMap: true, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeIPAddr}
				c.AddSet(mm, []nftables.SetElement{{Key: ifname("a"), Val: []byte{1, 1, 1, 1}}, {Key: ifname("b"), Val: []byte{2, 2, 2, 2}}, {Key: ifname("c"), Val: []byte{3, 3, 3, 3}}})
				c.SetAddElements(m, []nftables.SetElement{{Key: []byte{0x1f, 0x90}, Val: []byte{10, 0, 0, 3}}})
			})
		}},
		{"nft the failed batches changed nothing", func(e kernelEnv) error {
			els, err := e.nft.GetSetElements(m)
			if err == nil && (len(els) != 2 || els[0].Val[3] != 2 && els[1].Val[3] != 2) {
				return syscall.EBADMSG // a stand-in errno: the element differs
			}
			return err
		}},
	}
}

// errnoOf is the errno in err, 0 for none; -1 for an error without one.
func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return ^syscall.Errno(0)
}
