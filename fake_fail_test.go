package bridge_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/bridgetest"
	"golang.org/x/sys/unix"
)

const (
	nftNewSetElem = unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSETELEM
	nftDelSetElem = unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_DELSETELEM
	ctDelete      = unix.NFNL_SUBSYS_CTNETLINK<<8 | 2
)

// mentions matches a request whose bytes contain s (a set or device name).
func mentions(s string) func(netlink.Message) bool {
	return func(m netlink.Message) bool { return bytes.Contains(m.Data, []byte(s)) }
}

func creates(m netlink.Message) bool { return m.Header.Flags&netlink.Create != 0 }

// An attach the kernel refuses at any step fails with the kernel's errno
// and leaves nothing: no device, address, route, element, bound port or
// claim (the same attach succeeds next).
func TestFakeAttachRollback(t *testing.T) {
	box := "/run/netns/c1"
	for _, tc := range []struct {
		name   string
		faults []bridgetest.Fault
		errno  syscall.Errno
	}{
		{"veth", []bridgetest.Fault{{Type: unix.RTM_NEWLINK, Match: creates, Errno: unix.ENOMEM}}, unix.ENOMEM},
		{"veth-name-taken", repeat(4, bridgetest.Fault{Type: unix.RTM_NEWLINK, Match: creates, Errno: unix.EEXIST}), unix.EEXIST},
		{"host-end", []bridgetest.Fault{{Type: unix.RTM_NEWLINK, Match: func(m netlink.Message) bool {
			return !creates(m) && strings.Contains(string(m.Data), "owner=")
		}, Errno: unix.EINVAL}}, unix.EINVAL},
		{"guard", []bridgetest.Fault{{Type: nftNewSetElem, Match: mentions("guarded"), Errno: unix.ENOMEM}}, unix.ENOMEM},
		{"address", []bridgetest.Fault{{Type: unix.RTM_NEWADDR, NetNS: box, Errno: unix.EADDRNOTAVAIL}}, unix.EADDRNOTAVAIL},
		{"route", []bridgetest.Fault{{Type: unix.RTM_NEWROUTE, NetNS: box, Errno: unix.ENETUNREACH}}, unix.ENETUNREACH},
		{"sysctl", []bridgetest.Fault{{Sysctl: "net.ipv4.conf.eth0.arp_notify", Errno: unix.EACCES}}, unix.EACCES},
		{"port-element", []bridgetest.Fault{{Type: nftNewSetElem, Match: mentions("portsany4"), Errno: unix.ENOSPC}}, unix.ENOSPC},
		{"commit", []bridgetest.Fault{faultAlias("nlbridge/1 ep")}, unix.EPERM},
		{"sandbox-lo", []bridgetest.Fault{{Type: unix.RTM_NEWLINK, NetNS: box, Errno: unix.EPERM}}, unix.EPERM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, bridge.Options{})
			n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net, IPv6: v6net})
			f.sandbox("c1")
			before := f.settled()
			for _, fl := range tc.faults {
				f.k.FailNext(fl)
			}
			cfg := bridge.EndpointConfig{ID: "a", NetNS: box, Advertise: &bridge.Advertise{},
				Sysctls: []string{"net.ipv4.conf.IFNAME.arp_notify=1"},
				Ports:   []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}}
			_, err := n.Attach(f.ctx, cfg)
			isErr(t, err, tc.errno)
			same(t, "after the refused attach", strip(f.settled(), "lo: <loopback>"), strip(before, "lo: <loopback>"))
			if eps := n.Endpoints(); len(eps) != 0 {
				t.Errorf("endpoints %v after a failed attach", eps)
			}
			e := f.attach(n, cfg)
			if e.IPv4().String() != "172.18.0.2/16" || e.ID() != "a" {
				t.Errorf("the next attach got %s %s: the failed one kept its claims", e.ID(), e.IPv4())
			}
		})
	}
}

func repeat(n int, f bridgetest.Fault) []bridgetest.Fault {
	out := make([]bridgetest.Fault, n)
	for i := range out {
		out[i] = f
	}
	return out
}

