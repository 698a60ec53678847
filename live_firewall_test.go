package bridge_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/internal/testenv"
	"github.com/nlbridge/bridge/nsutil"
)

const short = 300 * time.Millisecond // for flows that must be blocked

// wait is the timeout for a flow: the full one where it must get through,
// the short one where it must be blocked.
func wait(passes bool) time.Duration {
	if passes {
		return timeout
	}
	return short
}

// fwEnv is a host with a driver (firewall on), an outside namespace routed
// to it, and a check at the end that the firewall table is empty again.
func fwEnv(t *testing.T) (*bridge.Driver, *nsutil.NS, *nsutil.NS) {
	t.Helper()
	d, host := hostDriver(t)
	testenv.IP(t, host, "link", "set", "lo", "up") // as on any real host: 127.0.0.1 works
	out := testenv.Outside(t, host)
	t.Cleanup(func() { testenv.NoElements(t, host, "nlbridge") })
	return d, host, out
}

// peerOf connects over TCP from ns to ap and returns the source address
// the server saw.
func peerOf(t *testing.T, from *nsutil.NS, srv *nsutil.NS, ap netip.AddrPort) netip.Addr {
	t.Helper()
	peers := testenv.Listen(t, srv, ap)
	if _, err := testenv.Dial(from, ap, timeout); err != nil {
		t.Fatalf("tcp to %s: %v", ap, err)
	}
	return (<-peers).Addr()
}

func TestLiveMasqueradeAndSNAT(t *testing.T) {
	d, host, out := fwEnv(t)
	n := createNetwork(t, d, dual)
	sb := testenv.NetNS(t, "sb")
	ep := attach(t, n, bridge.EndpointConfig{NetNS: sb.Path()})
	if got := peerOf(t, sb, out, netip.AddrPortFrom(testenv.OutsideIPv4, 9000)); got != testenv.UplinkIPv4 {
		t.Errorf("outside saw %s, want the host's %s (masquerade)", got, testenv.UplinkIPv4)
	}
	if got := peerOf(t, sb, out, netip.AddrPortFrom(testenv.OutsideIPv6, 9000)); got != testenv.UplinkIPv6 {
		t.Errorf("outside saw %s, want the host's %s (masquerade)", got, testenv.UplinkIPv6)
	}
	_ = ep

	// HostIPv4: SNAT to that address instead.
	snat := netip.MustParseAddr("192.0.2.10")
	testenv.IP(t, host, "addr", "add", snat.String()+"/24", "dev", "up0")
	n2 := createNetwork(t, d, bridge.NetworkConfig{Name: "nlbt1", IPv4: netip.MustParsePrefix("10.81.0.1/24"), HostIPv4: snat})
	sb2 := testenv.NetNS(t, "sb2")
	attach(t, n2, bridge.EndpointConfig{NetNS: sb2.Path()})
	if got := peerOf(t, sb2, out, netip.AddrPortFrom(testenv.OutsideIPv4, 9001)); got != snat {
		t.Errorf("outside saw %s, want HostIPv4 %s", got, snat)
	}
}

