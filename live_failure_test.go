package bridge_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/internal/testenv"
	"github.com/nlbridge/bridge/nsutil"
)

// hostHoldsOnly fails unless the host namespace has exactly these devices.
func hostHoldsOnly(t *testing.T, host *nsutil.NS, names ...string) {
	t.Helper()
	got := testenv.Links(t, host)
	slices.Sort(got)
	want := append([]string{"lo"}, names...)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("host devices = %v, want %v", got, want)
	}
}

func wantErr(t *testing.T, err error, kind error, field string) {
	t.Helper()
	var e *bridge.Error
	if !errors.As(err, &e) || !errors.Is(err, kind) || e.Field != field {
		t.Fatalf("err = %v, want %v on field %q", err, kind, field)
	}
}

func TestLiveFailedAttachLeavesNothing(t *testing.T) {
	d, host := hostDriver(t)
	n := createNetwork(t, d, dual)
	sb := testenv.NetNS(t, "sb")
	good := attach(t, n, bridge.EndpointConfig{NetNS: testenv.NetNS(t, "other").Path(),
		IPv4: netip.MustParsePrefix("172.29.0.9/24"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}})

	cases := []struct {
		name  string
		cfg   bridge.EndpointConfig
		kind  error
		field string
	}{
		{"not a netns", bridge.EndpointConfig{NetNS: "/proc/self/status"}, bridge.ErrInvalid, "NetNS"},
		{"missing netns", bridge.EndpointConfig{NetNS: "/run/netns/nlbt-does-not-exist"}, bridge.ErrInvalid, "NetNS"},
		{"address taken", bridge.EndpointConfig{NetNS: sb.Path(), IPv4: good.IPv4()}, bridge.ErrConflict, "IPv4"},
		{"MAC taken", bridge.EndpointConfig{NetNS: sb.Path(), MAC: good.MAC()}, bridge.ErrConflict, "MAC"},
		{"sysctl fails in kernel", bridge.EndpointConfig{NetNS: sb.Path(),
			Sysctls: []string{"net.ipv4.conf.IFNAME.no_such_key=1"}}, os.ErrNotExist, "Sysctls"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := n.Attach(ctx, tc.cfg)
			wantErr(t, err, tc.kind, tc.field)
			testenv.OnlyLoopback(t, sb)
			hostHoldsOnly(t, host, "nlbt0", good.HostIfName())
		})
	}

	// A sandbox route that overlaps the subnet, and an interface name that
	// is taken: refused, and the sandbox keeps exactly what it had.
	testenv.IP(t, sb, "link", "add", "eth0", "type", "bridge")
	testenv.IP(t, sb, "addr", "add", "172.29.0.200/25", "dev", "eth0")
	testenv.IP(t, sb, "link", "set", "eth0", "up")
	before := testenv.IP(t, sb, "addr") + testenv.IP(t, sb, "route") + testenv.IP(t, sb, "-6", "route")
	_, err := n.Attach(ctx, bridge.EndpointConfig{NetNS: sb.Path()})
	wantErr(t, err, bridge.ErrConflict, "IPv4")
	testenv.IP(t, sb, "addr", "flush", "dev", "eth0")
	before = testenv.IP(t, sb, "addr") + testenv.IP(t, sb, "route") + testenv.IP(t, sb, "-6", "route")
	_, err = n.Attach(ctx, bridge.EndpointConfig{NetNS: sb.Path(), IfName: "eth0"})
	wantErr(t, err, bridge.ErrConflict, "IfName")
	if after := testenv.IP(t, sb, "addr") + testenv.IP(t, sb, "route") + testenv.IP(t, sb, "-6", "route"); after != before {
		t.Errorf("sandbox changed by a failed attach:\n%s\nvs\n%s", before, after)
	}
	hostHoldsOnly(t, host, "nlbt0", good.HostIfName())

	// With the name chosen automatically, the next free one is used.
	ep := attach(t, n, bridge.EndpointConfig{NetNS: sb.Path()})
	if ep.IfName() != "eth1" {
		t.Errorf("automatic name = %q, want eth1 (eth0 is taken)", ep.IfName())
	}
}

