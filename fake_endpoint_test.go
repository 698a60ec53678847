package bridge_test

import (
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/addr"
	"github.com/nlbridge/bridge/bridgetest"
	"github.com/nlbridge/bridge/internal/nl"
	"golang.org/x/sys/unix"
)

// What an endpoint's config sets, as the kernel shows it.
func TestFakeAttachConfig(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net, IPv6: v6net})
	box := f.sandbox("c1")
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	e := f.attach(n, bridge.EndpointConfig{ID: "web", NetNS: box, IfName: "app0", MAC: mac,
		IPv4: netip.MustParsePrefix("172.18.0.9/16"), IPv6: netip.MustParsePrefix("fd18::9/64"),
		Sysctls: []string{"net.ipv4.conf.IFNAME.arp_notify=1"}, RouteMetric: 50})
	if e.ID() != "web" || e.NetNS() != box || e.IfName() != "app0" || e.MAC().String() != mac.String() ||
		e.IPv4().String() != "172.18.0.9/16" || e.IPv6().String() != "fd18::9/64" || e.Network() != n ||
		e.IfIndex() == 0 || !strings.HasPrefix(e.HostIfName(), "veth") || e.HostIfIndex() == 0 {
		t.Errorf("endpoint %s %s %s %s %s %s %d %s %d", e.ID(), e.NetNS(), e.IfName(), e.MAC(), e.IPv4(), e.IPv6(),
			e.IfIndex(), e.HostIfName(), e.HostIfIndex())
	}
	has(t, f.k.DumpNS(box), "app0: <veth> UP mtu 1500 link/ether 02:00:00:00:00:99",
		"inet 172.18.0.9/16 dev app0", "inet6 fd18::9/64 dev app0",
		"default via 172.18.0.1 dev app0 metric 50", "default via fd18::1 dev app0 metric 50",
		"sysctl net.ipv4.conf.app0.arp_notify = 1")
	has(t, f.k.DumpNS(""), e.HostIfName()+": <veth> UP mtu 1500 master br0",
		"ep id=web if=app0 ns="+box+" mac=020000000099 v4=172.18.0.9 v6=fd18::9",
		`"`+e.HostIfName()+`" . 02:00:00:00:00:99`, `"`+e.HostIfName()+`" . 172.18.0.9`)
	if got, ok := n.Endpoint("web"); !ok || got != e {
		t.Errorf("Endpoint(web) = %v, %v", got, ok)
	}
	if eps := n.Endpoints(); len(eps) != 1 || eps[0] != e {
		t.Errorf("Endpoints() = %v", eps)
	}

	// A second network in the sandbox: the next free eth<N> (eth0 here),
	// the next free address, and no second default route.
	n2 := f.network(bridge.NetworkConfig{Name: "br1", IPv4: netip.MustParsePrefix("10.1.0.1/24")})
	n3 := f.network(bridge.NetworkConfig{Name: "br2", IPv4: netip.MustParsePrefix("10.2.0.1/24")})
	e2 := f.attach(n2, bridge.EndpointConfig{NetNS: box})
	f.attach(n3, bridge.EndpointConfig{NetNS: f.sandbox("c9")}) // takes 10.2.0.2
	e3 := f.attach(n3, bridge.EndpointConfig{NetNS: box})
	if e2.IfName() != "eth0" || e3.IfName() != "eth1" || e2.IPv4().String() != "10.1.0.2/24" || e3.IPv4().String() != "10.2.0.3/24" {
		t.Errorf("second and third: %s %s, %s %s", e2.IfName(), e2.IPv4(), e3.IfName(), e3.IPv4())
	}
	if e2.MAC().String() != "02:42:0a:01:00:02" {
		t.Errorf("MAC %s, want 02:42 and the IPv4 address", e2.MAC())
	}
	sb := f.k.DumpNS(box)
	lacks(t, sb, "default via 10.1.0.1")
	has(t, sb, "10.1.0.0/24 dev eth0 proto kernel", "10.2.0.0/24 dev eth1 proto kernel")
}

