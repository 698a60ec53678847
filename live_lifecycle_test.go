package bridge_test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/internal/testenv"
	"github.com/nlbridge/bridge/nsutil"
)

func TestLiveDetachAfterSandboxIsGone(t *testing.T) {
	d, host := hostDriver(t)
	n := createNetwork(t, d, dual)
	sb, err := nsutil.Create("", "nlbt-gone")
	if err != nil {
		t.Fatal(err)
	}
	ep, err := n.Attach(ctx, bridge.EndpointConfig{NetNS: sb.Path()})
	if err != nil {
		sb.Close()
		nsutil.Delete(sb.Path())
		t.Fatal(err)
	}
	sb.Close()
	if err := nsutil.Delete(sb.Path()); err != nil {
		t.Fatal(err)
	}
	if err := ep.Detach(ctx); err != nil {
		t.Fatalf("Detach with the sandbox gone: %v", err)
	}
	if err := d.Reclaim(ctx); err != nil {
		t.Fatal(err)
	}
	hostHoldsOnly(t, host, "nlbt0")
}

func TestLiveDetachFreesNameAndAddressAtOnce(t *testing.T) {
	d, host := hostDriver(t)
	n := createNetwork(t, d, dual)
	sb, peer := testenv.NetNS(t, "sb"), testenv.NetNS(t, "peer")
	attach(t, n, bridge.EndpointConfig{NetNS: peer.Path()})
	cfg := bridge.EndpointConfig{NetNS: sb.Path(), IfName: "eth0", IPv4: netip.MustParsePrefix("172.29.0.77/24"),
		IPv6: netip.MustParsePrefix("fd29::77/64"), Advertise: &bridge.Advertise{}}
	old, err := n.Attach(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Detach(ctx); err != nil {
		t.Fatal(err)
	}
	// At once: same sandbox, same name and addresses, new MAC.
	cfg.MAC = net.HardwareAddr{2, 0, 0, 0, 0x77, 0x77}
	ep := attach(t, n, cfg)
	if err := testenv.Ping(peer, ep.IPv4().Addr(), timeout); err != nil {
		t.Errorf("successor unreachable over IPv4: %v", err)
	}
	if err := testenv.Ping(peer, ep.IPv6().Addr(), timeout); err != nil {
		t.Errorf("successor unreachable over IPv6: %v", err)
	}
	// The retired interface is down, nameless to traffic, and goes away.
	for _, l := range testenv.Links(t, sb) {
		if strings.HasPrefix(l, "nlbd") {
			if out := testenv.IP(t, sb, "link", "show", l); strings.Contains(out, ",UP") {
				t.Errorf("retired %s is up: %s", l, out)
			}
		}
	}
	if r := testenv.IP(t, sb, "route", "show"); strings.Count(r, "\n") != 2 || !strings.Contains(r, "dev eth0") {
		t.Errorf("routes besides the successor's:\n%s", r)
	}
	if err := d.Reclaim(ctx); err != nil {
		t.Fatal(err)
	}
	if l := testenv.Links(t, sb); len(l) != 2 {
		t.Errorf("after Reclaim the sandbox holds %v, want lo and eth0", l)
	}
	_ = host
}

func TestLiveDeleteNetworkRemovesAllEndpoints(t *testing.T) {
	d, host := hostDriver(t)
	n, err := d.CreateNetwork(ctx, dual)
	if err != nil {
		t.Fatal(err)
	}
	var sbs []*nsutil.NS
	var eps []*bridge.Endpoint
	for i := range 3 {
		sb := testenv.NetNS(t, fmt.Sprint("sb", i))
		ep, err := n.Attach(ctx, bridge.EndpointConfig{NetNS: sb.Path()})
		if err != nil {
			t.Fatal(err)
		}
		sbs, eps = append(sbs, sb), append(eps, ep)
	}
	if err := n.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Delete(ctx); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	hostHoldsOnly(t, host)
	for _, sb := range sbs {
		testenv.OnlyLoopback(t, sb)
	}
	for _, ep := range eps {
		if err := ep.Detach(ctx); err != nil {
			t.Errorf("Detach after Delete: %v", err)
		}
	}
	if _, ok := d.Network(dual.Name); ok {
		t.Error("deleted network still listed")
	}
	// The name and subnet are free again.
	createNetwork(t, d, dual)
}

func TestLiveConcurrentAttachDetach(t *testing.T) {
	const n = 32
	d, host := hostDriver(t)
	nw := createNetwork(t, d, bridge.NetworkConfig{Name: "nlbt0", IPv4: netip.MustParsePrefix("10.75.0.1/24"),
		IPv6: netip.MustParsePrefix("fd75::1/64")})
	sbs := make([]*nsutil.NS, n)
	for i := range sbs {
		sbs[i] = testenv.NetNS(t, fmt.Sprint("c", i))
	}
	eps := make([]*bridge.Endpoint, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { eps[i], errs[i] = nw.Attach(ctx, bridge.EndpointConfig{NetNS: sbs[i].Path()}) })
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("attach %d: %v", i, err)
		}
		if a := eps[i].IPv4().Addr(); seen[a] {
			t.Errorf("address %s given twice", a)
		} else {
			seen[a] = true
		}
	}
	// Everyone reaches the gateway and a neighbour.
	for i := range n {
		wg.Go(func() {
			if err := testenv.Ping(sbs[i], eps[(i+1)%n].IPv4().Addr(), timeout); err != nil {
				t.Errorf("sandbox %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	for i := range n {
		wg.Go(func() { errs[i] = eps[i].Detach(ctx) })
	}
	wg.Wait()
	if err := d.Reclaim(ctx); err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("detach %d: %v", i, err)
		}
		testenv.OnlyLoopback(t, sbs[i])
	}
	hostHoldsOnly(t, host, "nlbt0")
}