func TestLiveNetworkConflicts(t *testing.T) {
	d, host := hostDriver(t)
	first := createNetwork(t, d, dual)
	// The same config again returns the network; a different one names
	// the field that differs.
	again, err := d.CreateNetwork(ctx, dual)
	if err != nil || again != first {
		t.Fatalf("CreateNetwork(same config) = %p, %v; want the existing network %p", again, err, first)
	}
	other := dual
	other.MTU = 1400
	_, err = d.CreateNetwork(ctx, other)
	wantErr(t, err, bridge.ErrConflict, "MTU")
	_, err = d.CreateNetwork(ctx, bridge.NetworkConfig{Name: "nlbt9", IPv4: netip.MustParsePrefix("172.29.0.129/25")})
	wantErr(t, err, bridge.ErrConflict, "IPv4")
	_, err = d.CreateNetwork(ctx, bridge.NetworkConfig{Name: "nlbt9", IPv6: netip.MustParsePrefix("fd29::1:1/112")})
	wantErr(t, err, bridge.ErrConflict, "IPv6")

	// A device of another kind under the name.
	testenv.IP(t, host, "link", "add", "nlbtveth", "type", "veth", "peer", "name", "nlbtveth2")
	_, err = d.CreateNetwork(ctx, bridge.NetworkConfig{Name: "nlbtveth"})
	wantErr(t, err, bridge.ErrConflict, "Name")
	testenv.IP(t, host, "link", "del", "nlbtveth")
	hostHoldsOnly(t, host, "nlbt0")
}

func TestLiveAdoptedBridgeIsKept(t *testing.T) {
	d, host := hostDriver(t)
	testenv.IP(t, host, "link", "add", "nlbtext", "type", "bridge")
	t.Cleanup(func() { testenv.IP(t, host, "link", "del", "nlbtext") })

	// A different IPv4 address already on it is a conflict, and changes nothing.
	testenv.IP(t, host, "addr", "add", "10.99.0.1/24", "dev", "nlbtext")
	_, err := d.CreateNetwork(ctx, bridge.NetworkConfig{Name: "nlbtext", IPv4: netip.MustParsePrefix("10.98.0.1/24")})
	wantErr(t, err, bridge.ErrConflict, "IPv4")
	if out := testenv.IP(t, host, "addr", "show", "nlbtext"); strings.Contains(out, "10.98.0.1") {
		t.Errorf("failed adopt left an address:\n%s", out)
	}
	testenv.IP(t, host, "addr", "flush", "dev", "nlbtext")

	n, err := d.CreateNetwork(ctx, bridge.NetworkConfig{Name: "nlbtext", IPv4: netip.MustParsePrefix("10.98.0.1/24")})
	if err != nil {
		t.Fatal(err)
	}
	if !n.Adopted() {
		t.Error("Adopted() = false for a bridge made by someone else")
	}
	sb := testenv.NetNS(t, "sb")
	ep, err := n.Attach(ctx, bridge.EndpointConfig{NetNS: sb.Path()})
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.Ping(sb, netip.MustParseAddr("10.98.0.1"), timeout); err != nil {
		t.Error(err)
	}
	if err := n.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ep.Detach(ctx); err != nil {
		t.Errorf("Detach after Delete: %v", err)
	}
	hostHoldsOnly(t, host, "nlbtext")
	if out := testenv.IP(t, host, "addr", "show", "nlbtext"); strings.Contains(out, "10.98.0.1") {
		t.Errorf("Delete left our address on the adopted bridge:\n%s", out)
	}
	testenv.OnlyLoopback(t, sb)
}

func TestLiveOwnBridgeIsRecognisedAfterRestart(t *testing.T) {
	d, host := hostDriver(t)
	cfg := bridge.NetworkConfig{Name: "nlbt0", IPv4: netip.MustParsePrefix("172.29.0.1/24")}
	n1, err := d.CreateNetwork(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sb := testenv.NetNS(t, "sb")
	if _, err := n1.Attach(ctx, bridge.EndpointConfig{NetNS: sb.Path()}); err != nil {
		t.Fatal(err)
	}
	// A second driver (as after a crash) finds the bridge, keeps its group,
	// and its Delete removes the bridge and the stale endpoint.
	d2, err := bridge.Open(ctx, bridge.Options{NetNS: host.Path()})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	n2, err := d2.CreateNetwork(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n2.Adopted() || n2.Group() != n1.Group() {
		t.Errorf("adopted=%v group %#x, want ours with group %#x", n2.Adopted(), n2.Group(), n1.Group())
	}
	if err := n2.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	hostHoldsOnly(t, host)
	testenv.OnlyLoopback(t, sb)
}