// Claims within a network: an ID, address or MAC in use, a taken name,
// a subnet the sandbox already routes; bad input. Each is refused with
// its kind and field, leaving the kernel as it was.
func TestFakeAttachRefused(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	other := f.network(bridge.NetworkConfig{Name: "br1", IPv4: netip.MustParsePrefix("10.1.0.1/24")})
	box, box2 := f.sandbox("c1"), f.sandbox("c2")
	f.attach(n, bridge.EndpointConfig{ID: "a", NetNS: box, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}})
	f.attach(other, bridge.EndpointConfig{NetNS: box2})
	longBox := f.sandbox(strings.Repeat("n", 120))
	longID := strings.Repeat("i", 128)
	tcp := func(port uint16) bridge.PortMapping {
		return bridge.PortMapping{Proto: bridge.TCP, ContainerPort: port}
	}
	before := f.settled()
	for _, tc := range []struct {
		name  string
		cfg   bridge.EndpointConfig
		kind  error
		field string
		on    *bridge.Network // nil = n
	}{
		{"id", bridge.EndpointConfig{ID: "a", NetNS: box2}, bridge.ErrExists, "ID", nil},
		{"address", bridge.EndpointConfig{NetNS: box2, IPv4: netip.MustParsePrefix("172.18.0.2/16")}, bridge.ErrConflict, "IPv4", nil},
		{"mac", bridge.EndpointConfig{NetNS: box2, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}}, bridge.ErrConflict, "MAC", nil},
		{"ifname", bridge.EndpointConfig{NetNS: box, IfName: "eth0"}, bridge.ErrConflict, "IfName", other},
		{"gateway", bridge.EndpointConfig{NetNS: box2, IPv4: v4net}, bridge.ErrInvalid, "IPv4", nil},
		{"subnet", bridge.EndpointConfig{NetNS: box2, IPv4: netip.MustParsePrefix("10.0.0.2/8")}, bridge.ErrInvalid, "IPv4", nil},
		{"no-v6", bridge.EndpointConfig{NetNS: box2, IPv6: netip.MustParsePrefix("fd00::2/64")}, bridge.ErrInvalid, "IPv6", nil},
		{"netns", bridge.EndpointConfig{}, bridge.ErrInvalid, "NetNS", nil},
		{"long-id", bridge.EndpointConfig{NetNS: box2, ID: strings.Repeat("x", 200)}, bridge.ErrInvalid, "ID", nil},
		{"name", bridge.EndpointConfig{NetNS: box2, IfName: "a/b"}, bridge.ErrInvalid, "IfName", nil},
		{"sysctl", bridge.EndpointConfig{NetNS: box2, Sysctls: []string{"kernel.panic=1"}}, bridge.ErrInvalid, "Sysctls", nil},
		{"mac-multicast", bridge.EndpointConfig{NetNS: box2, MAC: net.HardwareAddr{1, 0, 0, 0, 0, 1}}, bridge.ErrInvalid, "MAC", nil},
		{"advertise", bridge.EndpointConfig{NetNS: box2, Advertise: &bridge.Advertise{Count: 9}}, bridge.ErrInvalid, "Advertise.Count", nil},
		{"port-proto", bridge.EndpointConfig{NetNS: box2, Ports: []bridge.PortMapping{{Proto: 1, ContainerPort: 80}}}, bridge.ErrInvalid, "Ports[0].Proto", nil},
		{"port-range", bridge.EndpointConfig{NetNS: box2, Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 90, HostPortEnd: 80, ContainerPort: 80}}}, bridge.ErrInvalid, "Ports[0].HostPortEnd", nil},
		{"port-zero", bridge.EndpointConfig{NetNS: box2, Ports: []bridge.PortMapping{{Proto: bridge.TCP}}}, bridge.ErrInvalid, "Ports[0].ContainerPort", nil},
		{"record-id", bridge.EndpointConfig{NetNS: longBox, ID: longID}, bridge.ErrInvalid, "ID", nil},
		{"record-ports", bridge.EndpointConfig{NetNS: box2, ID: longID, Ports: []bridge.PortMapping{tcp(80), tcp(81), tcp(82)}}, bridge.ErrInvalid, "Ports", nil},
		{"port-family", bridge.EndpointConfig{NetNS: box2, Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostIP: netip.MustParseAddr("fd00::1"), ContainerPort: 80}}}, bridge.ErrInvalid, "Ports[0]", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg.Advertise == nil {
				tc.cfg.Advertise = &bridge.Advertise{}
			}
			on := n
			if tc.on != nil {
				on = tc.on
			}
			_, err := on.Attach(f.ctx, tc.cfg)
			isErr(t, err, tc.kind)
			field(t, err, tc.field)
			same(t, "after a refused attach", f.settled(), before)
		})
	}

	// The sandbox already routes the subnet (an address of its own on lo).
	c, err := f.k.Dial(box2, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := nl.Exec(c, addr.AddMsg(1, netip.MustParsePrefix("10.5.0.9/16"))); err != nil {
		t.Fatal(err)
	}
	n3 := f.network(bridge.NetworkConfig{Name: "br3", IPv4: netip.MustParsePrefix("10.5.0.1/16")})
	_, err = n3.Attach(f.ctx, bridge.EndpointConfig{NetNS: box2, Advertise: &bridge.Advertise{}})
	isErr(t, err, bridge.ErrConflict)
	field(t, err, "IPv4")
}