func TestLivePublishedPorts(t *testing.T) {
	d, host, out := fwEnv(t)
	n := createNetwork(t, d, dual)
	srv, nbr := testenv.NetNS(t, "srv"), testenv.NetNS(t, "nbr")
	ep := attach(t, n, bridge.EndpointConfig{NetNS: srv.Path(), Ports: []bridge.PortMapping{
		{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80},
		{Proto: bridge.UDP, HostPort: 8053, ContainerPort: 53},
	}})
	attach(t, n, bridge.EndpointConfig{NetNS: nbr.Path()})
	if got := len(ep.Ports()); got != 4 {
		t.Fatalf("Ports() = %v, want tcp and udp for IPv4 and IPv6", ep.Ports())
	}
	testenv.Listen(t, srv, netip.AddrPortFrom(ep.IPv4().Addr(), 80))
	testenv.Listen(t, srv, netip.AddrPortFrom(ep.IPv6().Addr(), 80))
	testenv.ServeUDP(t, srv, netip.AddrPortFrom(netip.IPv6Unspecified(), 53))
	for _, tc := range []struct {
		name string
		from *nsutil.NS
		dst  netip.Addr
	}{
		{"outside v4", out, testenv.UplinkIPv4},
		{"outside v6", out, testenv.UplinkIPv6},
		{"host via its address", host, testenv.UplinkIPv4},
		{"host via 127.0.0.1", host, netip.MustParseAddr("127.0.0.1")},
		{"hairpin from a neighbour", nbr, testenv.UplinkIPv4},
		{"hairpin v6 from a neighbour", nbr, testenv.UplinkIPv6},
		{"hairpin to its own port", srv, testenv.UplinkIPv4},
		{"hairpin v6 to its own port", srv, testenv.UplinkIPv6},
	} {
		got, err := testenv.Dial(tc.from, netip.AddrPortFrom(tc.dst, 8080), timeout)
		if err != nil || !strings.HasPrefix(got, "hello from") {
			t.Errorf("%s: tcp %s:8080: %q %v", tc.name, tc.dst, got, err)
		}
		if got, err := testenv.DialUDP(tc.from, netip.AddrPortFrom(tc.dst, 8053), "ping", timeout); err != nil || got != "echo ping" {
			t.Errorf("%s: udp %s:8053: %q %v", tc.name, tc.dst, got, err)
		}
	}
	// While published, the host port is held.
	if err := host.Do(func() error {
		l, err := net.Listen("tcp4", "0.0.0.0:8080")
		if err == nil {
			l.Close()
		}
		return err
	}); err == nil {
		t.Error("a host process could take published port 8080")
	}
	// After detach the port is gone and free, and so are the conntrack
	// entries of the flows above (UDP ones would otherwise linger).
	if out := testenv.Conntrack(t, host, "-L"); !strings.Contains(out, ep.IPv4().Addr().String()) {
		t.Fatalf("no conntrack entries before detach, so the check below proves nothing:\n%s", out)
	}
	if err := ep.Detach(ctx); err != nil {
		t.Fatal(err)
	}
	if out := testenv.Conntrack(t, host, "-L"); strings.Contains(out, ep.IPv4().Addr().String()+" ") {
		t.Errorf("conntrack entries of the detached endpoint remain:\n%s", out)
	}
	if _, err := testenv.Dial(out, netip.AddrPortFrom(testenv.UplinkIPv4, 8080), short); err == nil {
		t.Error("port still published after Detach")
	}
	if err := host.Do(func() error {
		l, err := net.Listen("tcp4", "0.0.0.0:8080")
		if err == nil {
			l.Close()
		}
		return err
	}); err != nil {
		t.Errorf("host port not released after Detach: %v", err)
	}
}

func TestLivePublishedSCTP(t *testing.T) {
	d, host, out := fwEnv(t)
	n := createNetwork(t, d, dual)
	srv := testenv.NetNS(t, "srv")
	ep := attach(t, n, bridge.EndpointConfig{NetNS: srv.Path(), Ports: []bridge.PortMapping{{Proto: bridge.SCTP, HostPort: 9132, ContainerPort: 132}}})
	if m := testenv.Nft(t, host, "list", "map", "inet", "nlbridge", "portsany4"); !strings.Contains(m, "sctp . 9132 : "+ep.IPv4().Addr().String()+" . 132") {
		t.Errorf("no SCTP DNAT element:\n%s", m)
	}
	if !testenv.HaveSCTP() {
		t.Skip("DNAT element checked; no SCTP sockets in this kernel (sctp module not loaded; tests load no modules) to send packets")
	}
	testenv.ServeSCTP(t, srv, netip.AddrPortFrom(ep.IPv4().Addr(), 132))
	if got, err := testenv.DialSCTP(out, netip.AddrPortFrom(testenv.UplinkIPv4, 9132), timeout); err != nil || got != "hello" {
		t.Errorf("sctp from outside: %q %v", got, err)
	}
}

