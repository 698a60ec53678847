package bridge_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/bridgetest"
	"golang.org/x/sys/unix"
)

// A restart (a second Open on the same kernel) recovers networks and
// endpoints from the records, holds their ports again, and leaves the
// firewall as it was.
func TestFakeRestart(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net, IPv6: v6net, DisableICC: true})
	box := f.sandbox("c1")
	e := f.attach(n, bridge.EndpointConfig{ID: "web", NetNS: box, Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}})
	if err := f.d.Close(); err != nil {
		t.Fatal(err)
	}
	before := f.k.Dump()
	lacks(t, before, "bound tcp") // the sockets went with the driver

	d := f.open(bridge.Options{})
	nets := d.Networks()
	if len(nets) != 1 || nets[0].Config() != n.Config() {
		t.Fatalf("recovered networks %v", nets)
	}
	r, ok := nets[0].Endpoint("web")
	if !ok {
		t.Fatal("endpoint web not recovered")
	}
	if r.IfName() != e.IfName() || r.IPv4() != e.IPv4() || r.IPv6() != e.IPv6() || r.MAC().String() != e.MAC().String() ||
		r.HostIfName() != e.HostIfName() || r.NetNS() != box || !slices.Equal(r.Ports(), e.Ports()) {
		t.Errorf("recovered %s %s %s %s %s %v, want %s %s %s %s %s %v", r.IfName(), r.IPv4(), r.IPv6(), r.MAC(), r.HostIfName(), r.Ports(),
			e.IfName(), e.IPv4(), e.IPv6(), e.MAC(), e.HostIfName(), e.Ports())
	}
	after := f.k.Dump()
	has(t, after, "bound tcp 0.0.0.0:8080", "bound tcp [::]:8080")
	same(t, "after the restart", strip(after, "bound tcp"), before)

	// The recovered claims hold: ID, address, host port.
	_, err := nets[0].Attach(f.ctx, bridge.EndpointConfig{ID: "web", NetNS: f.sandbox("c2"), Advertise: &bridge.Advertise{}})
	isErr(t, err, bridge.ErrExists)
	e2 := f.attach(nets[0], bridge.EndpointConfig{NetNS: "/run/netns/c2"})
	if e2.IPv4().String() != "172.18.0.3/16" {
		t.Errorf("new endpoint got %s, want the next free address", e2.IPv4())
	}
	_, err = nets[0].Attach(f.ctx, bridge.EndpointConfig{NetNS: f.sandbox("c3"), Advertise: &bridge.Advertise{},
		Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}})
	isErr(t, err, bridge.ErrConflict)

	// The recovered endpoint detaches completely.
	if err := d.Detach(f.ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := d.Reclaim(f.ctx); err != nil {
		t.Fatal(err)
	}
	host := f.k.DumpNS("")
	lacks(t, host, "tcp . 8080", "id=web", e.HostIfName())
	if l := f.links(box); !slices.Equal(l, []string{"lo"}) {
		t.Errorf("sandbox links after detach: %v", l)
	}
}

// A restart with NoPortHolds registers the recovered ports without
// sockets.
func TestFakeRestartNoPortHolds(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	f.attach(n, bridge.EndpointConfig{NetNS: f.sandbox("c1"), Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}})
	f.d.Close()
	d := f.open(bridge.Options{NoPortHolds: true})
	nets := d.Networks()
	if len(nets) != 1 || len(nets[0].Endpoints()) != 1 {
		t.Fatalf("not recovered: %v", nets)
	}
	lacks(t, f.k.Dump(), "bound tcp")
	_, err := nets[0].Attach(f.ctx, bridge.EndpointConfig{NetNS: f.sandbox("c2"), Advertise: &bridge.Advertise{},
		Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}})
	isErr(t, err, bridge.ErrConflict)
}