// Published ports: fixed, UDP, ranges, a host address, ephemeral, routed;
// in the firewall's maps, held by sockets, and gone after Detach.
func TestFakePorts(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net, IPv6: v6net})
	box := f.sandbox("c1")
	before := f.settled()
	e := f.attach(n, bridge.EndpointConfig{NetNS: box, Ports: []bridge.PortMapping{
		{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80},
		{Proto: bridge.UDP, HostIP: netip.IPv4Unspecified(), HostPort: 5353, ContainerPort: 53},
		{Proto: bridge.TCP, HostIP: netip.MustParseAddr("192.0.2.7"), HostPort: 443, ContainerPort: 443},
	}})
	box3 := f.sandbox("c3")
	e3 := f.attach(n, bridge.EndpointConfig{NetNS: box3, Ports: []bridge.PortMapping{
		{Proto: bridge.TCP, HostPort: 9000, HostPortEnd: 9010, ContainerPort: 90},
		{Proto: bridge.TCP, ContainerPort: 22},
	}})
	host := f.k.DumpNS("")
	has(t, host, "tcp . 8080 : 172.18.0.2 . 80", "tcp . 8080 : fd18::2 . 80", "udp . 5353 : 172.18.0.2 . 53",
		"tcp . 9000 : 172.18.0.3 . 90", "tcp . 9000 : fd18::3 . 90", "192.0.2.7 . tcp . 443 : 172.18.0.2 . 443",
		"bound tcp 0.0.0.0:8080", "bound tcp [::]:8080", "bound udp 0.0.0.0:5353", "bound tcp 192.0.2.7:443",
		"p=tcp/0.0.0.0/8080/80")
	lacks(t, host, "bound udp [::]:5353")
	if ports := e.Ports(); len(ports) != 4 {
		t.Errorf("Ports() = %v, want 4 (8080 on both families, 5353 and 443 on IPv4)", ports)
	}
	ports := e3.Ports()
	if len(ports) != 4 || ports[0].HostPort != 9000 || ports[1].HostPort != 9000 || ports[2].HostPort < 32768 || ports[3].HostPort != ports[2].HostPort {
		t.Errorf("Ports() = %v: want 9000 for both families, then one ephemeral port for both", ports)
	}
	if s := (bridge.PortMapping{Proto: bridge.TCP, HostPort: 1, HostPortEnd: 2, ContainerPort: 3}).String(); s != "tcp *:1-2->3" {
		t.Errorf("String() = %q", s)
	}

	// Taken: by this endpoint, and by a host process.
	box2 := f.sandbox("c2")
	_, err := n.Attach(f.ctx, bridge.EndpointConfig{NetNS: box2, Advertise: &bridge.Advertise{},
		Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}})
	isErr(t, err, bridge.ErrConflict)
	field(t, err, "Ports[0]")
	release, err := f.k.HoldPort("", unix.IPPROTO_TCP, netip.MustParseAddrPort("0.0.0.0:7000"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = n.Attach(f.ctx, bridge.EndpointConfig{NetNS: box2, Advertise: &bridge.Advertise{},
		Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 7000, ContainerPort: 80}}})
	isErr(t, err, bridge.ErrConflict)
	release()

	if err := f.d.Detach(f.ctx, e, e3); err != nil {
		t.Fatal(err)
	}
	same(t, "after detach", noResidue(strip(f.settled(), "netns", "/run/netns/")), noResidue(strip(before, "netns", "/run/netns/")))
	if r, err := f.k.HoldPort("", unix.IPPROTO_TCP, netip.MustParseAddrPort("0.0.0.0:8080")); err != nil {
		t.Errorf("port 8080 still held after detach: %v", err)
	} else {
		r()
	}
}

