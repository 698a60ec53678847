package bridge_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/internal/testenv"
)

// On an IPv4-only network the sandbox interfaces have IPv6 on without any
// address (addrgenmode none, no disable_ipv6 write); the guard keeps every
// IPv6 frame off their ports. A hostile sandbox A gives itself addresses
// and sends B a rogue Router Advertisement and pings: B takes nothing and
// answers nothing. With the network's noipv6 elements removed (and A's RA
// guard), B takes the RA's SLAAC address and answers: the guard is what
// blocks. The spoof check is off (AllowSpoofing), so only these elements
// are in the way.
func TestLiveIPv4OnlyNetworkCarriesNoIPv6(t *testing.T) {
	d, host := hostDriver(t)
	n := createNetwork(t, d, bridge.NetworkConfig{Name: "nlbt4", IPv4: netip.MustParsePrefix("10.74.0.1/24"), AllowSpoofing: true})
	a, b := testenv.NetNS(t, "a"), testenv.NetNS(t, "b")
	ea := attach(t, n, bridge.EndpointConfig{NetNS: a.Path(), Advertise: &bridge.Advertise{}})
	eb := attach(t, n, bridge.EndpointConfig{NetNS: b.Path(), Advertise: &bridge.Advertise{}})
	for _, out := range []string{testenv.IP(t, a, "-6", "addr", "show", "dev", "eth0"), testenv.IP(t, b, "-6", "addr", "show", "dev", "eth0")} {
		if out != "" {
			t.Fatalf("IPv6 address on an IPv4-only network:\n%s", out)
		}
	}
	ll := eui64(ea.MAC())
	testenv.IP(t, a, "addr", "add", ll.String()+"/64", "dev", "eth0", "nodad")
	testenv.IP(t, a, "addr", "add", "fd74::a/64", "dev", "eth0", "nodad")
	testenv.IP(t, b, "addr", "add", "fd74::b/64", "dev", "eth0", "nodad")
	rogue := netip.MustParsePrefix("2001:db8:bad::/64")
	ra := testenv.RogueRA(ea.MAC(), rogue)

	// raTaken sends the RA every 20 ms for up to d and reports whether B
	// took an address in its prefix.
	raTaken := func(d time.Duration) bool {
		t.Helper()
		for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if err := testenv.SendICMPv6(a, int(ea.IfIndex()), ll, netip.IPv6LinkLocalAllNodes(), ra); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(testenv.IP(t, b, "-6", "addr", "show", "dev", "eth0"), "2001:db8:bad:") {
				return true
			}
		}
		return false
	}
	del := func(set string, ports ...string) {
		t.Helper()
		testenv.Nft(t, host, "delete", "element", "bridge", "nlbridge", set, "{ "+strings.Join(ports, ", ")+" }")
	}
	if raTaken(short) {
		t.Error("B took the rogue RA's address")
	}
	if r := testenv.IP(t, b, "-6", "route", "show", "default"); r != "" {
		t.Errorf("B took a default route: %s", r)
	}
	if err := testenv.Ping(a, netip.MustParseAddr("fd74::b"), short); err == nil {
		t.Error("IPv6 passed between two sandboxes of an IPv4-only network")
	}
	del("endpoints", ea.HostIfName()) // the RA guard off: noipv6 alone still blocks
	if raTaken(short) {
		t.Error("without the RA guard, B took the rogue RA's address through noipv6")
	}
	del("noipv6", ea.HostIfName(), eb.HostIfName())
	if err := testenv.Ping(a, netip.MustParseAddr("fd74::b"), timeout); err != nil {
		t.Errorf("without the guard elements IPv6 does not pass either, so the test proves nothing: %v", err)
	}
	if !raTaken(timeout) {
		t.Error("without the guard elements B does not take the RA either (addrgenmode none alone would do): the test proves nothing")
	}
}

// eui64 is the link-local address the kernel derives from mac (RFC 4291
// appendix A: the universal/local bit flipped, ff:fe in the middle).
func eui64(mac net.HardwareAddr) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfe, 0x80, 8: mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]})
}

func TestEUI64(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x42, 0xac, 0x1d, 0x00, 0x02}
	if got, want := eui64(mac), netip.MustParseAddr("fe80::42:acff:fe1d:2"); got != want {
		t.Errorf("eui64(%s) = %s, want %s", mac, got, want)
	}
}
