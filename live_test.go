package bridge_test

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/internal/testenv"
	"github.com/nlbridge/bridge/nsutil"
)

var ctx = context.Background()

// hostDriver makes a throwaway "host" namespace and a driver on it, and
// checks at the end that the host holds nothing but lo.
func hostDriver(t *testing.T) (*bridge.Driver, *nsutil.NS) {
	t.Helper()
	host := testenv.NetNS(t, "host")
	d, err := bridge.Open(ctx, bridge.Options{NetNS: host.Path()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
		testenv.OnlyLoopback(t, host)
	})
	return d, host
}

func createNetwork(t *testing.T, d *bridge.Driver, cfg bridge.NetworkConfig) *bridge.Network {
	t.Helper()
	n, err := d.CreateNetwork(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Delete(ctx); err != nil {
			t.Error(err)
		}
	})
	return n
}

func attach(t *testing.T, n *bridge.Network, cfg bridge.EndpointConfig) *bridge.Endpoint {
	t.Helper()
	ep, err := n.Attach(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ep.Detach(ctx); err != nil {
			t.Error(err)
		}
	})
	return ep
}

var dual = bridge.NetworkConfig{
	Name: "nlbt0",
	IPv4: netip.MustParsePrefix("172.29.0.1/24"),
	IPv6: netip.MustParsePrefix("fd29::1/64"),
	MTU:  1450,
}

func TestLiveTwoSandboxesTalk(t *testing.T) {
	d, host := hostDriver(t)
	n := createNetwork(t, d, dual)
	brMAC := func() string {
		f := strings.Fields(testenv.IP(t, host, "-o", "link", "show", "nlbt0"))
		return f[slices.Index(f, "link/ether")+1]
	}
	macBefore := brMAC()
	for key, want := range map[string]string{"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1",
		"net.ipv6.conf.nlbt0.accept_ra": "0", "net.ipv6.conf.nlbt0.disable_ipv6": "0"} {
		if v, err := host.ReadSysctl(key); err != nil || v != want {
			t.Errorf("host %s = %q (%v), want %s", key, v, err, want)
		}
	}
	s1, s2 := testenv.NetNS(t, "s1"), testenv.NetNS(t, "s2")
	e1 := attach(t, n, bridge.EndpointConfig{NetNS: s1.Path(), IPv4: netip.MustParsePrefix("172.29.0.2/24"),
		IPv6: netip.MustParsePrefix("fd29::2/64")})
	e2 := attach(t, n, bridge.EndpointConfig{NetNS: s2.Path()}) // automatic name and addresses

	if e2.IPv4() != netip.MustParsePrefix("172.29.0.3/24") || e2.IPv6() != netip.MustParsePrefix("fd29::3/64") {
		t.Errorf("automatic addresses = %v %v, want 172.29.0.3/24 fd29::3/64", e2.IPv4(), e2.IPv6())
	}
	for _, e := range []*bridge.Endpoint{e1, e2} {
		if e.IfName() != "eth0" {
			t.Errorf("IfName = %q, want eth0", e.IfName())
		}
		a := e.IPv4().Addr().As4()
		if want := "02:42:" + strings.Join([]string{hex2(a[0]), hex2(a[1]), hex2(a[2]), hex2(a[3])}, ":"); e.MAC().String() != want {
			t.Errorf("MAC = %s, want %s", e.MAC(), want)
		}
	}

	if m := brMAC(); m != macBefore {
		t.Errorf("bridge MAC changed from %s to %s as ports joined: not pinned", macBefore, m)
	}

	// What the kernel holds, seen through iproute2.
	out := testenv.IP(t, s1, "-d", "link", "show", "eth0")
	for _, want := range []string{"mtu 1450", "link/ether " + e1.MAC().String(), "state UP"} {
		if !strings.Contains(out, want) {
			t.Errorf("sandbox eth0 lacks %q:\n%s", want, out)
		}
	}
	out = testenv.IP(t, host, "-d", "link", "show", e1.HostIfName())
	for _, want := range []string{"master nlbt0", "mtu 1450", "group " + strconv.Itoa(int(n.Group())), "state UP"} {
		if !strings.Contains(out, want) {
			t.Errorf("host end lacks %q:\n%s", want, out)
		}
	}
	if r := testenv.IP(t, s1, "route", "show", "default"); !strings.Contains(r, "default via 172.29.0.1 dev eth0") || !strings.Contains(r, "metric 100") {
		t.Errorf("IPv4 default route = %q", r)
	}
	if r := testenv.IP(t, s1, "-6", "route", "show", "default"); !strings.Contains(r, "default via fd29::1 dev eth0") {
		t.Errorf("IPv6 default route = %q", r)
	}
	if out := testenv.IP(t, host, "addr", "show", "nlbt0"); !strings.Contains(out, "inet 172.29.0.1/24") ||
		!strings.Contains(out, "inet6 fd29::1/64") || !strings.Contains(out, "inet6 fe80::1/64") {
		t.Errorf("bridge addresses:\n%s", out)
	}

	// ICMP and TCP, both families, sandbox to sandbox and to the gateway.
	for _, dst := range []netip.Addr{e2.IPv4().Addr(), e2.IPv6().Addr(), dual.IPv4.Addr(), dual.IPv6.Addr()} {
		if err := testenv.Ping(s1, dst, 2*time.Second); err != nil {
			t.Errorf("ping from s1: %v", err)
		}
	}
	if err := testenv.Ping(s2, e1.IPv6().Addr(), 2*time.Second); err != nil {
		t.Errorf("ping from s2: %v", err)
	}
	for _, srv := range []struct {
		ns *nsutil.NS
		ap netip.AddrPort
	}{
		{s2, netip.AddrPortFrom(e2.IPv4().Addr(), 8080)},
		{s2, netip.AddrPortFrom(e2.IPv6().Addr(), 8080)},
		{host, netip.AddrPortFrom(dual.IPv4.Addr(), 8081)},
		{host, netip.AddrPortFrom(dual.IPv6.Addr(), 8081)},
	} {
		peers := testenv.Listen(t, srv.ns, srv.ap)
		got, err := testenv.Dial(s1, srv.ap, 2*time.Second)
		if err != nil || !strings.HasPrefix(got, "hello from") {
			t.Errorf("tcp s1 -> %s: %q %v", srv.ap, got, err)
			continue
		}
		if p := <-peers; p.Addr() != e1.IPv4().Addr() && p.Addr() != e1.IPv6().Addr() {
			t.Errorf("tcp %s saw peer %s, want s1's address", srv.ap, p)
		}
	}

	// Detach cuts the sandbox off at once; the devices go soon after.
	for _, e := range []*bridge.Endpoint{e1, e2} {
		if err := e.Detach(ctx); err != nil {
			t.Fatal(err)
		}
		if err := e.Detach(ctx); err != nil {
			t.Errorf("second Detach: %v", err)
		}
	}
	for _, sb := range []*nsutil.NS{s1, s2} {
		if l := testenv.Links(t, sb); slices.Contains(l, "eth0") {
			t.Errorf("eth0 still in the sandbox after Detach: %v", l)
		}
		if a := testenv.IP(t, sb, "addr", "show", "scope", "global"); strings.Contains(a, "inet") {
			t.Errorf("addresses left after Detach:\n%s", a)
		}
	}
	if err := d.Reclaim(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.OnlyLoopback(t, s1)
	testenv.OnlyLoopback(t, s2)
}

func hex2(b byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&15]})
}
