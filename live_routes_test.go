package bridge_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/internal/testenv"
	"github.com/nlbridge/bridge/nsutil"
)

const timeout = 2 * time.Second

func TestLiveInternalHasNoDefaultRoute(t *testing.T) {
	d, _ := hostDriver(t)
	cfg := dual
	cfg.Internal = true
	n := createNetwork(t, d, cfg)
	sb := testenv.NetNS(t, "sb")
	attach(t, n, bridge.EndpointConfig{NetNS: sb.Path()})
	if r := testenv.IP(t, sb, "route", "show", "default") + testenv.IP(t, sb, "-6", "route", "show", "default"); r != "" {
		t.Errorf("internal network added default routes:\n%s", r)
	}
	if err := testenv.Ping(sb, cfg.IPv4.Addr(), timeout); err != nil {
		t.Errorf("gateway unreachable on an internal network: %v", err)
	}
}

func TestLiveDefaultRouteChoice(t *testing.T) {
	d, _ := hostDriver(t)
	a := createNetwork(t, d, bridge.NetworkConfig{Name: "nlbta", IPv4: netip.MustParsePrefix("10.71.0.1/24")})
	b := createNetwork(t, d, bridge.NetworkConfig{Name: "nlbtb", IPv4: netip.MustParsePrefix("10.72.0.1/24")})
	c := createNetwork(t, d, bridge.NetworkConfig{Name: "nlbtc", IPv4: netip.MustParsePrefix("10.73.0.1/24")})
	sb := testenv.NetNS(t, "sb")
	attach(t, a, bridge.EndpointConfig{NetNS: sb.Path()})
	attach(t, b, bridge.EndpointConfig{NetNS: sb.Path()})
	if r := strings.TrimSpace(testenv.IP(t, sb, "route", "show", "default")); r != "default via 10.71.0.1 dev eth0 metric 100" {
		t.Errorf("after two automatic networks: %q, want only the first's route", r)
	}
	attach(t, c, bridge.EndpointConfig{NetNS: sb.Path(), RouteMetric: 50})
	if r := testenv.IP(t, sb, "route", "get", "192.0.2.1"); !strings.Contains(r, "via 10.73.0.1 dev eth2") {
		t.Errorf("RouteMetric 50 did not take over: %q", r)
	}
}

// On an IPv4-only network the interface has no IPv6 address of any kind,
// not even a link-local one: with the firewall it comes up with addrgenmode
// none (the guard keeps IPv6 off its port, see live_noipv6_test.go),
// without it disable_ipv6 is written, as Docker does.
func TestLiveIPv4OnlyNetworkHasNoIPv6Address(t *testing.T) {
	for _, noFirewall := range []bool{false, true} {
		host := testenv.NetNS(t, "host")
		d, err := bridge.Open(ctx, bridge.Options{NetNS: host.Path(), NoFirewall: noFirewall})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		n := createNetwork(t, d, bridge.NetworkConfig{Name: "nlbt4", IPv4: netip.MustParsePrefix("10.74.0.1/24")})
		sb := testenv.NetNS(t, "sb")
		ep := attach(t, n, bridge.EndpointConfig{NetNS: sb.Path()}) // waits for the port to forward: carrier is on
		v, err := sb.ReadSysctl("net.ipv6.conf." + ep.IfName() + ".disable_ipv6")
		link := testenv.IP(t, sb, "-d", "link", "show", "dev", ep.IfName())
		switch {
		case noFirewall && (err != nil || v != "1"):
			t.Errorf("NoFirewall: disable_ipv6 = %q %v, want 1", v, err)
		case !noFirewall && (v != "0" || !strings.Contains(link, "addrgenmode none")):
			t.Errorf("firewall: disable_ipv6 = %q, want 0 and addrgenmode none:\n%s", v, link)
		}
		if out := testenv.IP(t, sb, "-6", "addr", "show", "dev", ep.IfName()); out != "" {
			t.Errorf("NoFirewall=%v: IPv6 addresses on an IPv4-only network:\n%s", noFirewall, out)
		}
		if err := testenv.Ping(sb, n.Config().IPv4.Addr(), timeout); err != nil {
			t.Error(err)
		}
	}
}

func TestLiveSysctlThatDisablesIPv6DropsTheAddress(t *testing.T) {
	d, _ := hostDriver(t)
	n := createNetwork(t, d, dual)
	sb := testenv.NetNS(t, "sb")
	ep := attach(t, n, bridge.EndpointConfig{NetNS: sb.Path(),
		Sysctls: []string{"net.ipv6.conf.IFNAME.disable_ipv6=1", "net.ipv4.conf.IFNAME.arp_notify=1"}})
	if ep.IPv6().IsValid() {
		t.Errorf("IPv6() = %v, want none", ep.IPv6())
	}
	if v, _ := sb.ReadSysctl("net.ipv4.conf.eth0.arp_notify"); v != "1" {
		t.Errorf("arp_notify = %q, want 1", v)
	}
	if r := testenv.IP(t, sb, "-6", "route", "show", "default"); r != "" {
		t.Errorf("IPv6 default route without IPv6: %q", r)
	}
	if err := testenv.Ping(sb, dual.IPv4.Addr(), timeout); err != nil {
		t.Error(err)
	}
	// The address is free again for another endpoint.
	ep2 := attach(t, n, bridge.EndpointConfig{NetNS: testenv.NetNS(t, "sb2").Path()})
	if ep2.IPv6() != netip.MustParsePrefix("fd29::2/64") {
		t.Errorf("next endpoint got %v, want the freed fd29::2/64", ep2.IPv6())
	}
}

func TestLiveSandboxWithoutIPv6GetsIPv4Only(t *testing.T) {
	d, _ := hostDriver(t)
	n := createNetwork(t, d, dual)
	sb := testenv.NetNS(t, "sb")
	if err := sb.WriteSysctls(nsutil.Sysctl{Key: "net.ipv6.conf.all.disable_ipv6", Value: "1"},
		nsutil.Sysctl{Key: "net.ipv6.conf.default.disable_ipv6", Value: "1"}); err != nil {
		t.Fatal(err)
	}
	ep := attach(t, n, bridge.EndpointConfig{NetNS: sb.Path()})
	if ep.IPv6().IsValid() {
		t.Errorf("IPv6() = %v, want none", ep.IPv6())
	}
	if r := testenv.IP(t, sb, "-6", "route", "show", "default"); r != "" {
		t.Errorf("IPv6 default route without IPv6: %q", r)
	}
	if err := testenv.Ping(sb, dual.IPv4.Addr(), timeout); err != nil {
		t.Error(err)
	}
}
