package bridge_test

import (
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/bridgetest"
	"github.com/nlbridge/bridge/internal/testenv"
)

// The same networks and endpoints, made by the driver on the running
// kernel and on bridgetest, give the same firewall ruleset (nft's listing
// against the fake's Dump) and the same sandbox state. Random names are
// normalized, elements sorted (the kernel lists hash sets in hash order).
func TestLiveFakeFirewallMatchesTheKernel(t *testing.T) {
	host, sb := testenv.NetNS(t, "fwh"), testenv.NetNS(t, "fws")
	scenario := func(d *bridge.Driver) {
		t.Helper()
		n, err := d.CreateNetwork(ctx, bridge.NetworkConfig{Name: "nlbt0", IPv4: v4net, IPv6: v6net, HostIPv4: v4net.Addr().Next()})
		if err != nil {
			t.Fatal(err)
		}
		r, err := d.CreateNetwork(ctx, bridge.NetworkConfig{Name: "nlbt1", IPv4: v4net2, GatewayModeIPv4: bridge.Routed, DisableICC: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []struct {
			n   *bridge.Network
			cfg bridge.EndpointConfig
		}{
			{n, bridge.EndpointConfig{ID: "a", NetNS: sb.Path(), Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 18080, ContainerPort: 80}}}},
			{r, bridge.EndpointConfig{ID: "b", NetNS: sb.Path(), Ports: []bridge.PortMapping{{Proto: bridge.UDP, HostPort: 53, ContainerPort: 53}}}},
		} {
			a.cfg.Advertise = &bridge.Advertise{}
			if _, err := a.n.Attach(ctx, a.cfg); err != nil {
				t.Fatal(err)
			}
		}
	}
	d, err := bridge.Open(ctx, bridge.Options{NetNS: host.Path(), Logger: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	scenario(d)
	want := normalize(testenv.Nft(t, host, "list", "ruleset"))

	k := bridgetest.New()
	if err := k.AddNS(sb.Path()); err != nil {
		t.Fatal(err)
	}
	fd, err := bridge.Open(ctx, bridge.Options{Kernel: k, Logger: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	scenario(fd)
	dump := k.DumpNS("")
	got := normalize(regexp.MustCompile(`(?m)^  `).ReplaceAllString(dump[strings.Index(dump, "  table "):], ""))
	has(t, want, `"nlbt1"`, "tcp . 18080 : 172.18.0.2 . 80", "172.19.0.2 . udp . 53", `"vethX" . 172.18.0.2`) // a real comparison
	if got != want {
		t.Errorf("rulesets differ:\n%s", diffLines(got, want))
	}
}

var v4net2 = netip.MustParsePrefix("172.19.0.1/16")

// normalize replaces random veth names and sorts every elements list.
func normalize(s string) string {
	s = regexp.MustCompile(`veth[0-9a-f]{7}`).ReplaceAllString(s, "vethX")
	s = regexp.MustCompile(`(?s)elements = \{ (.*?) \}`).ReplaceAllStringFunc(s, func(m string) string {
		inner := strings.TrimSuffix(strings.TrimPrefix(m, "elements = { "), " }")
		items := regexp.MustCompile(`,\s+`).Split(inner, -1)
		sort.Strings(items)
		return "elements = { " + strings.Join(items, ", ") + " }"
	})
	return s
}

// diffLines shows the lines of each that the other lacks.
func diffLines(got, want string) string {
	var out []string
	in := func(s string) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(s, "\n") {
			m[l]++
		}
		return m
	}
	g, w := in(got), in(want)
	for _, l := range strings.Split(got, "\n") {
		if w[l] == 0 {
			out = append(out, "fake:   "+l)
		}
	}
	for _, l := range strings.Split(want, "\n") {
		if g[l] == 0 {
			out = append(out, "kernel: "+l)
		}
	}
	return strings.Join(out, "\n")
}