func TestLiveNATProtectsUnpublishedPorts(t *testing.T) {
	d, host, out := fwEnv(t)
	_ = host
	prot := createNetwork(t, d, bridge.NetworkConfig{Name: "nlbtp", IPv4: netip.MustParsePrefix("10.82.0.1/24")})
	open := createNetwork(t, d, bridge.NetworkConfig{Name: "nlbtu", IPv4: netip.MustParsePrefix("10.83.0.1/24"),
		GatewayModeIPv4: bridge.NATUnprotected})
	testenv.IP(t, out, "route", "add", "10.82.0.0/24", "via", testenv.UplinkIPv4.String())
	testenv.IP(t, out, "route", "add", "10.83.0.0/24", "via", testenv.UplinkIPv4.String())
	for _, tc := range []struct {
		n       *bridge.Network
		reaches bool
	}{{prot, false}, {open, true}} {
		sb := testenv.NetNS(t, "sb")
		ep := attach(t, tc.n, bridge.EndpointConfig{NetNS: sb.Path()})
		ap := netip.AddrPortFrom(ep.IPv4().Addr(), 80)
		testenv.Listen(t, sb, ap)
		_, err := testenv.Dial(out, ap, wait(tc.reaches))
		if reached := err == nil; reached != tc.reaches {
			t.Errorf("%v: outside -> container %s reached=%v (%v), want %v", tc.n.Config().GatewayModeIPv4, ap, reached, err, tc.reaches)
		}
	}
}

func TestLiveRoutedMode(t *testing.T) {
	d, _, out := fwEnv(t)
	n := createNetwork(t, d, bridge.NetworkConfig{Name: "nlbtr", IPv6: netip.MustParsePrefix("fd84::1/64"),
		IPv4: netip.MustParsePrefix("10.84.0.1/24"), GatewayModeIPv4: bridge.Routed, GatewayModeIPv6: bridge.Routed})
	testenv.IP(t, out, "route", "add", "10.84.0.0/24", "via", testenv.UplinkIPv4.String())
	testenv.IP(t, out, "-6", "route", "add", "fd84::/64", "via", testenv.UplinkIPv6.String())
	sb := testenv.NetNS(t, "sb")
	ep := attach(t, n, bridge.EndpointConfig{NetNS: sb.Path(), Ports: []bridge.PortMapping{{Proto: bridge.TCP, ContainerPort: 80}}})
	for _, a := range []netip.Addr{ep.IPv4().Addr(), ep.IPv6().Addr()} {
		testenv.Listen(t, sb, netip.AddrPortFrom(a, 80))
		testenv.Listen(t, sb, netip.AddrPortFrom(a, 81))
		if _, err := testenv.Dial(out, netip.AddrPortFrom(a, 80), timeout); err != nil {
			t.Errorf("published port %s:80 not reachable from outside: %v", a, err)
		}
		if _, err := testenv.Dial(out, netip.AddrPortFrom(a, 81), short); err == nil {
			t.Errorf("unpublished port %s:81 reachable from outside in routed mode", a)
		}
		if err := testenv.Ping(out, a, timeout); err != nil {
			t.Errorf("ICMP to %s blocked in routed mode: %v", a, err)
		}
	}
	// No NAT on the way out.
	if got := peerOf(t, sb, out, netip.AddrPortFrom(testenv.OutsideIPv4, 9002)); got != ep.IPv4().Addr() {
		t.Errorf("outside saw %s, want the container's own %s", got, ep.IPv4().Addr())
	}
}

