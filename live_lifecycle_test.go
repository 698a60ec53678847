package bridge_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
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
	// (The reclaimer may delete it meanwhile: -o link show lists all at once.)
	for _, line := range strings.Split(testenv.IP(t, sb, "-o", "link", "show"), "\n") {
		if strings.Contains(line, " nlbd") && strings.Contains(line, ",UP") {
			t.Errorf("retired interface is up: %s", line)
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

func TestLiveDetachManyAtOnce(t *testing.T) {
	d, host, out := fwEnv(t)
	n1 := createNetwork(t, d, dual)
	n2 := createNetwork(t, d, bridge.NetworkConfig{Name: "nlbt1", IPv4: netip.MustParsePrefix("10.85.0.1/24")})
	var eps []*bridge.Endpoint
	var sbs []*nsutil.NS
	for i, n := range []*bridge.Network{n1, n1, n2} {
		sb := testenv.NetNS(t, fmt.Sprint("sb", i))
		ep := attach(t, n, bridge.EndpointConfig{NetNS: sb.Path(), IfName: "eth0", Advertise: &bridge.Advertise{},
			Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostIP: testenv.UplinkIPv4, HostPort: uint16(8081 + i), ContainerPort: 80}}})
		testenv.Listen(t, sb, netip.AddrPortFrom(netip.IPv4Unspecified(), 80))
		eps, sbs = append(eps, ep), append(sbs, sb)
	}
	published := func(i int, passes bool) error {
		_, err := testenv.Dial(out, netip.AddrPortFrom(testenv.UplinkIPv4, uint16(8081+i)), wait(passes))
		return err
	}
	for i := range eps {
		if err := published(i, true); err != nil {
			t.Fatalf("port %d before detach: %v", 8081+i, err)
		}
	}
	if err := d.Detach(ctx, eps...); err != nil {
		t.Fatal(err)
	}
	if err := d.Detach(ctx, eps[0]); err != nil {
		t.Errorf("second Detach: %v", err)
	}
	for i, sb := range sbs {
		if err := published(i, false); err == nil {
			t.Errorf("port %d still reaches a detached endpoint", 8081+i)
		}
		if slices.Contains(testenv.Links(t, sb), "eth0") {
			t.Errorf("sandbox %d still has eth0", i)
		}
	}
	for _, br := range []string{"nlbt0", "nlbt1"} {
		if ports := testenv.IP(t, host, "link", "show", "master", br); ports != "" {
			t.Errorf("%s still has ports:\n%s", br, ports)
		}
	}
	// The first sandbox takes a successor with the same name and address at once.
	ep := attach(t, n1, bridge.EndpointConfig{NetNS: sbs[0].Path(), IfName: "eth0", IPv4: eps[0].IPv4(), Advertise: &bridge.Advertise{}})
	if err := testenv.Ping(sbs[0], dual.IPv4.Addr(), timeout); err != nil {
		t.Errorf("successor %s: %v", ep.IPv4(), err)
	}
	// Endpoints of another driver are refused, and nothing is detached.
	other, _ := hostDriver(t)
	foreign := attach(t, createNetwork(t, other, dual), bridge.EndpointConfig{NetNS: testenv.NetNS(t, "f").Path()})
	if err := d.Detach(ctx, ep, foreign); !errors.Is(err, bridge.ErrInvalid) {
		t.Errorf("Detach of another driver's endpoint: %v, want ErrInvalid", err)
	}
	if err := testenv.Ping(sbs[0], dual.IPv4.Addr(), timeout); err != nil {
		t.Errorf("a refused Detach cut the successor off: %v", err)
	}
}