// A veth name taken once (a race with another process) is retried with
// another name.
func TestFakeAttachRetriesTakenName(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	f.k.FailNext(bridgetest.Fault{Type: unix.RTM_NEWLINK, Match: creates, Errno: unix.EEXIST})
	e := f.attach(n, bridge.EndpointConfig{NetNS: f.sandbox("c1")})
	has(t, f.k.DumpNS(""), e.HostIfName()+": <veth> UP")
}

// A sandbox without IPv6 (disable_ipv6 set there): the endpoint goes on
// IPv4-only, its IPv6 address released and out of the guard.
func TestFakeAttachWithoutIPv6(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net, IPv6: v6net})
	box := f.sandbox("c1")
	e := f.attach(n, bridge.EndpointConfig{NetNS: box, Sysctls: []string{"net.ipv6.conf.IFNAME.disable_ipv6=1"}})
	if e.IPv6().IsValid() {
		t.Errorf("IPv6 %s on an interface with IPv6 disabled", e.IPv6())
	}
	lacks(t, f.k.DumpNS(""), `. fd18::2`)
	lacks(t, f.k.DumpNS(box), "inet6")
	e2 := f.attach(n, bridge.EndpointConfig{NetNS: f.sandbox("c2")})
	if e2.IPv6().String() != "fd18::2/64" {
		t.Errorf("next endpoint got %s, want the released fd18::2", e2.IPv6())
	}
}

// A bridge at the kernel's port limit is ErrConflict.
func TestFakeAttachBridgeFull(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	f.k.FailNext(bridgetest.Fault{Type: unix.RTM_NEWLINK, Match: creates, Errno: unix.EXFULL})
	_, err := n.Attach(f.ctx, bridge.EndpointConfig{NetNS: f.sandbox("c1"), Advertise: &bridge.Advertise{}})
	isErr(t, err, bridge.ErrConflict, unix.EXFULL)
}

// An address reused after a detach has its stale conntrack entries
// flushed; a refused flush fails the attach without residue.
func TestFakeAttachReusedAddress(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	box := f.sandbox("c1")
	e := f.attach(n, bridge.EndpointConfig{NetNS: box})
	if err := e.Detach(f.ctx); err != nil {
		t.Fatal(err)
	}
	before := f.settled()
	flushes := len(f.k.Flushes(""))
	f.k.FailNext(bridgetest.Fault{Type: ctDelete, Errno: unix.EINVAL})
	_, err := n.Attach(f.ctx, bridge.EndpointConfig{NetNS: box, Advertise: &bridge.Advertise{}})
	isErr(t, err, unix.EINVAL)
	same(t, "after the refused flush", f.settled(), before)
	f.attach(n, bridge.EndpointConfig{NetNS: box})
	if got := f.k.Flushes("")[flushes:]; len(got) != 1 || got[0] != "flush reply src 172.18.0.2" {
		t.Errorf("flushes at reuse: %q, want the inbound one of 172.18.0.2", got)
	}
}

// A network the kernel refuses at any step leaves nothing behind.
func TestFakeCreateNetworkRollback(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault bridgetest.Fault
	}{
		{"bridge", bridgetest.Fault{Type: unix.RTM_NEWLINK, Match: creates, Errno: unix.ENOMEM}},
		{"record", bridgetest.Fault{Type: unix.RTM_NEWLINK, Match: aliasIs("nlbridge/1 net"), Errno: unix.EINVAL}},
		{"address", bridgetest.Fault{Type: unix.RTM_NEWADDR, Errno: unix.EINVAL}},
		{"sysctl", bridgetest.Fault{Sysctl: "net.ipv4.ip_forward", Errno: unix.EROFS}},
		{"firewall", bridgetest.Fault{Type: nftNewSetElem, Match: mentions("br0"), Errno: unix.ENOMEM}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, bridge.Options{})
			before := f.settled()
			f.k.FailNext(tc.fault)
			_, err := f.d.CreateNetwork(f.ctx, bridge.NetworkConfig{Name: "br0", IPv4: v4net, IPv6: v6net})
			isErr(t, err, tc.fault.Errno)
			same(t, "after the refused create", strip(f.settled(), "sysctl"), strip(before, "sysctl"))
			if nets := f.d.Networks(); len(nets) != 0 {
				t.Errorf("networks %v", nets)
			}
			f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net, IPv6: v6net})
		})
	}
}

