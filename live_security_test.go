package bridge_test

import (
	"context"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/disco"
	"github.com/nlbridge/bridge/internal/kern"
	"github.com/nlbridge/bridge/internal/testenv"
	"github.com/nlbridge/bridge/nsutil"
)

// The attacks of issue 10, each by a hostile sandbox (root in its own
// namespace) or outside host, with real packets. Each is shown blocked, and
// getting through with the protection off.

var (
	loopback = netip.MustParseAddr("127.0.0.1")
	gw4      = dual.IPv4.Addr()
	gw6      = dual.IPv6.Addr()
)

// quiet: no announcements, which would repair the caches under attack.
var quiet = &bridge.Advertise{}

// deleteRule deletes the rule of chain (in the inet table) that contains
// match, turning that protection off until the test ends. The driver
// would put it back within milliseconds (see watchFirewall), so the test
// holds the host lock, as another process would, until its cleanups run.
func deleteRule(t *testing.T, host *nsutil.NS, chain, match string) {
	t.Helper()
	lock, err := kern.Real{}.Lock(context.Background(), host.ID())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() }) // before the detaches and deletes, which need it
	out := testenv.Nft(t, host, "-a", "list", "chain", "inet", "nlbridge", chain)
	m := regexp.MustCompile(regexp.QuoteMeta(match) + `.* # handle (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no rule %q in chain %s:\n%s", match, chain, out)
	}
	testenv.Nft(t, host, "delete", "rule", "inet", "nlbridge", chain, "handle", m[1])
}

// routeLoopbackVia makes ns send 127.0.0.1 to gw: its own 127.0.0.1 gone,
// a route via gw, and replies from 127.0.0.1 accepted on dev.
func routeLoopbackVia(t *testing.T, ns *nsutil.NS, gw netip.Addr, dev string) {
	t.Helper()
	testenv.IP(t, ns, "addr", "del", "127.0.0.1/8", "dev", "lo")
	testenv.IP(t, ns, "route", "add", "127.0.0.1/32", "via", gw.String())
	if err := ns.WriteSysctls(nsutil.Sysctl{Key: "net.ipv4.conf." + dev + ".route_localnet", Value: "1"}); err != nil {
		t.Fatal(err)
	}
}

func TestLiveLoopbackFromSandbox(t *testing.T) {
	d, host, _ := fwEnv(t)
	n := createNetwork(t, d, dual)
	sb := testenv.NetNS(t, "sb")
	attach(t, n, bridge.EndpointConfig{NetNS: sb.Path()})
	testenv.Listen(t, host, netip.AddrPortFrom(loopback, 7001)) // a host service on loopback only
	routeLoopbackVia(t, sb, gw4, "eth0")
	if got, err := testenv.Dial(sb, netip.AddrPortFrom(loopback, 7001), short); err == nil {
		t.Fatalf("sandbox reached the host's 127.0.0.1:7001: %q", got)
	}
	// Protection off: the bridge's route_localnet lets it in.
	deleteRule(t, host, "raw", "ip daddr 127.0.0.0/8 drop")
	if _, err := testenv.Dial(sb, netip.AddrPortFrom(loopback, 7001), timeout); err != nil {
		t.Errorf("without the raw drop the attack fails too (%v): the test proves nothing", err)
	}
}

func TestLiveLoopbackFromOutside(t *testing.T) {
	d, host, out := fwEnv(t)
	n := createNetwork(t, d, dual)
	srv := testenv.NetNS(t, "srv")
	ep := attach(t, n, bridge.EndpointConfig{NetNS: srv.Path(), Ports: []bridge.PortMapping{
		{Proto: bridge.TCP, HostIP: loopback, HostPort: 8081, ContainerPort: 80}}})
	testenv.Listen(t, srv, netip.AddrPortFrom(ep.IPv4().Addr(), 80))
	testenv.Listen(t, host, netip.AddrPortFrom(loopback, 7001))
	// The host itself reaches both.
	for _, port := range []uint16{8081, 7001} {
		if _, err := testenv.Dial(host, netip.AddrPortFrom(loopback, port), timeout); err != nil {
			t.Fatalf("host -> 127.0.0.1:%d: %v", port, err)
		}
	}
	routeLoopbackVia(t, out, testenv.UplinkIPv4, "eth0")
	for _, port := range []uint16{8081, 7001} {
		if got, err := testenv.Dial(out, netip.AddrPortFrom(loopback, port), short); err == nil {
			t.Errorf("outside reached 127.0.0.1:%d of the host: %q", port, got)
		}
	}
	// Protection off: the port published on 127.0.0.1 is DNATed for the
	// outside host. (The host's loopback service stays out of its reach:
	// the uplink has no route_localnet, so the kernel drops the packet.)
	deleteRule(t, host, "prerouting", "ip daddr 127.0.0.0/8 return")
	if _, err := testenv.Dial(out, netip.AddrPortFrom(loopback, 8081), timeout); err != nil {
		t.Errorf("without the rule the outside cannot reach the published port either (%v): the test proves nothing", err)
	}
}

// pair is two sandboxes, a (the attacker) and b, on a dual-stack network
// with the firewall on, announcements off.
type pair struct {
	host, out, a, b *nsutil.NS
	ea, eb          *bridge.Endpoint
	brMAC           string
}

func newPair(t *testing.T, allowSpoofing bool) pair {
	d, host, out := fwEnv(t)
	cfg := dual
	cfg.AllowSpoofing = allowSpoofing
	n := createNetwork(t, d, cfg)
	p := pair{host: host, out: out, a: testenv.NetNS(t, "a"), b: testenv.NetNS(t, "b")}
	p.ea = attach(t, n, bridge.EndpointConfig{NetNS: p.a.Path(), Advertise: quiet})
	p.eb = attach(t, n, bridge.EndpointConfig{NetNS: p.b.Path(), Advertise: quiet})
	p.brMAC = linkMAC(t, host, cfg.Name)
	return p
}

func linkMAC(t *testing.T, ns *nsutil.NS, dev string) string {
	t.Helper()
	f := strings.Fields(testenv.IP(t, ns, "-o", "link", "show", dev))
	for i := range f {
		if f[i] == "link/ether" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("no MAC for %s", dev)
	return ""
}

// neigh returns ns's neighbour entry (lladdr) for ip, "" if none.
func neigh(t *testing.T, ns *nsutil.NS, ip netip.Addr) string {
	t.Helper()
	f := strings.Fields(testenv.IP(t, ns, "neigh", "show", ip.String()))
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

// learn makes from resolve ip (a ping) and returns the MAC it learnt.
func learn(t *testing.T, from *nsutil.NS, ip netip.Addr) string {
	t.Helper()
	if err := testenv.Ping(from, ip, timeout); err != nil {
		t.Fatalf("ping %s: %v", ip, err)
	}
	mac := neigh(t, from, ip)
	if mac == "" {
		t.Fatalf("no neighbour entry for %s after a ping", ip)
	}
	return mac
}

// attack sends with send, repeatedly, until every check sees the MAC it
// wants or (blocked) the short window is over; it reports the entries that
// did not end as wanted.
type entry struct {
	ns   *nsutil.NS
	ip   netip.Addr
	want string
}

func attack(t *testing.T, blocked bool, send func() error, entries ...entry) {
	t.Helper()
	deadline := time.Now().Add(wait(!blocked))
	for {
		if err := send(); err != nil {
			t.Fatal(err)
		}
		ok := true
		for _, e := range entries {
			if got := neigh(t, e.ns, e.ip); got != e.want {
				ok = false
				if blocked {
					t.Fatalf("neighbour entry for %s is %s, want %s (spoof got through)", e.ip, got, e.want)
				}
			}
		}
		if ok && !blocked || time.Now().After(deadline) {
			if !ok {
				for _, e := range entries {
					if got := neigh(t, e.ns, e.ip); got != e.want {
						t.Errorf("neighbour entry for %s is %s, want %s", e.ip, got, e.want)
					}
				}
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLiveGratuitousARPSpoofing(t *testing.T) {
	for _, allow := range []bool{false, true} {
		t.Run(map[bool]string{false: "guarded", true: "AllowSpoofing"}[allow], func(t *testing.T) {
			p := newPair(t, allow)
			bIP, aMAC := p.eb.IPv4().Addr(), p.ea.MAC()
			if got := learn(t, p.host, bIP); got != p.eb.MAC().String() {
				t.Fatalf("host learnt %s for %s, want %s", got, bIP, p.eb.MAC())
			}
			learn(t, p.b, gw4)
			want := []entry{{p.host, bIP, p.eb.MAC().String()}, {p.b, gw4, p.brMAC}}
			if allow {
				want = []entry{{p.host, bIP, aMAC.String()}, {p.b, gw4, aMAC.String()}}
			}
			attack(t, !allow, func() error {
				for _, victim := range []netip.Addr{bIP, gw4} {
					b, _ := disco.Gratuitous(aMAC, victim).MarshalBinary()
					if err := testenv.SendARP(p.a, int(p.ea.IfIndex()), b); err != nil {
						return err
					}
				}
				return nil
			}, want...)
		})
	}
}

func TestLiveNASpoofing(t *testing.T) {
	for _, allow := range []bool{false, true} {
		t.Run(map[bool]string{false: "guarded", true: "AllowSpoofing"}[allow], func(t *testing.T) {
			p := newPair(t, allow)
			bIP, aMAC := p.eb.IPv6().Addr(), p.ea.MAC()
			if got := learn(t, p.host, bIP); got != p.eb.MAC().String() {
				t.Fatalf("host learnt %s for %s, want %s", got, bIP, p.eb.MAC())
			}
			learn(t, p.b, gw6)
			want := []entry{{p.host, bIP, p.eb.MAC().String()}, {p.b, gw6, p.brMAC}}
			if allow {
				want = []entry{{p.host, bIP, aMAC.String()}, {p.b, gw6, aMAC.String()}}
			}
			attack(t, !allow, func() error {
				for _, victim := range []netip.Addr{bIP, gw6} {
					b, _ := disco.UnsolicitedNA(aMAC, victim) // from A's own address
					if err := testenv.SendICMPv6(p.a, int(p.ea.IfIndex()), p.ea.IPv6().Addr(), netip.IPv6LinkLocalAllNodes(), b); err != nil {
						return err
					}
				}
				return nil
			}, want...)
		})
	}
}

func TestLiveSourceAddressSpoofing(t *testing.T) {
	for _, allow := range []bool{false, true} {
		t.Run(map[bool]string{false: "guarded", true: "AllowSpoofing"}[allow], func(t *testing.T) {
			p := newPair(t, allow)
			spoof4, spoof6 := netip.MustParseAddr("172.29.0.99"), netip.MustParseAddr("fd29::99")
			learn(t, p.a, gw4) // resolved from A's own address: only the IP source is spoofed below
			learn(t, p.a, gw6)
			testenv.IP(t, p.a, "addr", "add", spoof4.String()+"/32", "dev", "eth0")
			testenv.IP(t, p.a, "addr", "add", spoof6.String()+"/128", "dev", "eth0", "nodad")
			for _, tc := range []struct {
				srv      *nsutil.NS
				dst, src netip.Addr
			}{
				{p.host, gw4, spoof4}, {p.out, testenv.OutsideIPv4, spoof4},
				{p.host, gw6, spoof6}, {p.out, testenv.OutsideIPv6, spoof6},
			} {
				ap := netip.AddrPortFrom(tc.dst, 7002)
				testenv.Listen(t, tc.srv, ap)
				_, err := testenv.DialFrom(p.a, tc.src, ap, wait(allow))
				if got := err == nil; got != allow {
					t.Errorf("tcp from %s to %s: connected=%v (%v), want %v", tc.src, ap, got, err, allow)
				}
			}
		})
	}
}

func TestLiveRogueRA(t *testing.T) {
	prefix := netip.MustParsePrefix("2001:db8:bad::/64")
	for _, tc := range []struct {
		name          string
		opts          bridge.Options
		allowSpoofing bool
		blocked       bool
	}{
		{"guarded", bridge.Options{}, false, true},
		{"AllowSpoofing", bridge.Options{}, true, true}, // the RA guard stays
		{"NoFirewall", bridge.Options{NoFirewall: true}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := testenv.NetNS(t, "host")
			tc.opts.NetNS = host.Path()
			d, err := bridge.Open(ctx, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			cfg := dual
			cfg.AllowSpoofing = tc.allowSpoofing
			n := createNetwork(t, d, cfg)
			a, b := testenv.NetNS(t, "a"), testenv.NetNS(t, "b")
			// A's link-local address usable at once, as a router's.
			ea := attach(t, n, bridge.EndpointConfig{NetNS: a.Path(), Advertise: quiet,
				Sysctls: []string{"net.ipv6.conf.IFNAME.accept_dad=0"}})
			attach(t, n, bridge.EndpointConfig{NetNS: b.Path(), Advertise: quiet})
			ll := eui64(ea.MAC())
			ra := testenv.RogueRA(ea.MAC(), prefix)
			send := func() error { return testenv.SendICMPv6(a, int(ea.IfIndex()), ll, netip.IPv6LinkLocalAllNodes(), ra) }
			for ready := time.Now().Add(timeout); send() != nil; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(ready) {
					t.Fatalf("A cannot send from its link-local address %s: %v", ll, send())
				}
			}
			deadline := time.Now().Add(wait(!tc.blocked))
			var addrs, routes string
			for {
				if err := send(); err != nil {
					t.Fatal(err)
				}
				addrs = testenv.IP(t, b, "-6", "addr", "show", "dev", "eth0")
				routes = testenv.IP(t, b, "-6", "route", "show", "default")
				addr, route := strings.Contains(addrs, "2001:db8:bad:"), strings.Contains(routes, ll.String())
				if (addr || route) && tc.blocked {
					t.Fatalf("B took the rogue RA:\n%s\n%s", addrs, routes)
				}
				if addr && route || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if !tc.blocked && (!strings.Contains(addrs, "2001:db8:bad:") || !strings.Contains(routes, "via "+ll.String())) {
				t.Errorf("without the guard B did not take the RA (no SLAAC address or default route via %s): the test proves nothing\n%s\n%s", ll, addrs, routes)
			}
		})
	}
}

// The guard is restored with the rest of the firewall: after a foreign
// change deletes the bridge table, the driver rebuilds it from the records,
// with every endpoint's elements, and the ARP attack is blocked again.
func TestLiveGuardRestored(t *testing.T) {
	p := newPair(t, false)
	testenv.Nft(t, p.host, "delete", "table", "bridge", "nlbridge")
	deadline := time.Now().Add(timeout)
	for {
		out, err := testenv.TryNft(p.host, "list", "set", "bridge", "nlbridge", "guarded")
		if err == nil && strings.Contains(out, p.ea.HostIfName()) && strings.Contains(out, p.eb.HostIfName()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("guard not restored within %v: %v\n%s", timeout, err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	bIP := p.eb.IPv4().Addr()
	learn(t, p.host, bIP)
	attack(t, true, func() error {
		b, _ := disco.Gratuitous(p.ea.MAC(), bIP).MarshalBinary()
		return testenv.SendARP(p.a, int(p.ea.IfIndex()), b)
	}, entry{p.host, bIP, p.eb.MAC().String()})
}