// Routed mode publishes the container's own address and port.
func TestFakeRoutedPorts(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net, GatewayModeIPv4: bridge.Routed})
	e := f.attach(n, bridge.EndpointConfig{NetNS: f.sandbox("c1"), Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}})
	has(t, f.k.DumpNS(""), "172.18.0.2 . tcp . 80", `set routed4 {`)
	lacks(t, f.k.DumpNS(""), "bound tcp")
	if p := e.Ports(); len(p) != 1 || p[0].HostIP.String() != "172.18.0.2" || p[0].HostPort != 80 {
		t.Errorf("Ports() = %v", p)
	}
}

// NoPortHolds: no sockets; a host process on the port is no conflict,
// another endpoint's port still is.
func TestFakeNoPortHolds(t *testing.T) {
	f := newFake(t, bridge.Options{NoPortHolds: true})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	release, err := f.k.HoldPort("", unix.IPPROTO_TCP, netip.MustParseAddrPort("0.0.0.0:8080"))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	ports := []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}, {Proto: bridge.UDP, ContainerPort: 53}}
	e := f.attach(n, bridge.EndpointConfig{NetNS: f.sandbox("c1"), Ports: ports})
	host := f.k.DumpNS("")
	has(t, host, "tcp . 8080 : 172.18.0.2 . 80", "bound tcp 0.0.0.0:8080")
	lacks(t, host, "bound udp")
	if p := e.Ports(); len(p) != 2 || p[1].HostPort == 0 {
		t.Errorf("Ports() = %v", p)
	}
	_, err = n.Attach(f.ctx, bridge.EndpointConfig{NetNS: f.sandbox("c2"), Advertise: &bridge.Advertise{}, Ports: ports[:1]})
	isErr(t, err, bridge.ErrConflict)
}

// Detach cuts the endpoint off at once (elements, conntrack, sandbox
// end down and renamed) and deletes the pair soon after; it is
// idempotent and works with the sandbox gone.
func TestFakeDetach(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net, IPv6: v6net})
	box, box2 := f.sandbox("c1"), f.sandbox("c2")
	before := f.settled()
	e := f.attach(n, bridge.EndpointConfig{NetNS: box})
	if err := e.Detach(f.ctx); err != nil {
		t.Fatal(err)
	}
	sb := f.k.DumpNS(box)
	if !strings.Contains(sb, ": nlbd") && !slices.Equal(f.links(box), []string{"lo"}) {
		t.Errorf("sandbox end neither retired nor deleted:\n%s", sb)
	}
	lacks(t, sb, "eth0", "inet 172.18.0.2", "inet6 fd18::2")
	has(t, strings.Join(f.k.Flushes(""), "\n"), "flush reply src 172.18.0.2", "flush orig src 172.18.0.2",
		"flush reply src fd18::2", "flush orig src fd18::2")
	eventually(t, "the reclaimer to delete the pair", func() bool { return len(f.links(box)) == 1 })
	same(t, "after detach", noResidue(f.settled()), noResidue(before))
	if err := e.Detach(f.ctx); err != nil {
		t.Errorf("second detach: %v", err)
	}
	if len(n.Endpoints()) != 0 {
		t.Errorf("detached endpoint still listed")
	}

	// Several at once, one of them with its sandbox gone.
	a := f.attach(n, bridge.EndpointConfig{NetNS: box})
	b := f.attach(n, bridge.EndpointConfig{NetNS: box2})
	if err := f.k.RemoveNS(box2); err != nil {
		t.Fatal(err)
	}
	if err := f.d.Detach(f.ctx, a, b); err != nil {
		t.Fatal(err)
	}
	same(t, "after detaching both", noResidue(strip(f.settled(), "netns "+box2)), noResidue(strip(before, "netns "+box2)))

	isErr(t, f.d.Detach(f.ctx, nil), bridge.ErrInvalid)
	g := newFake(t, bridge.Options{})
	gn := g.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	ge := g.attach(gn, bridge.EndpointConfig{NetNS: g.sandbox("c1")})
	isErr(t, f.d.Detach(f.ctx, ge), bridge.ErrInvalid)
}

// Delete takes the network's endpoints with it; an attach racing it
// fails with ErrClosed.
func TestFakeDeleteWithEndpoints(t *testing.T) {
	f := newFake(t, bridge.Options{})
	box := f.sandbox("c1")
	before := f.settled()
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	e := f.attach(n, bridge.EndpointConfig{NetNS: box, Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}})
	if err := n.Delete(f.ctx); err != nil {
		t.Fatal(err)
	}
	same(t, "after delete", noResidue(f.settled()), noResidue(before))
	if err := e.Detach(f.ctx); err != nil {
		t.Errorf("detach after delete: %v", err)
	}
	if err := n.Delete(f.ctx); err != nil {
		t.Errorf("second delete: %v", err)
	}
	_, err := n.Attach(f.ctx, bridge.EndpointConfig{NetNS: box, Advertise: &bridge.Advertise{}})
	isErr(t, err, bridge.ErrClosed)
}