// A detach whose retirement the kernel refuses deletes the pair at once;
// one whose firewall batch fails is an error and can be retried.
func TestFakeDetachFailures(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	box := f.sandbox("c1")
	before := f.settled()
	ports := []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}

	e := f.attach(n, bridge.EndpointConfig{NetNS: box, Ports: ports})
	f.k.FailNext(bridgetest.Fault{Type: unix.RTM_NEWLINK, NetNS: bridgetest.HostNS, Errno: unix.EBUSY})
	if err := e.Detach(f.ctx); err != nil {
		t.Fatal(err)
	}
	same(t, "after a detach with a refused retirement", noResidue(f.k.Dump()), noResidue(before))

	e = f.attach(n, bridge.EndpointConfig{NetNS: box, Ports: ports})
	f.k.FailNext(bridgetest.Fault{Type: nftDelSetElem, Errno: unix.ENOMEM})
	f.k.FailNext(bridgetest.Fault{Type: nftDelSetElem, Errno: unix.ENOMEM}) // and its retry element by element
	isErr(t, e.Detach(f.ctx), unix.ENOMEM)
	has(t, f.k.DumpNS(""), "tcp . 8080")
	if err := e.Detach(f.ctx); err != nil {
		t.Fatalf("retry: %v", err)
	}
	same(t, "after the retried detach", noResidue(f.settled()), noResidue(before))

	e = f.attach(n, bridge.EndpointConfig{NetNS: box})
	f.k.FailNext(bridgetest.Fault{Type: ctDelete, Errno: unix.ENOMEM})
	isErr(t, e.Detach(f.ctx), unix.ENOMEM)
	if err := e.Detach(f.ctx); err != nil {
		t.Fatalf("retry: %v", err)
	}
	same(t, "after the retried detach", noResidue(f.settled()), noResidue(before))
}

// A delete the kernel refuses is an error; the network is still there
// to delete again.
func TestFakeDeleteFailure(t *testing.T) {
	f := newFake(t, bridge.Options{})
	box := f.sandbox("c1")
	before := f.settled()
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	f.attach(n, bridge.EndpointConfig{NetNS: box})
	f.k.FailNext(bridgetest.Fault{Type: unix.RTM_DELLINK, Errno: unix.EBUSY})
	isErr(t, n.Delete(f.ctx), unix.EBUSY)
	nets := f.d.Networks()
	if len(nets) != 1 {
		t.Fatalf("networks after a failed delete: %v", nets)
	}
	if err := nets[0].Delete(f.ctx); err != nil {
		t.Fatal(err)
	}
	same(t, "after the second delete", noResidue(f.settled()), noResidue(before))
}

// A context already done stops an operation before the kernel.
func TestFakeCancelled(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	before := f.k.Dump()
	ctx, cancel := contextCancelled()
	defer cancel()
	_, err := f.d.CreateNetwork(ctx, bridge.NetworkConfig{Name: "br1", IPv4: netip.MustParsePrefix("10.1.0.1/24")})
	isErr(t, err, ctx.Err())
	isErr(t, n.Delete(ctx), ctx.Err())
	isErr(t, f.d.GC(ctx, nil), ctx.Err())
	isErr(t, f.d.Reclaim(ctx), ctx.Err())
	_, err = bridge.Open(ctx, bridge.Options{Kernel: f.k})
	isErr(t, err, ctx.Err())
	same(t, "after cancelled calls", f.k.Dump(), before)
}