// Two drivers on one namespace are two processes: each sees the other's
// networks and endpoints through the records, claims never collide, and
// a network one deletes is gone for the other.
func TestFakeTwoProcesses(t *testing.T) {
	f := newFake(t, bridge.Options{})
	d2 := f.open(bridge.Options{})
	n1 := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	n2, ok := d2.Network("br0")
	if ok {
		t.Fatal("d2 knew the network before reading the records")
	}
	nets := d2.Networks()
	if len(nets) != 1 {
		t.Fatalf("d2 sees %d networks", len(nets))
	}
	n2 = nets[0]
	a := f.attach(n1, bridge.EndpointConfig{ID: "a", NetNS: f.sandbox("c1")})
	b := f.attach(n2, bridge.EndpointConfig{ID: "b", NetNS: f.sandbox("c2")})
	if a.IPv4() == b.IPv4() || a.MAC().String() == b.MAC().String() {
		t.Errorf("both got %s %s", a.IPv4(), a.MAC())
	}
	if _, ok := n1.Endpoint("b"); !ok {
		t.Error("d1 does not see d2's endpoint")
	}
	if _, err := d2.CreateNetwork(f.ctx, bridge.NetworkConfig{Name: "br0", IPv4: v4net}); err != nil {
		t.Errorf("d2 creating the same network: %v", err)
	}
	if err := n1.Delete(f.ctx); err != nil {
		t.Fatal(err)
	}
	if nets := d2.Networks(); len(nets) != 0 {
		t.Errorf("d2 still sees %v", nets)
	}
	_, err := n2.Attach(f.ctx, bridge.EndpointConfig{NetNS: f.sandbox("c3"), Advertise: &bridge.Advertise{}})
	isErr(t, err, bridge.ErrClosed)
}

// GC detaches what keep refuses, and removes what a dead process left
// half-made: here a pair whose attach was cut short (its record still
// names the owner) and a bridge whose create was.
func TestFakeGC(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	box := f.sandbox("c1")
	keep := f.attach(n, bridge.EndpointConfig{ID: "keep", NetNS: box})
	f.attach(n, bridge.EndpointConfig{ID: "drop", NetNS: f.sandbox("c2")})
	clean := f.settled()

	// A process dies between its claim and its commit: the commit and
	// the rollback's delete both fail, as if it had been killed.
	f.k.FailNext(faultAlias("nlbridge/1 ep id=half"))
	f.k.FailNext(faultType(unix.RTM_DELLINK))
	_, err := n.Attach(f.ctx, bridge.EndpointConfig{ID: "half", NetNS: f.sandbox("c3"), Advertise: &bridge.Advertise{}})
	isErr(t, err, unix.EPERM)
	has(t, f.k.DumpNS(""), "id=half", "owner=")
	f.k.FailNext(faultAlias("nlbridge/1 net"))
	f.k.FailNext(faultType(unix.RTM_DELLINK))
	_, err = f.d.CreateNetwork(f.ctx, bridge.NetworkConfig{Name: "br9", IPv4: netip.MustParsePrefix("10.9.0.1/24")})
	isErr(t, err, unix.EPERM)
	has(t, f.k.DumpNS(""), "br9: <bridge>")
	f.d.Close()
	f.k.Kill()

	d := f.open(bridge.Options{})
	if nets := d.Networks(); len(nets) != 1 {
		t.Errorf("networks %v: the half-made bridge counts as none", nets)
	}
	err = d.GC(f.ctx, func(e *bridge.Endpoint) bool { return e.ID() == "keep" })
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Reclaim(f.ctx); err != nil {
		t.Fatal(err)
	}
	host := f.k.DumpNS("")
	lacks(t, host, "id=half", "id=drop", "br9")
	has(t, host, "id=keep", keep.HostIfName())
	n2, _ := d.Network("br0")
	if eps := n2.Endpoints(); len(eps) != 1 || eps[0].ID() != "keep" {
		t.Errorf("endpoints after GC: %v", eps)
	}
	_ = clean
}

