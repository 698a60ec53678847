package bridgetest_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"github.com/mdlayher/netlink/nltest"
	"github.com/nlbridge/bridge/addr"
	"github.com/nlbridge/bridge/bridgetest"
	"github.com/nlbridge/bridge/internal/kern"
	"github.com/nlbridge/bridge/internal/linkmsg"
	"github.com/nlbridge/bridge/internal/nl"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/nsutil"
	"github.com/nlbridge/bridge/route"
	"golang.org/x/sys/unix"
)

// The fake refuses what the kernel refuses, checked here through the
// library's own message builders.

func dial(t *testing.T, k *bridgetest.Kernel, path string) *netlink.Conn {
	t.Helper()
	c, err := k.Dial(path, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func open(t *testing.T, k *bridgetest.Kernel, path string) kern.NS {
	t.Helper()
	ns, err := k.System().OpenNS(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

func wantErrno(t *testing.T, what string, err error, errno unix.Errno) {
	t.Helper()
	if !errors.Is(err, errno) {
		t.Errorf("%s: %v, want %v", what, err, errno)
	}
}

func TestLinks(t *testing.T) {
	k := bridgetest.New()
	if err := k.AddNS("/run/netns/c1"); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "AddNS twice", k.AddNS("/run/netns/c1"), unix.EEXIST)
	c, sc := dial(t, k, ""), dial(t, k, "/run/netns/c1")
	br, err := link.CreateBridge(c, link.BridgeSpec{Name: "br0", MTU: 1400, Alias: "mine"})
	if err != nil {
		t.Fatal(err)
	}
	if br.Index != 2 || br.Kind != "bridge" || br.MTU != 1400 || !br.Up || br.Alias != "" {
		t.Errorf("echo %+v: want index 2, bridge, mtu 1400, up, and no alias (the create ignores it)", br)
	}
	if got, _ := link.Get(c, "br0"); got.Alias != "mine" {
		t.Errorf("alias %q after the create's second message", got.Alias)
	}
	_, err = link.CreateBridge(c, link.BridgeSpec{Name: "br0"})
	wantErrno(t, "duplicate name", err, unix.EEXIST)
	_, err = link.CreateBridge(c, link.BridgeSpec{Name: "much-too-long-name"})
	wantErrno(t, "long name", err, unix.ERANGE)

	sb := open(t, k, "/run/netns/c1")
	spec := link.VethSpec{Name: "veth1", Master: br.Index, Group: 7, PeerName: "eth0", PeerNetNS: sb.FD(),
		PeerMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}}
	v, err := link.CreateVeth(c, spec)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := link.GetIndex(sc, v.Peer)
	if err != nil || peer.Name != "eth0" || peer.MAC.String() != "02:00:00:00:00:01" || peer.Up {
		t.Errorf("peer %+v, %v: want eth0, the MAC, down", peer, err)
	}
	spec.Name = "veth2"
	_, err = link.CreateVeth(c, spec)
	wantErrno(t, "peer name taken in its namespace", err, unix.EEXIST)
	spec.Name, spec.PeerName, spec.PeerNetNS = "veth3", "eth9", 12345
	_, err = link.CreateVeth(c, spec)
	wantErrno(t, "bad namespace fd", err, unix.EBADF)
	spec.PeerNetNS, spec.Master = sb.FD(), 99
	_, err = link.CreateVeth(c, spec)
	wantErrno(t, "missing master", err, unix.EINVAL)

	ports, err := link.ListFiltered(c, link.Filter{Master: br.Index})
	if err != nil || len(ports) != 1 || ports[0].Name != "veth1" || ports[0].PortState != 0 {
		t.Errorf("ports of br0: %+v, %v (want veth1, not forwarding: it is down)", ports, err)
	}
	bridges, err := link.ListFiltered(c, link.Filter{Kind: "bridge"})
	if err != nil || len(bridges) != 1 || bridges[0].Name != "br0" {
		t.Errorf("bridges: %+v, %v", bridges, err)
	}

	// Renaming to a taken name.
	if _, err := nl.Exec(sc, link.UpMsg(v.Peer)); err != nil {
		t.Fatal(err)
	}
	_, err = nl.Exec(sc, linkmsg.Retire(v.Peer, "lo")[1])
	wantErrno(t, "renaming to a taken name", err, unix.EEXIST)
	if _, err := nl.Exec(sc, linkmsg.Retire(v.Peer, "nlbd0")...); err != nil {
		t.Errorf("down, then rename: %v", err)
	}
	_, err = nl.Exec(c, link.SetAliasMsg(br.Index, strings.Repeat("x", 256)))
	wantErrno(t, "a 256-byte alias", err, unix.ERANGE)

	// Groups: 0 refused, an empty one ENODEV, a veth end takes its peer.
	for group, errno := range map[uint32]unix.Errno{0: unix.EPERM, 8: unix.ENODEV} {
		m := link.DeleteMsg(0)
		m.Data = append(m.Data, nltest.MustMarshalAttributes([]netlink.Attribute{{Type: unix.IFLA_GROUP, Data: nlenc.Uint32Bytes(group)}})...)
		_, err := nl.Exec(c, m)
		wantErrno(t, fmt.Sprint("delete group ", group), err, errno)
	}
	if err := link.DeleteGroup(c, 7); err != nil {
		t.Fatal(err)
	}
	if l, _ := link.List(sc); len(l) != 1 {
		t.Errorf("sandbox links after deleting the host end's group: %+v", l)
	}
	wantErrno(t, "delete lo", link.Delete(c, 1), unix.EOPNOTSUPP)
}

func TestAddressesAndRoutes(t *testing.T) {
	k := bridgetest.New()
	c := dial(t, k, "")
	br, err := link.CreateBridge(c, link.BridgeSpec{Name: "br0"})
	if err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix("10.0.0.1/24")
	_, err = nl.Exec(c, addr.AddMsg(99, p))
	wantErrno(t, "address on a missing link", err, unix.ENODEV)
	if _, err := nl.Exec(c, addr.AddMsg(br.Index, p)); err != nil {
		t.Fatal(err)
	}
	_, err = nl.Exec(c, addr.AddMsg(br.Index, p))
	wantErrno(t, "the same address again", err, unix.EEXIST)
	_, err = nl.Exec(c, addr.DeleteMsg(br.Index, netip.MustParsePrefix("10.0.0.9/24")))
	wantErrno(t, "delete a missing address", err, unix.EADDRNOTAVAIL)
	as, err := addr.List(c, br.Index)
	if err != nil || len(as) != 1 || as[0].Prefix != p {
		t.Errorf("addresses %+v, %v", as, err)
	}

	_, err = nl.Exec(c, route.AddDefaultMsg(br.Index, netip.MustParseAddr("192.0.2.1"), 0))
	wantErrno(t, "gateway off-link", err, unix.ENETUNREACH)
	_, err = nl.Exec(c, route.AddDefaultMsg(42, netip.MustParseAddr("10.0.0.254"), 0))
	wantErrno(t, "missing device", err, unix.ENETUNREACH)
	if _, err := nl.Exec(c, route.AddDefaultMsg(br.Index, netip.MustParseAddr("10.0.0.254"), 5)); err != nil {
		t.Fatal(err)
	}
	_, err = nl.Exec(c, route.AddDefaultMsg(br.Index, netip.MustParseAddr("10.0.0.253"), 5))
	wantErrno(t, "a second default route with the metric", err, unix.EEXIST)
	rs, err := route.List(c)
	if err != nil || len(rs) != 2 {
		t.Fatalf("routes %+v, %v: want the connected and the default route", rs, err)
	}
	if r, err := route.Get(c, netip.MustParseAddr("10.0.0.7"), 0); err != nil || r.Oif != br.Index {
		t.Errorf("route to 10.0.0.7: %+v, %v", r, err)
	}

	// Down: routes go, IPv4 addresses stay, IPv6 ones go.
	if _, err := nl.Exec(c, addr.AddMsg(br.Index, netip.MustParsePrefix("fd00::1/64"))); err != nil {
		t.Fatal(err)
	}
	if _, err := nl.Exec(c, linkmsg.Retire(br.Index, "br0")[0]); err != nil {
		t.Fatal(err)
	}
	rs, _ = route.List(c)
	as, _ = addr.List(c, br.Index)
	if len(rs) != 0 || len(as) != 1 || as[0].Prefix != p {
		t.Errorf("after down: routes %+v, addresses %+v", rs, as)
	}
	_, err = nl.Exec(c, route.AddDefaultMsg(br.Index, netip.MustParseAddr("10.0.0.254"), 5))
	wantErrno(t, "route through a down device", err, unix.ENETUNREACH)
}

// nf_tables batches are all or nothing; elements need their set, keys
// their length; a key with other data is EEXIST.
func TestNFTables(t *testing.T) {
	k := bridgetest.New()
	c, sock, err := open(t, k, "").NFTables()
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	defer c.CloseLasting()
	tbl := &nftables.Table{Name: "t", Family: nftables.TableFamilyINet}
	m := &nftables.Set{Table: tbl, Name: "m", IsMap: true, KeyType: nftables.TypeInetService, DataType: nftables.TypeIPAddr}
	c.AddTable(tbl)
	if err := c.AddSet(m, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	el := []nftables.SetElement{{Key: []byte{0, 80}, Val: []byte{10, 0, 0, 2}}}
	c.SetAddElements(m, el)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	c.SetAddElements(m, el) // the same again: no change
	if err := c.Flush(); err != nil {
		t.Errorf("adding an element again: %v", err)
	}
	c.SetAddElements(m, []nftables.SetElement{{Key: []byte{0, 80}, Val: []byte{10, 0, 0, 3}}})
	wantErrno(t, "a key with other data", c.Flush(), unix.EEXIST)

	// A batch with an element in a missing set changes nothing.
	other := &nftables.Table{Name: "u", Family: nftables.TableFamilyINet}
	c.AddTable(other)
	c.SetAddElements(&nftables.Set{Table: tbl, Name: "missing", KeyType: nftables.TypeInetService}, []nftables.SetElement{{Key: []byte{0, 1}}})
	wantErrno(t, "an element in a missing set", c.Flush(), unix.ENOENT)
	if tables, err := c.ListTables(); err != nil || len(tables) != 1 {
		t.Errorf("tables after the refused batch: %v, %v (want only t)", tables, err)
	}
	c.SetAddElements(m, []nftables.SetElement{{Key: []byte{0, 80, 0}, Val: []byte{10, 0, 0, 2}}})
	wantErrno(t, "a key of the wrong length", c.Flush(), unix.EINVAL)
	c.SetDeleteElements(m, []nftables.SetElement{{Key: []byte{0, 81}, Val: []byte{10, 0, 0, 2}}})
	wantErrno(t, "deleting a missing element", c.Flush(), unix.ENOENT)

	els, err := c.GetSetElements(m)
	if err != nil || len(els) != 1 {
		t.Errorf("elements %v, %v", els, err)
	}
	if d := k.DumpNS(""); !strings.Contains(d, "map m {") || !strings.Contains(d, "elements = { 80 : 10.0.0.2 }") {
		t.Errorf("dump:\n%s", d)
	}
	if err := k.FlushRuleset(""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetSets(tbl); err == nil {
		t.Error("sets of a flushed table")
	}
}

// Faults fire once, on the first matching request.
func TestFaults(t *testing.T) {
	k := bridgetest.New()
	k.AddNS("/run/netns/c1")
	c, sc := dial(t, k, ""), dial(t, k, "/run/netns/c1")
	k.FailNext(bridgetest.Fault{Type: unix.RTM_NEWLINK, NetNS: "/run/netns/c1", Errno: unix.EEXIST})
	if _, err := link.CreateBridge(c, link.BridgeSpec{Name: "br0"}); err != nil {
		t.Errorf("a fault for another namespace fired: %v", err)
	}
	_, err := link.CreateBridge(sc, link.BridgeSpec{Name: "br0"})
	wantErrno(t, "the fault", err, unix.EEXIST)
	if _, err := link.CreateBridge(sc, link.BridgeSpec{Name: "br0"}); err != nil {
		t.Errorf("the fault fired twice: %v", err)
	}
	k.FailNext(bridgetest.Fault{Sysctl: "net.ipv4.ip_forward"})
	ns := open(t, k, "")
	err = ns.Do(func(th kern.Thread) error {
		return th.WriteSysctl(nsutil.Sysctl{Key: "net.ipv4.ip_forward", Value: "1"})
	})
	wantErrno(t, "sysctl fault", err, unix.EPERM)
	err = ns.Do(func(th kern.Thread) error {
		return th.WriteSysctl(nsutil.Sysctl{Key: "net.ipv4.conf.eth7.arp_notify", Value: "1"})
	})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sysctl of a missing device: %v, want ErrNotExist", err)
	}
}

// A removed namespace no longer opens, and its veth ends take their
// peers with them.
func TestRemoveNS(t *testing.T) {
	k := bridgetest.New()
	k.AddNS("/run/netns/c1")
	c := dial(t, k, "")
	sb := open(t, k, "/run/netns/c1")
	if _, err := link.CreateVeth(c, link.VethSpec{Name: "veth1", PeerName: "eth0", PeerNetNS: sb.FD()}); err != nil {
		t.Fatal(err)
	}
	if err := k.RemoveNS("/run/netns/c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.System().OpenNS("/run/netns/c1"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("open a removed namespace: %v", err)
	}
	if l, _ := link.List(c); len(l) != 1 {
		t.Errorf("host links %+v: the peer of a removed namespace's veth stayed", l)
	}
	if !strings.Contains(k.Dump(), "netns /run/netns/c1 (removed)") {
		t.Errorf("dump:\n%s", k.Dump())
	}
}

// Processes and locks: each Self is a live process until Kill; a lock
// excludes and keeps its bytes.
func TestProcessesAndLocks(t *testing.T) {
	k := bridgetest.New()
	pid := k.System().Self()
	if k.System().StartTime(pid) == 0 || k.System().StartTime(pid+1) != 0 {
		t.Error("a new process is not alive, or an unknown one is")
	}
	k.Kill()
	if k.System().StartTime(pid) != 0 {
		t.Error("a killed process is alive")
	}
	id := open(t, k, "").ID()
	l, err := k.System().Lock(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	l.WriteAt([]byte("12345678"), 0)
	// A wait for a held lock ends with its ctx, holding nothing.
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if l2, err := k.System().Lock(short, id); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lock while held: %v, %v", l2, err)
	}
	got := make(chan []byte)
	go func() {
		l2, _ := k.System().Lock(context.Background(), id)
		b := make([]byte, 8)
		l2.ReadAt(b, 0)
		l2.Close()
		got <- b
	}()
	select {
	case <-got:
		t.Fatal("a second holder while the first holds the lock")
	case <-time.After(20 * time.Millisecond):
	}
	l.Close()
	if b := <-got; string(b) != "12345678" {
		t.Errorf("lock bytes %q", b)
	}
}

// Port holds clash like bound sockets: the unspecified address with all
// of its family, v6-only.
func TestHoldPort(t *testing.T) {
	k := bridgetest.New()
	release, err := k.HoldPort("", unix.IPPROTO_TCP, netip.MustParseAddrPort("0.0.0.0:80"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = k.HoldPort("", unix.IPPROTO_TCP, netip.MustParseAddrPort("10.0.0.1:80"))
	if !errors.Is(err, kern.ErrPortTaken) {
		t.Errorf("a port taken by 0.0.0.0: %v", err)
	}
	for _, free := range []string{"[::]:80", "0.0.0.0:81"} {
		r, err := k.HoldPort("", unix.IPPROTO_TCP, netip.MustParseAddrPort(free))
		if err != nil {
			t.Errorf("%s: %v", free, err)
		} else {
			r()
		}
	}
	if r, err := k.HoldPort("", unix.IPPROTO_UDP, netip.MustParseAddrPort("0.0.0.0:80")); err != nil {
		t.Errorf("udp: %v", err)
	} else {
		r()
	}
	release()
	if r, err := k.HoldPort("", unix.IPPROTO_TCP, netip.MustParseAddrPort("10.0.0.1:80")); err != nil {
		t.Errorf("after release: %v", err)
	} else {
		r()
	}
}
