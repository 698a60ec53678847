package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
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

// sandboxes makes n throwaway namespaces.
func sandboxes(b *testing.B, n int) []*nsutil.NS {
	b.Helper()
	out := make([]*nsutil.NS, n)
	for i := range out {
		out[i] = testenv.NetNS(b, "b")
	}
	return out
}

// world is a host namespace with a driver and the measured network, and
// existing endpoints (one sandbox each) on other networks of up to 1,000
// endpoints: a Linux bridge takes at most 1,024 ports.
type world struct {
	host *nsutil.NS
	d    *bridge.Driver
	n    *bridge.Network
}

// worlds caches one world per sub-benchmark across its b.N runs: building
// and destroying thousands of namespaces between runs would leave the
// kernel cleaning up (holding RTNL) while the next run is timed.
var worlds = map[string]*world{}

// newWorld returns the world for parent's sub-benchmark key, built on first
// use and removed when parent ends; it waits until the kernel is idle.
func newWorld(parent, b *testing.B, key string, existing int, firewall bool) *world {
	b.Helper()
	testenv.Root(b)
	if w, ok := worlds[key]; ok {
		settle(b, w.host)
		return w
	}
	w := &world{host: testenv.NetNS(parent, "host")}
	var err error
	if w.d, err = bridge.Open(ctx, bridge.Options{NetNS: w.host.Path(), NoFirewall: !firewall}); err != nil {
		b.Fatal(err)
	}
	parent.Cleanup(func() { w.d.Close(); delete(worlds, key) })
	if w.n, err = w.network(parent, 0); err != nil {
		b.Fatal(err)
	}
	var fill *bridge.Network
	for i, sb := range sandboxes(parent, existing) {
		if i%1000 == 0 {
			if fill, err = w.network(parent, 1+i/1000); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := fill.Attach(ctx, w.cfg(sb, firewall)); err != nil {
			b.Fatal(err)
		}
	}
	worlds[key] = w
	settle(b, w.host)
	return w
}

// settle waits (up to a minute) until an RTNL-taking operation is fast
// again, i.e. the kernel has finished destroying earlier namespaces.
func settle(b *testing.B, host *nsutil.NS) {
	fast := 0
	for deadline := time.Now().Add(time.Minute); fast < 5 && time.Now().Before(deadline); {
		t0 := time.Now()
		if err := host.WriteSysctls(nsutil.Sysctl{Key: "net.ipv6.conf.lo.disable_ipv6", Value: "0"}); err != nil {
			b.Fatal(err)
		}
		if time.Since(t0) < 500*time.Microsecond {
			fast++
		} else {
			fast = 0
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// network makes network i: nlbbench<i> on 10.(96+i).0.0/16.
func (w *world) network(parent *testing.B, i int) (*bridge.Network, error) {
	n, err := w.d.CreateNetwork(ctx, bridge.NetworkConfig{Name: fmt.Sprint("nlbbench", i),
		IPv4: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(96 + i), 0, 1}), 16)})
	if err == nil {
		parent.Cleanup(func() { n.Delete(ctx) })
	}
	return n, err
}

// cfg is the endpoint of the workload: no announcements (they are
// measured separately), and with the firewall one published port.
func (w *world) cfg(sb *nsutil.NS, nat bool) bridge.EndpointConfig {
	c := bridge.EndpointConfig{NetNS: sb.Path(), Advertise: &bridge.Advertise{}}
	if nat {
		c.Ports = []bridge.PortMapping{{Proto: bridge.TCP, HostIP: netip.IPv4Unspecified(), ContainerPort: 80}}
	}
	return c
}

// latencies collects per-operation times and reports percentiles.
type latencies []time.Duration

// summary holds every reported percentile, for the table printed at exit.
var summary []row

type row struct {
	bench, op     string
	p50, p90, p99 time.Duration
}

func (l latencies) report(b *testing.B, op string) {
	if len(l) == 0 {
		return
	}
	s := slices.Clone(l)
	slices.Sort(s)
	p := func(q int) time.Duration { return s[(len(s)-1)*q/100] }
	b.ReportMetric(float64(p(50).Microseconds())/1000, op+"-p50-ms")
	b.ReportMetric(float64(p(99).Microseconds())/1000, op+"-p99-ms")
	summary = append(summary, row{b.Name(), op, p(50), p(90), p(99)})
}

// TestMain prints the benchmarks' percentiles as a markdown table.
func TestMain(m *testing.M) {
	code := m.Run()
	if len(summary) > 0 {
		fmt.Println("\n| benchmark | op | p50 ms | p90 ms | p99 ms |\n| --- | --- | ---: | ---: | ---: |")
		last := map[string]row{} // the final (largest b.N) run of each
		var order []string
		for _, r := range summary {
			k := r.bench + " " + r.op
			if _, seen := last[k]; !seen {
				order = append(order, k)
			}
			last[k] = r
		}
		ms := func(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d.Microseconds())/1000) }
		for _, k := range order {
			r := last[k]
			fmt.Printf("| %s | %s | %s | %s | %s |\n", r.bench, r.op, ms(r.p50), ms(r.p90), ms(r.p99))
		}
	}
	os.Exit(code)
}

func scales() []int {
	if s := os.Getenv("NLB_BENCH_SCALES"); s != "" {
		var out []int
		for _, f := range strings.Split(s, ",") {
			n, _ := strconv.Atoi(f)
			out = append(out, n)
		}
		return out
	}
	return []int{0, 1000, 5000}
}

func name(mode string, existing int) string {
	return fmt.Sprintf("mode=%s/existing=%d", mode, existing)
}