// The firewall is derived: a restart after `nft flush ruleset` rebuilds
// it with every recorded element, and a running driver repairs it.
func TestFakeFirewallRestore(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	f.attach(n, bridge.EndpointConfig{NetNS: f.sandbox("c1"), Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}})
	want := f.k.DumpNS("")
	if err := f.k.FlushRuleset(""); err != nil {
		t.Fatal(err)
	}
	lacks(t, f.k.DumpNS(""), "table inet")
	eventually(t, "the running driver to restore the table", func() bool { return f.k.DumpNS("") == want })
	f.d.Close()
	if err := f.k.FlushRuleset(""); err != nil {
		t.Fatal(err)
	}
	f.open(bridge.Options{})
	same(t, "after Open", strip(f.k.DumpNS(""), "bound"), strip(want, "bound"))
}

// A sandbox that died took its veth pair with it; GC removes what is
// left of its endpoint: port and guard elements, the held port, its
// conntrack entries.
func TestFakeGCAfterSandboxDied(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	box := f.sandbox("c1")
	before := noResidue(f.k.DumpNS(""))
	e := f.attach(n, bridge.EndpointConfig{NetNS: box, Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}})
	if err := f.k.RemoveNS(box); err != nil {
		t.Fatal(err)
	}
	host := f.k.DumpNS("")
	lacks(t, host, e.HostIfName()+": <veth>") // the pair went with the sandbox
	has(t, host, "tcp . 8080 : 172.18.0.2 . 80", `"`+e.HostIfName()+`" . 172.18.0.2`)
	flushes := len(f.k.Flushes(""))
	if err := f.d.GC(f.ctx, nil); err != nil {
		t.Fatal(err)
	}
	same(t, "after GC", noResidue(f.k.DumpNS("")), before)
	has(t, strings.Join(f.k.Flushes("")[flushes:], "\n"), "flush reply src 172.18.0.2", "flush orig src 172.18.0.2")
	if eps := n.Endpoints(); len(eps) != 0 {
		t.Errorf("endpoints after GC: %v", eps)
	}
}

// Two processes attaching at once on one network: distinct addresses
// and MACs for all, under the host lock (run with -race).
func TestFakeConcurrentAttaches(t *testing.T) {
	f := newFake(t, bridge.Options{})
	d2 := f.open(bridge.Options{})
	f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	var nets []*bridge.Network
	for _, d := range []*bridge.Driver{f.d, d2} {
		ns := d.Networks()
		if len(ns) != 1 {
			t.Fatalf("networks %v", ns)
		}
		nets = append(nets, ns[0])
	}
	const each = 8
	var mu sync.Mutex
	addrs, macs := map[string]bool{}, map[string]bool{}
	var wg sync.WaitGroup
	for i := range 2 * each {
		box := f.sandbox(fmt.Sprintf("c%d", i))
		wg.Go(func() {
			e, err := nets[i%2].Attach(f.ctx, bridge.EndpointConfig{NetNS: box, Advertise: &bridge.Advertise{}})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			addrs[e.IPv4().String()], macs[e.MAC().String()] = true, true
		})
	}
	wg.Wait()
	if len(addrs) != 2*each || len(macs) != 2*each {
		t.Errorf("%d addresses and %d MACs for %d endpoints", len(addrs), len(macs), 2*each)
	}
}

// A firewall repair that runs right after a network's Delete took its
// elements out (but before the network left the driver's list) does not
// put them back.
func TestFakeRepairDuringDelete(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	f.attach(n, bridge.EndpointConfig{NetNS: f.sandbox("c1")})
	// The ruleset is flushed while Delete holds the host lock (after its
	// last firewall batch); the repair then waits for the lock, and runs
	// while Delete flushes conntrack.
	f.k.FailNext(bridgetest.Fault{Type: nftDelSetElem, Match: mentions("br0"), Hook: func() { f.k.FlushRuleset("") }})
	f.k.FailNext(bridgetest.Fault{Type: ctDelete, Hook: func() {
		eventually(t, "the repair", func() bool { return strings.Contains(f.k.DumpNS(""), "table inet nlbridge") })
	}})
	if err := n.Delete(f.ctx); err != nil {
		t.Fatal(err)
	}
	lacks(t, f.k.DumpNS(""), `"br0"`)
}
