package testenv

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/nlbridge/bridge/nsutil"
)

// Outside addresses: the host's uplink and the outside peer.
var (
	UplinkIPv4  = netip.MustParseAddr("192.0.2.1")
	OutsideIPv4 = netip.MustParseAddr("192.0.2.2")
	UplinkIPv6  = netip.MustParseAddr("2001:db8:1::1")
	OutsideIPv6 = netip.MustParseAddr("2001:db8:1::2")
)

// Outside makes an "outside" namespace joined to host by a veth pair
// (host end "up0"), with the documentation addresses above and a default
// route from outside to host. Traffic stays between the two namespaces.
func Outside(t testing.TB, host *nsutil.NS) *nsutil.NS {
	t.Helper()
	out := NetNS(t, "out")
	IP(t, host, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", nsName(out))
	IP(t, host, "addr", "add", UplinkIPv4.String()+"/24", "dev", "up0")
	IP(t, host, "addr", "add", UplinkIPv6.String()+"/64", "dev", "up0", "nodad")
	IP(t, host, "link", "set", "up0", "up")
	IP(t, out, "addr", "add", OutsideIPv4.String()+"/24", "dev", "eth0")
	IP(t, out, "addr", "add", OutsideIPv6.String()+"/64", "dev", "eth0", "nodad")
	IP(t, out, "link", "set", "eth0", "up")
	IP(t, out, "link", "set", "lo", "up")
	IP(t, out, "route", "add", "default", "via", UplinkIPv4.String())
	IP(t, out, "-6", "route", "add", "default", "via", UplinkIPv6.String())
	t.Cleanup(func() { IP(t, host, "link", "del", "up0") })
	return out
}

// Nft runs nft(8) inside ns and returns its output.
func Nft(t testing.TB, ns *nsutil.NS, args ...string) string {
	t.Helper()
	Oracle(t, "nft")
	return run(t, "ip", append([]string{"netns", "exec", nsName(ns), "nft"}, args...)...)
}

// TryNft runs nft(8) inside ns and returns its output and error.
func TryNft(ns *nsutil.NS, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", nsName(ns), "nft"}, args...)...).CombinedOutput()
	return string(out), err
}

// NoElements fails the test if any set or map of the table (inet, and
// the bridge-family guard of the same name) has elements.
func NoElements(t testing.TB, ns *nsutil.NS, table string) {
	t.Helper()
	for _, fam := range []string{"inet", "bridge"} {
		if out := Nft(t, ns, "list", "table", fam, table); strings.Contains(out, "elements") {
			t.Errorf("table %s %s still has elements:\n%s", fam, table, out)
		}
	}
}

// Conntrack runs conntrack(8) inside ns and returns its output.
func Conntrack(t testing.TB, ns *nsutil.NS, args ...string) string {
	t.Helper()
	Oracle(t, "conntrack")
	return run(t, "ip", append([]string{"netns", "exec", nsName(ns), "conntrack"}, args...)...)
}