// Announcements: the first before Attach returns, the rest in the
// background; Detach stops them.
func TestFakeAnnouncements(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net, IPv6: v6net})
	box := f.sandbox("c1")
	e := f.attach(n, bridge.EndpointConfig{NetNS: box, Advertise: &bridge.Advertise{Count: 2, Interval: 100 * time.Millisecond}})
	want := []string{"172.18.0.2 at 02:42:ac:12:00:02 on eth0", "fd18::2 at 02:42:ac:12:00:02 on eth0"}
	eventually(t, "two rounds of announcements", func() bool { return len(f.k.Announcements(box)) == 4 })
	if got := f.k.Announcements(box); !slices.Equal(got[:2], want) || !slices.Equal(got[2:], want) {
		t.Errorf("announcements %q", got)
	}
	e2 := f.attach(n, bridge.EndpointConfig{NetNS: f.sandbox("c2"), Advertise: &bridge.Advertise{Count: 3, Interval: 2 * time.Second}})
	if err := e2.Detach(f.ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.k.Announcements("/run/netns/c2"); len(got) != 2 {
		t.Errorf("announcements after detach: %q, want only the first round", got)
	}
	_ = e
}

// A background announcement the kernel refuses is logged, and the rest
// are not sent; a changed MAC stops them quietly.
func TestFakeAnnouncementErrors(t *testing.T) {
	var log syncBuffer
	f := newFake(t, bridge.Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	every := &bridge.Advertise{Count: 3, Interval: 100 * time.Millisecond}
	box := f.sandbox("c1")
	f.attach(n, bridge.EndpointConfig{NetNS: box, Advertise: every})
	f.k.FailNext(bridgetest.Fault{Type: unix.RTM_GETLINK, NetNS: box, Errno: unix.ENOBUFS})
	eventually(t, "the refused announcement in the log", func() bool { return strings.Contains(log.String(), "announcement") })
	if got := f.k.Announcements(box); len(got) != 1 {
		t.Errorf("announcements %q, want only the first (the second was refused, the third not sent)", got)
	}
	if !strings.Contains(log.String(), "no buffer space") {
		t.Errorf("log %q lacks the kernel's error", log.String())
	}

	box2 := f.sandbox("c2")
	e := f.attach(n, bridge.EndpointConfig{NetNS: box2, Advertise: every})
	c, err := f.k.Dial(box2, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, _ := (&rtnetlink.LinkMessage{Index: e.IfIndex(), Attributes: &rtnetlink.LinkAttributes{Address: net.HardwareAddr{2, 0, 0, 0, 0, 9}}}).MarshalBinary()
	if _, err := nl.Exec(c, netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK, Flags: nl.Change}, Data: b}); err != nil {
		t.Fatal(err)
	}
	before := log.String()
	var mu sync.Mutex
	reads := 0 // the announcer's MAC checks, seen by a fault that never fires
	f.k.FailNext(bridgetest.Fault{Type: unix.RTM_GETLINK, NetNS: box2, Match: func(netlink.Message) bool {
		mu.Lock()
		reads++
		mu.Unlock()
		return false
	}})
	eventually(t, "the next announcement's MAC check", func() bool { mu.Lock(); defer mu.Unlock(); return reads > 0 })
	if err := e.Detach(f.ctx); err != nil { // waits until no announcement can be sent
		t.Fatal(err)
	}
	if got := f.k.Announcements(box2); len(got) != 1 {
		t.Errorf("announcements after the MAC changed: %q", got)
	}
	if log.String() != before {
		t.Errorf("a changed MAC was logged: %s", strings.TrimPrefix(log.String(), before))
	}
}

// A subnet with no free host address left is ErrConflict on the field.
func TestFakeSubnetFull(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: netip.MustParsePrefix("10.9.0.1/30")})
	if e := f.attach(n, bridge.EndpointConfig{NetNS: f.sandbox("c1")}); e.IPv4().String() != "10.9.0.2/30" {
		t.Errorf("got %s", e.IPv4())
	}
	_, err := n.Attach(f.ctx, bridge.EndpointConfig{NetNS: f.sandbox("c2"), Advertise: &bridge.Advertise{}})
	isErr(t, err, bridge.ErrConflict)
	field(t, err, "IPv4")
}