// A context cancelled during an attach (here while the sandbox gets its
// addresses) stops it before its commit, and it is rolled back.
func TestFakeAttachCancelledMidway(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	box := f.sandbox("c1")
	before := f.settled()
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	f.k.FailNext(bridgetest.Fault{Type: unix.RTM_NEWADDR, NetNS: box, Match: func(netlink.Message) bool {
		cancel() // a hook, not a fault: it never fires
		return false
	}})
	_, err := n.Attach(ctx, bridge.EndpointConfig{NetNS: box, Advertise: &bridge.Advertise{},
		Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}})
	isErr(t, err, context.Canceled)
	same(t, "after the cancelled attach", strip(f.settled(), "lo: <loopback>"), strip(before, "lo: <loopback>"))
	isErr(t, f.d.Detach(ctx, f.attach(n, bridge.EndpointConfig{NetNS: box})), context.Canceled)
}

// A background delete of retired devices that the kernel refuses is
// logged; the next one deletes them.
func TestFakeReclaimFailureLogged(t *testing.T) {
	var log syncBuffer
	f := newFake(t, bridge.Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	box := f.sandbox("c1")
	e := f.attach(n, bridge.EndpointConfig{NetNS: box})
	f.k.FailNext(bridgetest.Fault{Type: unix.RTM_DELLINK, Errno: unix.EBUSY})
	if err := e.Detach(f.ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the failure in the log", func() bool { return strings.Contains(log.String(), "device or resource busy") })
	f.attach(n, bridge.EndpointConfig{NetNS: f.sandbox("c2")}).Detach(f.ctx) // another retirement: the next delete
	eventually(t, "both pairs deleted", func() bool { return len(f.links(box)) == 1 && len(f.links("/run/netns/c2")) == 1 })
}

// A rollback step that the kernel refuses is logged, not dropped.
func TestFakeRollbackFailureLogged(t *testing.T) {
	var log syncBuffer
	f := newFake(t, bridge.Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	box := f.sandbox("c1")
	f.k.FailNext(bridgetest.Fault{Type: unix.RTM_NEWADDR, NetNS: box, Errno: unix.EPERM})
	f.k.FailNext(bridgetest.Fault{Type: unix.RTM_DELLINK, Errno: unix.EBUSY})
	_, err := n.Attach(f.ctx, bridge.EndpointConfig{NetNS: box, Advertise: &bridge.Advertise{}})
	isErr(t, err, unix.EPERM)
	if got := log.String(); !strings.Contains(got, "undoing a failed operation") || !strings.Contains(got, "device or resource busy") {
		t.Errorf("log = %q, want the refused rollback", got)
	}
}

// The sandbox dies in the middle of an attach (while its interface gets
// its addresses): the attach fails and leaves nothing in the host.
func TestFakeSandboxGoneDuringAttach(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net, IPv6: v6net})
	box := f.sandbox("c1")
	before := f.settled()
	f.k.FailNext(bridgetest.Fault{Type: unix.RTM_NEWADDR, NetNS: box, Hook: func() { f.k.RemoveNS(box) }})
	_, err := n.Attach(f.ctx, bridge.EndpointConfig{NetNS: box, Advertise: &bridge.Advertise{},
		Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}})
	isErr(t, err, unix.ENODEV)
	same(t, "after the sandbox died", strip(f.settled(), "lo: <loopback>"),
		strip(strings.Replace(before, "netns "+box, "netns "+box+" (removed)", 1), "lo: <loopback>"))
	if eps := n.Endpoints(); len(eps) != 0 {
		t.Errorf("endpoints %v", eps)
	}
}

// The sandbox dies in the middle of a detach: the detach succeeds, and
// nothing is left.
func TestFakeSandboxGoneDuringDetach(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	box := f.sandbox("c1")
	before := noResidue(f.k.DumpNS(""))
	e := f.attach(n, bridge.EndpointConfig{NetNS: box, Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}})
	f.k.FailNext(bridgetest.Fault{Type: unix.RTM_NEWLINK, NetNS: box, Hook: func() { f.k.RemoveNS(box) }})
	if err := e.Detach(f.ctx); err != nil {
		t.Fatal(err)
	}
	f.settled()
	same(t, "host after the detach", noResidue(f.k.DumpNS("")), before)
}
