package bridge_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/bridgetest"
	"github.com/nlbridge/bridge/link"
	"golang.org/x/sys/unix"
)

// Every gateway mode: the bridge's addresses, the firewall sets the
// network is in, the sandbox's default routes; and Delete leaves no
// device, address or element behind.
func TestFakeNetworkModes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      bridge.NetworkConfig
		host     []string // in the host dump once attached
		sandbox  []string // in the sandbox dump
		notHost  []string
		notInBox []string
	}{
		{name: "nat", cfg: bridge.NetworkConfig{IPv4: v4net, IPv6: v6net},
			host: []string{"master br0 hairpin group", "inet 172.18.0.1/16 dev br0", "inet6 fd18::1/64 dev br0", "inet6 fe80::1/64 dev br0",
				"sysctl net.ipv4.ip_forward = 1", "sysctl net.ipv4.conf.br0.route_localnet = 1",
				"sysctl net.ipv6.conf.all.forwarding = 1", "sysctl net.ipv6.conf.br0.accept_ra = 0"},
			sandbox: []string{"default via 172.18.0.1 dev eth0 metric 100", "default via fd18::1 dev eth0 metric 100",
				"inet 172.18.0.2/16 dev eth0", "inet6 fd18::2/64 dev eth0"}},
		{name: "nat-unprotected", cfg: bridge.NetworkConfig{IPv4: v4net, GatewayModeIPv4: bridge.NATUnprotected},
			sandbox: []string{"default via 172.18.0.1 dev eth0"}},
		{name: "routed", cfg: bridge.NetworkConfig{IPv4: v4net, GatewayModeIPv4: bridge.Routed},
			sandbox: []string{"default via 172.18.0.1 dev eth0"}},
		{name: "isolated", cfg: bridge.NetworkConfig{IPv4: v4net, GatewayModeIPv4: bridge.Isolated},
			notHost: []string{"inet 172.18.0.1/16"}, sandbox: []string{"inet 172.18.0.2/16 dev eth0"},
			notInBox: []string{"default"}},
		{name: "internal", cfg: bridge.NetworkConfig{IPv4: v4net, Internal: true},
			host: []string{"inet 172.18.0.1/16 dev br0"}, notInBox: []string{"default"}},
		{name: "no-icc", cfg: bridge.NetworkConfig{IPv4: v4net, DisableICC: true},
			host: []string{"master br0 hairpin isolated"}},
		{name: "snat", cfg: bridge.NetworkConfig{IPv4: v4net, HostIPv4: netip.MustParseAddr("192.0.2.1")},
			host: []string{`"br0" : 192.0.2.1`}},
		{name: "mtu", cfg: bridge.NetworkConfig{IPv4: v4net, MTU: 1400},
			host: []string{"br0: <bridge> UP mtu 1400"}, sandbox: []string{"eth0: <veth> UP mtu 1400"}},
		{name: "ipv6-only", cfg: bridge.NetworkConfig{IPv6: v6net},
			sandbox: []string{"inet6 fd18::2/64 dev eth0", "default via fd18::1"}, notInBox: []string{"inet 172"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, bridge.Options{})
			box := f.sandbox("c1")
			empty := f.settled()
			tc.cfg.Name = "br0"
			n := f.network(tc.cfg)
			if n.Config() != tc.cfg || n.Adopted() || n.BridgeIndex() == 0 || n.Group() == 0 {
				t.Errorf("network %+v adopted=%v index=%d group=%#x", n.Config(), n.Adopted(), n.BridgeIndex(), n.Group())
			}
			e := f.attach(n, bridge.EndpointConfig{NetNS: box})
			host, sb := f.k.DumpNS(""), f.k.DumpNS(box)
			has(t, host, "alias nlbridge/1 net", "alias nlbridge/1 ep id="+e.ID())
			has(t, host, tc.host...)
			lacks(t, host, tc.notHost...)
			has(t, sb, tc.sandbox...)
			lacks(t, sb, tc.notInBox...)
			if err := n.Delete(f.ctx); err != nil {
				t.Fatal(err)
			}
			after := f.settled()
			same(t, "after delete", noResidue(after), noResidue(empty))
		})
	}
}

// strip drops the lines containing any of the words.
func strip(s string, words ...string) string {
	var out []string
next:
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				continue next
			}
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// noResidue strips what stays after a teardown by design: sysctls (the
// kernel has no "unset") and lo, which attach brings up in the sandbox.
func noResidue(s string) string { return strip(s, "sysctl", "lo: <loopback>") }