func TestLiveDisableICC(t *testing.T) {
	d, _, _ := fwEnv(t)
	for _, icc := range []bool{true, false} {
		cfg := bridge.NetworkConfig{Name: "nlbti", IPv4: netip.MustParsePrefix("10.85.0.1/24"), DisableICC: !icc}
		n, err := d.CreateNetwork(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		a, b := testenv.NetNS(t, "a"), testenv.NetNS(t, "b")
		ea, _ := n.Attach(ctx, bridge.EndpointConfig{NetNS: a.Path(), Advertise: &bridge.Advertise{}})
		eb, _ := n.Attach(ctx, bridge.EndpointConfig{NetNS: b.Path(), Advertise: &bridge.Advertise{}})
		testenv.Listen(t, b, netip.AddrPortFrom(eb.IPv4().Addr(), 80))
		_, err = testenv.Dial(a, netip.AddrPortFrom(eb.IPv4().Addr(), 80), wait(icc))
		if reached := err == nil; reached != icc {
			t.Errorf("ICC=%v: sandbox to sandbox reached=%v (%v)", icc, reached, err)
		}
		if err := testenv.Ping(a, cfg.IPv4.Addr(), timeout); err != nil {
			t.Errorf("ICC=%v: gateway unreachable: %v", icc, err)
		}
		ea.Detach(ctx)
		eb.Detach(ctx)
		if err := n.Delete(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLiveNetworksAreIsolated(t *testing.T) {
	d, _, _ := fwEnv(t)
	n1 := createNetwork(t, d, bridge.NetworkConfig{Name: "nlbt1", IPv4: netip.MustParsePrefix("10.86.0.1/24")})
	n2 := createNetwork(t, d, bridge.NetworkConfig{Name: "nlbt2", IPv4: netip.MustParsePrefix("10.87.0.1/24")})
	a, b := testenv.NetNS(t, "a"), testenv.NetNS(t, "b")
	attach(t, n1, bridge.EndpointConfig{NetNS: a.Path()})
	eb := attach(t, n2, bridge.EndpointConfig{NetNS: b.Path(), Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8090, ContainerPort: 80}}})
	testenv.Listen(t, b, netip.AddrPortFrom(eb.IPv4().Addr(), 80))
	if _, err := testenv.Dial(a, netip.AddrPortFrom(eb.IPv4().Addr(), 80), short); err == nil {
		t.Error("a sandbox reached another network directly")
	}
	if err := testenv.Ping(a, eb.IPv4().Addr(), short); err == nil {
		t.Error("ICMP crossed networks")
	}
	if _, err := testenv.Dial(a, netip.AddrPortFrom(testenv.UplinkIPv4, 8090), timeout); err != nil {
		t.Errorf("published port of another network not reachable via the host: %v", err)
	}
}

func TestLiveInternalBlocksForwarding(t *testing.T) {
	d, _, out := fwEnv(t)
	for _, internal := range []bool{true, false} {
		n, err := d.CreateNetwork(ctx, bridge.NetworkConfig{Name: "nlbtn", IPv4: netip.MustParsePrefix("10.88.0.1/24"), Internal: internal})
		if err != nil {
			t.Fatal(err)
		}
		sb := testenv.NetNS(t, "sb")
		ep, err := n.Attach(ctx, bridge.EndpointConfig{NetNS: sb.Path(), Advertise: &bridge.Advertise{}})
		if err != nil {
			t.Fatal(err)
		}
		if internal { // no default route: give it one, to show the firewall blocks
			testenv.IP(t, sb, "route", "add", "default", "via", "10.88.0.1")
		}
		ap := netip.AddrPortFrom(testenv.OutsideIPv4, 9003)
		_, stop, _ := testenv.Serve(out, ap)
		_, err = testenv.Dial(sb, ap, wait(!internal))
		stop()
		if reached := err == nil; reached == internal {
			t.Errorf("internal=%v: sandbox -> outside reached=%v", internal, reached)
		}
		if err := testenv.Ping(sb, netip.MustParseAddr("10.88.0.1"), timeout); err != nil {
			t.Errorf("internal=%v: gateway unreachable: %v", internal, err)
		}
		ep.Detach(ctx)
		if err := n.Delete(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLivePortRangesEphemeralAndConflicts(t *testing.T) {
	d, host, _ := fwEnv(t)
	n := createNetwork(t, d, dual)
	// A host process holds 8100.
	var held net.Listener
	if err := host.Do(func() (err error) { held, err = net.Listen("tcp4", "0.0.0.0:8100"); return err }); err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	ep := attach(t, n, bridge.EndpointConfig{NetNS: testenv.NetNS(t, "a").Path(), Ports: []bridge.PortMapping{
		{Proto: bridge.TCP, HostIP: testenv.UplinkIPv4, HostPort: 8100, HostPortEnd: 8105, ContainerPort: 80},
		{Proto: bridge.TCP, HostIP: testenv.UplinkIPv4, ContainerPort: 81},
	}})
	ps := ep.Ports()
	if ps[0].HostPort != 8101 {
		t.Errorf("range 8100-8105 with 8100 held gave %d, want 8101", ps[0].HostPort)
	}
	lo, hi := portRange(t, host)
	if ps[1].HostPort < lo || ps[1].HostPort > hi {
		t.Errorf("ephemeral port %d outside ip_local_port_range %d-%d", ps[1].HostPort, lo, hi)
	}

	for _, tc := range []struct {
		name string
		m    bridge.PortMapping
	}{
		{"held by a host process", bridge.PortMapping{Proto: bridge.TCP, HostPort: 8100, ContainerPort: 80}},
		{"published by another endpoint", bridge.PortMapping{Proto: bridge.TCP, HostIP: testenv.UplinkIPv4, HostPort: 8101, ContainerPort: 80}},
		{"wildcard over a specific one", bridge.PortMapping{Proto: bridge.TCP, HostPort: 8101, ContainerPort: 80}},
	} {
		sb := testenv.NetNS(t, "b")
		_, err := n.Attach(ctx, bridge.EndpointConfig{NetNS: sb.Path(), Ports: []bridge.PortMapping{tc.m}})
		var e *bridge.Error
		if !errors.As(err, &e) || !errors.Is(err, bridge.ErrConflict) || e.Field != "Ports[0]" || !strings.Contains(err.Error(), "8") {
			t.Errorf("%s: err = %v, want ErrConflict on Ports[0]", tc.name, err)
		}
		testenv.OnlyLoopback(t, sb)
	}
	// Same port, other protocol: fine.
	attach(t, n, bridge.EndpointConfig{NetNS: testenv.NetNS(t, "c").Path(), Ports: []bridge.PortMapping{
		{Proto: bridge.UDP, HostIP: testenv.UplinkIPv4, HostPort: 8101, ContainerPort: 80}}})
}

func portRange(t *testing.T, ns *nsutil.NS) (uint16, uint16) {
	v, err := ns.ReadSysctl("net.ipv4.ip_local_port_range")
	if err != nil {
		t.Fatal(err)
	}
	var lo, hi uint16
	f := strings.Fields(v)
	for i, p := range []*uint16{&lo, &hi} {
		for _, c := range f[i] {
			*p = *p*10 + uint16(c-'0')
		}
	}
	return lo, hi
}

func TestLiveDefaultHostIP(t *testing.T) {
	d, host, out := fwEnv(t)
	n := createNetwork(t, d, bridge.NetworkConfig{Name: "nlbtd", IPv4: netip.MustParsePrefix("10.89.0.1/24"),
		IPv6: netip.MustParsePrefix("fd89::1/64"), DefaultHostIP: testenv.UplinkIPv4})
	sb := testenv.NetNS(t, "sb")
	ep := attach(t, n, bridge.EndpointConfig{NetNS: sb.Path(), Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8070, ContainerPort: 80}}})
	if ps := ep.Ports(); len(ps) != 1 || ps[0].HostIP != testenv.UplinkIPv4 || ps[0].HostPort != 8070 {
		t.Fatalf("Ports() = %v, want only %s:8070", ps, testenv.UplinkIPv4)
	}
	testenv.Listen(t, sb, netip.AddrPortFrom(ep.IPv4().Addr(), 80))
	if _, err := testenv.Dial(out, netip.AddrPortFrom(testenv.UplinkIPv4, 8070), timeout); err != nil {
		t.Errorf("published on DefaultHostIP, unreachable there: %v", err)
	}
	// Another host address (the gateway's) does not forward the port.
	if _, err := testenv.Dial(host, netip.AddrPortFrom(netip.MustParseAddr("10.89.0.1"), 8070), short); err == nil {
		t.Error("port published on every host address despite DefaultHostIP")
	}
}

func TestLiveIsolatedGatewayMode(t *testing.T) {
	d, host, out := fwEnv(t)
	n := createNetwork(t, d, bridge.NetworkConfig{Name: "nlbto", IPv4: netip.MustParsePrefix("10.90.0.1/24"),
		GatewayModeIPv4: bridge.Isolated})
	if a := testenv.IP(t, host, "-4", "addr", "show", "dev", "nlbto"); strings.Contains(a, "10.90.0.1") {
		t.Errorf("isolated mode put a gateway address on the bridge:\n%s", a)
	}
	a, b := testenv.NetNS(t, "a"), testenv.NetNS(t, "b")
	ea := attach(t, n, bridge.EndpointConfig{NetNS: a.Path()})
	eb := attach(t, n, bridge.EndpointConfig{NetNS: b.Path()})
	if r := testenv.IP(t, a, "route", "show", "default"); r != "" {
		t.Errorf("isolated mode added a default route: %s", r)
	}
	// Sandboxes on the bridge still talk to each other; nothing leaves.
	if err := testenv.Ping(a, eb.IPv4().Addr(), timeout); err != nil {
		t.Errorf("sandboxes on an isolated network cannot talk: %v", err)
	}
	testenv.IP(t, host, "addr", "add", "10.90.0.254/24", "dev", "nlbto") // a way out, to show the firewall blocks it
	testenv.IP(t, a, "route", "add", "default", "via", "10.90.0.254")
	ap := netip.AddrPortFrom(testenv.OutsideIPv4, 9004)
	_, stop, _ := testenv.Serve(out, ap)
	defer stop()
	if _, err := testenv.Dial(a, ap, short); err == nil {
		t.Error("isolated network reached the outside")
	}
	_ = ea
}

func TestLiveNetworkDeleteFlushesConntrack(t *testing.T) {
	d, host, out := fwEnv(t)
	n := createNetwork(t, d, dual)
	sb := testenv.NetNS(t, "sb")
	ep := attach(t, n, bridge.EndpointConfig{NetNS: sb.Path(), Advertise: &bridge.Advertise{},
		Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}})
	testenv.Listen(t, sb, netip.AddrPortFrom(ep.IPv4().Addr(), 80))
	if _, err := testenv.Dial(out, netip.AddrPortFrom(testenv.UplinkIPv4, 8080), timeout); err != nil {
		t.Fatal(err)
	}
	addr := ep.IPv4().Addr().String() + " "
	if c := testenv.Conntrack(t, host, "-L"); !strings.Contains(c, addr) {
		t.Fatalf("no conntrack entry before the delete, so the check below proves nothing:\n%s", c)
	}
	if err := n.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if c := testenv.Conntrack(t, host, "-L"); strings.Contains(c, addr) {
		t.Errorf("conntrack entries of the deleted network's endpoint remain:\n%s", c)
	}
	if _, err := testenv.Dial(out, netip.AddrPortFrom(testenv.UplinkIPv4, 8080), short); err == nil {
		t.Error("port still published after the network's delete")
	}
}

// A sandbox reaches its own published port, via a host address and via
// its gateway, with the packets routed (no br_netfilter) and bridged
// (br_netfilter, on by default where it is built in): the connection is
// masqueraded to the gateway address. The outside and the host keep
// their own source address.
func TestLiveOwnPublishedPort(t *testing.T) {
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err != nil {
		t.Log("no br_netfilter in this kernel: only the routed path is shown")
	}
	d, host, out := fwEnv(t)
	n := createNetwork(t, d, dual)
	srv := testenv.NetNS(t, "srv")
	ep := attach(t, n, bridge.EndpointConfig{NetNS: srv.Path(), Ports: []bridge.PortMapping{
		{Proto: bridge.TCP, HostPort: 8082, ContainerPort: 80}}})
	peers := map[bool]<-chan netip.AddrPort{
		false: testenv.Listen(t, srv, netip.AddrPortFrom(ep.IPv4().Addr(), 80)),
		true:  testenv.Listen(t, srv, netip.AddrPortFrom(ep.IPv6().Addr(), 80)),
	}
	for _, brnf := range []string{"1", "0"} {
		if err := host.WriteSysctls(nsutil.Sysctl{Key: "net.bridge.bridge-nf-call-iptables", Value: brnf},
			nsutil.Sysctl{Key: "net.bridge.bridge-nf-call-ip6tables", Value: brnf}); err != nil {
			if brnf == "1" {
				continue // no br_netfilter
			}
			if !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
		}
		for _, tc := range []struct {
			from     *nsutil.NS
			dst, src netip.Addr // src: the address the server sees
		}{
			{srv, testenv.UplinkIPv4, gw4},
			{srv, testenv.UplinkIPv6, gw6},
			{srv, gw4, gw4},
			{srv, gw6, gw6},
			{out, testenv.UplinkIPv4, testenv.OutsideIPv4},
			{host, testenv.UplinkIPv4, testenv.UplinkIPv4},
		} {
			if _, err := testenv.Dial(tc.from, netip.AddrPortFrom(tc.dst, 8082), timeout); err != nil {
				t.Errorf("bridge-nf-call=%s: %s -> %s:8082: %v", brnf, tc.from.Path(), tc.dst, err)
				continue
			}
			if got := (<-peers[tc.dst.Is6()]).Addr(); got != tc.src {
				t.Errorf("bridge-nf-call=%s: %s -> %s:8082: the server saw %s, want %s", brnf, tc.from.Path(), tc.dst, got, tc.src)
			}
		}
	}
}
