package bridge

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nlbridge/bridge/nat"
)

func TestCheckNetworkRejects(t *testing.T) {
	ok := NetworkConfig{Name: "br0", IPv4: netip.MustParsePrefix("172.18.0.1/16"), IPv6: netip.MustParsePrefix("fd00::1/64")}
	for _, tc := range []struct {
		field string
		mod   func(*NetworkConfig)
	}{
		{"Name", func(c *NetworkConfig) { c.Name = "" }},
		{"Name", func(c *NetworkConfig) { c.Name = "a-name-of-16-byt" }},
		{"Name", func(c *NetworkConfig) { c.Name = "a/b" }},
		{"Name", func(c *NetworkConfig) { c.Name = "a b" }},
		{"Name", func(c *NetworkConfig) { c.Name = ".." }},
		{"MTU", func(c *NetworkConfig) { c.MTU = 67 }},
		{"MTU", func(c *NetworkConfig) { c.MTU = 65536 }},
		{"IPv4", func(c *NetworkConfig) { c.IPv4 = netip.MustParsePrefix("fd00::1/64") }},
		{"IPv4", func(c *NetworkConfig) { c.IPv4 = netip.MustParsePrefix("172.18.0.0/16") }},
		{"IPv4", func(c *NetworkConfig) { c.IPv4 = netip.MustParsePrefix("172.18.255.255/16") }},
		{"IPv4", func(c *NetworkConfig) { c.IPv4 = netip.MustParsePrefix("172.18.0.1/31") }},
		{"IPv4", func(c *NetworkConfig) { c.IPv4 = netip.MustParsePrefix("127.0.0.1/8") }},
		{"IPv6", func(c *NetworkConfig) { c.IPv6 = netip.MustParsePrefix("172.18.0.1/16") }},
		{"IPv6", func(c *NetworkConfig) { c.IPv6 = netip.MustParsePrefix("fe80::1/10") }},
		{"IPv6", func(c *NetworkConfig) { c.IPv6 = netip.MustParsePrefix("fe80::1/80") }},
		{"IPv6", func(c *NetworkConfig) { c.IPv6 = netip.MustParsePrefix("fd00::/64") }},
	} {
		cfg := ok
		tc.mod(&cfg)
		err := checkNetwork("create network", cfg)
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, ErrInvalid) || e.Field != tc.field {
			t.Errorf("%+v: err = %v, want ErrInvalid on %s", cfg, err, tc.field)
			continue
		}
		if !strings.Contains(err.Error(), tc.field) {
			t.Errorf("message %q does not name the field", err)
		}
	}
	if err := checkNetwork("create network", ok); err != nil {
		t.Errorf("valid config refused: %v", err)
	}
	if err := checkNetwork("create network", NetworkConfig{Name: "br0", IPv6: netip.MustParsePrefix("fe80::1/64")}); err != nil {
		t.Errorf("fe80::/64 itself is allowed: %v", err)
	}
}