// CreateNetwork of an existing network: the same config returns it, a
// different one is ErrConflict naming the field; overlapping subnets and
// bad input are refused without touching the kernel.
func TestFakeCreateNetworkChecks(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	again, err := f.d.CreateNetwork(f.ctx, bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	if err != nil || again != n {
		t.Fatalf("same config again: %v, %v (want the same network)", again, err)
	}
	before := f.k.Dump()
	_, err = f.d.CreateNetwork(f.ctx, bridge.NetworkConfig{Name: "br0", IPv4: v4net, MTU: 1400})
	isErr(t, err, bridge.ErrConflict)
	field(t, err, "MTU")
	_, err = f.d.CreateNetwork(f.ctx, bridge.NetworkConfig{Name: "br1", IPv4: netip.MustParsePrefix("172.18.5.1/24")})
	isErr(t, err, bridge.ErrConflict)
	field(t, err, "IPv4")
	for _, bad := range []bridge.NetworkConfig{
		{Name: ""}, {Name: "a-name-much-too-long"}, {Name: "br2", MTU: 20},
		{Name: "br2", IPv4: netip.MustParsePrefix("fd00::1/64")},
		{Name: "br2", GatewayModeIPv4: 9}, {Name: "br2", HostIPv4: netip.MustParseAddr("fd00::1")},
	} {
		_, err := f.d.CreateNetwork(f.ctx, bad)
		isErr(t, err, bridge.ErrInvalid)
	}
	if got := f.k.Dump(); got != before {
		t.Errorf("refused creates changed the kernel:\n%s", got)
	}
	if nets := f.d.Networks(); len(nets) != 1 || nets[0] != n {
		t.Errorf("Networks() = %v", nets)
	}
	if got, ok := f.d.Network("br0"); !ok || got != n {
		t.Errorf("Network(br0) = %v, %v", got, ok)
	}
}

// A bridge someone else made is adopted: used, never deleted; Delete
// takes only what the network added (its addresses and record).
func TestFakeAdoptBridge(t *testing.T) {
	f := newFake(t, bridge.Options{})
	c, err := f.k.Dial("", unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := link.CreateBridge(c, link.BridgeSpec{Name: "docker0"}); err != nil {
		t.Fatal(err)
	}
	box := f.sandbox("c1")
	before := f.settled()
	n := f.network(bridge.NetworkConfig{Name: "docker0", IPv4: v4net})
	if !n.Adopted() {
		t.Fatal("an existing bridge without our record was not adopted")
	}
	f.attach(n, bridge.EndpointConfig{NetNS: box})
	has(t, f.k.DumpNS(""), "inet 172.18.0.1/16 dev docker0", "alias nlbridge/1 net v4=172.18.0.1/16 adopted=1")
	if err := n.Delete(f.ctx); err != nil {
		t.Fatal(err)
	}
	after := f.settled()
	has(t, after, "docker0: <bridge> UP")
	same(t, "after deleting the adopted network", noResidue(after), noResidue(before))

	// A device of another kind with the name is a conflict.
	_, err = f.d.CreateNetwork(f.ctx, bridge.NetworkConfig{Name: "lo"})
	isErr(t, err, bridge.ErrConflict)
}

// NoFirewall: no tables, no ports; IPv4-only endpoints get IPv6 off by
// sysctl instead of the guard.
func TestFakeNoFirewall(t *testing.T) {
	f := newFake(t, bridge.Options{NoFirewall: true})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	box := f.sandbox("c1")
	_, err := n.Attach(f.ctx, bridge.EndpointConfig{NetNS: box, Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 80, ContainerPort: 80}}})
	isErr(t, err, bridge.ErrInvalid)
	field(t, err, "Ports")
	f.attach(n, bridge.EndpointConfig{NetNS: box})
	lacks(t, f.k.Dump(), "table ")
	has(t, f.k.DumpNS(box), "sysctl net.ipv6.conf.eth0.disable_ipv6 = 1")
}

// Operations on a closed driver are ErrClosed.
func TestFakeClosed(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	box := f.sandbox("c1")
	if err := f.d.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := f.d.CreateNetwork(f.ctx, bridge.NetworkConfig{Name: "br1"})
	isErr(t, err, bridge.ErrClosed)
	_, err = n.Attach(f.ctx, bridge.EndpointConfig{NetNS: box})
	isErr(t, err, bridge.ErrClosed)
	if err := f.d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// A missing namespace path is ErrInvalid naming NetNS, for Open too.
func TestFakeMissingNamespace(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	before := f.k.Dump()
	_, err := n.Attach(f.ctx, bridge.EndpointConfig{NetNS: "/run/netns/none"})
	isErr(t, err, bridge.ErrInvalid)
	field(t, err, "NetNS")
	if f.k.Dump() != before {
		t.Error("a refused attach changed the kernel")
	}
	_, err = bridge.Open(f.ctx, bridge.Options{Kernel: f.k, NetNS: "/run/netns/none"})
	isErr(t, err, bridge.ErrInvalid)
	field(t, err, "NetNS")
	_ = bridgetest.HostNS
}