func TestCheckEndpointRejects(t *testing.T) {
	n := &Network{cfg: NetworkConfig{Name: "br0", IPv4: netip.MustParsePrefix("172.18.0.1/16"),
		IPv6: netip.MustParsePrefix("fd00::1/64")}}
	for _, tc := range []struct {
		field string
		cfg   EndpointConfig
	}{
		{"NetNS", EndpointConfig{}},
		{"IfName", EndpointConfig{NetNS: "/x", IfName: "bad name"}},
		{"MAC", EndpointConfig{NetNS: "/x", MAC: net.HardwareAddr{1, 0, 0, 0, 0, 1}}},
		{"MAC", EndpointConfig{NetNS: "/x", MAC: net.HardwareAddr{2, 0, 0, 0, 1}}},
		{"MAC", EndpointConfig{NetNS: "/x", MAC: net.HardwareAddr{0, 0, 0, 0, 0, 0}}},
		{"IPv4", EndpointConfig{NetNS: "/x", IPv4: netip.MustParsePrefix("172.19.0.2/16")}},
		{"IPv4", EndpointConfig{NetNS: "/x", IPv4: netip.MustParsePrefix("172.18.0.1/16")}},
		{"IPv4", EndpointConfig{NetNS: "/x", IPv4: netip.MustParsePrefix("172.18.0.0/16")}},
		{"IPv4", EndpointConfig{NetNS: "/x", IPv4: netip.MustParsePrefix("172.18.255.255/16")}},
		{"IPv4", EndpointConfig{NetNS: "/x", IPv4: netip.MustParsePrefix("172.18.0.2/24")}},
		{"IPv4", EndpointConfig{NetNS: "/x", IPv4: netip.MustParsePrefix("fd00::2/64")}},
		{"IPv6", EndpointConfig{NetNS: "/x", IPv6: netip.MustParsePrefix("fd00::1/64")}},
		{"IPv6", EndpointConfig{NetNS: "/x", IPv6: netip.MustParsePrefix("fd01::2/64")}},
		{"Sysctls", EndpointConfig{NetNS: "/x", Sysctls: []string{"net.ipv4.conf.eth0.arp_notify=1"}}},
		{"Sysctls", EndpointConfig{NetNS: "/x", Sysctls: []string{"net.ipv4.ip_forward=1"}}},
		{"Sysctls", EndpointConfig{NetNS: "/x", Sysctls: []string{"net.ipv4.conf.IFNAME.arp_notify"}}},
		{"Sysctls", EndpointConfig{NetNS: "/x", Sysctls: []string{"net.ipv4.../IFNAME.x=1"}}},
		{"Sysctls", EndpointConfig{NetNS: "/x", Sysctls: []string{"net.ipv4.conf.IFNAME.../../x=1"}}},
	} {
		_, err := n.plan("attach", tc.cfg)
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, ErrInvalid) || e.Field != tc.field {
			t.Errorf("%+v: err = %v, want ErrInvalid on %s", tc.cfg, err, tc.field)
		}
	}
	v4only := &Network{cfg: NetworkConfig{Name: "br0", IPv4: netip.MustParsePrefix("172.18.0.1/16")}}
	if _, err := v4only.plan("attach", EndpointConfig{NetNS: "/x", IPv6: netip.MustParsePrefix("fd00::2/64")}); !errors.Is(err, ErrInvalid) {
		t.Errorf("IPv6 on an IPv4-only network: %v", err)
	}
	if _, err := n.plan("attach", EndpointConfig{NetNS: "/x", IPv4: netip.MustParsePrefix("172.18.0.2/16"),
		Sysctls: []string{"net.ipv4.conf.IFNAME.arp_notify=1"}}); err != nil {
		t.Errorf("valid endpoint refused: %v", err)
	}
}

func TestClaimAddresses(t *testing.T) {
	n := &Network{cfg: NetworkConfig{IPv4: netip.MustParsePrefix("10.0.0.1/30")}, used: map[netip.Addr]bool{}, macs: map[string]bool{}}
	p, err := n.claim("attach", "IPv4", netip.Prefix{}, n.cfg.IPv4)
	if err != nil || p != netip.MustParsePrefix("10.0.0.2/30") {
		t.Fatalf("first claim = %v %v", p, err)
	}
	if _, err := n.claim("attach", "IPv4", netip.Prefix{}, n.cfg.IPv4); !errors.Is(err, ErrConflict) {
		t.Errorf("full /30: err = %v, want ErrConflict (10.0.0.3 is broadcast)", err)
	}
	if _, err := n.claim("attach", "IPv4", p, n.cfg.IPv4); !errors.Is(err, ErrConflict) {
		t.Errorf("taken address: err = %v, want ErrConflict", err)
	}
}

func TestOpenRejectsNonNamespace(t *testing.T) {
	_, err := Open(context.Background(), Options{NetNS: "/proc/self/status"})
	var e *Error
	if !errors.As(err, &e) || e.Field != "NetNS" || !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid on NetNS", err)
	}
}

func TestAdvertiseOutOfRange(t *testing.T) {
	n := &Network{cfg: NetworkConfig{Name: "br0", IPv4: netip.MustParsePrefix("172.18.0.1/16")}}
	for _, adv := range []Advertise{{Count: 4}, {Count: -1}, {Count: 1, Interval: 99 * time.Millisecond}, {Count: 1, Interval: 3 * time.Second}} {
		_, err := n.plan("attach", EndpointConfig{NetNS: "/x", Advertise: &adv})
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, ErrInvalid) || !strings.HasPrefix(e.Field, "Advertise.") {
			t.Errorf("%+v: err = %v, want ErrInvalid on Advertise.*", adv, err)
		}
	}
	for _, adv := range []*Advertise{nil, {}, {Count: 3}, {Count: 1, Interval: 2 * time.Second}} {
		if _, err := n.plan("attach", EndpointConfig{NetNS: "/x", Advertise: adv}); err != nil {
			t.Errorf("%+v refused: %v", adv, err)
		}
	}
	if r, _ := (&Advertise{Count: 2}).resolve("x"); r.Interval != time.Second {
		t.Errorf("zero Interval resolved to %v, want 1s", r.Interval)
	}
}

func TestPlanSysctlsOnChosenName(t *testing.T) {
	n := &Network{cfg: NetworkConfig{Name: "br0", IPv4: netip.MustParsePrefix("172.18.0.1/16")}}
	p, err := n.plan("attach", EndpointConfig{NetNS: "/x", Sysctls: []string{"net.ipv4.conf.IFNAME.arp_notify = 1", "net.ipv6.conf.IFNAME.accept_ra=0"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range p.sysctls {
		sc := s.on("eth0.100")
		got = append(got, sc.Key+"="+sc.Value)
	}
	want := []string{"net.ipv4.conf.eth0/100.arp_notify=1", "net.ipv6.conf.eth0/100.accept_ra=0"}
	if !slices.Equal(got, want) {
		t.Errorf("sysctls on eth0.100 = %q, want %q", got, want)
	}
}

func TestPlanPortsHostIPs(t *testing.T) {
	v4, v6 := netip.MustParsePrefix("172.18.0.1/16"), netip.MustParsePrefix("fd00::1/64")
	lo4, lo6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	for _, tc := range []struct {
		cfg    NetworkConfig
		hostIP netip.Addr
		want   []netip.Addr
	}{
		{NetworkConfig{IPv4: v4, IPv6: v6}, netip.Addr{}, []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()}},
		{NetworkConfig{IPv4: v4}, netip.Addr{}, []netip.Addr{netip.IPv4Unspecified()}},
		{NetworkConfig{IPv6: v6}, netip.Addr{}, []netip.Addr{netip.IPv6Unspecified()}},
		{NetworkConfig{IPv4: v4, IPv6: v6}, lo6, []netip.Addr{lo6}},
		{NetworkConfig{IPv4: v4, IPv6: v6, DefaultHostIP: lo4}, netip.Addr{}, []netip.Addr{lo4}},
		{NetworkConfig{IPv4: v4, IPv6: v6, DefaultHostIP: lo4}, lo6, []netip.Addr{lo6}},
	} {
		n := &Network{cfg: tc.cfg, d: &Driver{fw: &nat.Firewall{}}}
		p, err := n.plan("attach", EndpointConfig{NetNS: "/x", Ports: []PortMapping{{Proto: TCP, HostIP: tc.hostIP, ContainerPort: 80}}})
		if err != nil {
			t.Errorf("%+v, HostIP %v: %v", tc.cfg, tc.hostIP, err)
			continue
		}
		if got := p.ports[0].hostIPs; !slices.Equal(got, tc.want) {
			t.Errorf("%+v, HostIP %v: host addresses %v, want %v", tc.cfg, tc.hostIP, got, tc.want)
		}
	}
	n := &Network{cfg: NetworkConfig{IPv4: v4, DefaultHostIP: lo6}, d: &Driver{fw: &nat.Firewall{}}}
	_, err := n.plan("attach", EndpointConfig{NetNS: "/x", Ports: []PortMapping{{Proto: TCP, ContainerPort: 80}}})
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrInvalid) || e.Field != "Ports[0]" {
		t.Errorf("IPv6 DefaultHostIP on an IPv4-only network: err = %v, want ErrInvalid on Ports[0]", err)
	}
}
