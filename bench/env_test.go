package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	key  string
	mode string // plain, dual (IPv4 and IPv6), nat+1port (firewall, one published port); nat+raw-* see BenchmarkNSIDs
	host *nsutil.NS
	d    *bridge.Driver
	n    *bridge.Network
	// rawHost is a host end made by rawPairs (0 = none)
	rawHost uint32
	undo    []func() // tears the world down, run last to first
}

// current is the one world alive. A sub-benchmark's function runs several
// times (b.N = 1, then the real count), all on the same world: rebuilding
// thousands of namespaces between runs would leave the kernel cleaning up
// (holding RTNL) while the next run is timed. Building another world tears
// the current one down first, so each measurement sees only its own
// world's endpoints; the parent's cleanup tears down the last.
var current *world

// newWorld returns the world of mode with existing endpoints for the
// sub-benchmarks of parent, built on first use (sub-benchmarks that differ
// only in what they measure share it); it waits until the kernel is idle.
func newWorld(parent, b *testing.B, existing int, mode string) *world {
	b.Helper()
	testenv.Root(b)
	key := parent.Name() + "/" + name(mode, existing)
	if current != nil && current.key == key {
		settle(b)
		return current
	}
	if current != nil {
		current.close()
	}
	w := &world{key: key, mode: mode}
	current = w
	parent.Cleanup(func() {
		if current == w {
			w.close()
		}
	})
	w.host = w.netns(b, "host")
	var err error
	if w.d, err = bridge.Open(ctx, bridge.Options{NetNS: w.host.Path(), NoFirewall: !w.nat()}); err != nil {
		b.Fatal(err)
	}
	w.undo = append(w.undo, func() { w.d.Close() })
	if w.n, err = w.network(0); err != nil {
		b.Fatal(err)
	}
	if layout, raw := strings.CutPrefix(mode, "nat+raw-"); raw {
		w.rawPairs(b, existing, layout) // see BenchmarkNSIDs
		existing = 0
	}
	var fill *bridge.Network
	for i := range existing {
		if i%1000 == 0 {
			if fill, err = w.network(1 + i/1000); err != nil {
				b.Fatal(err)
			}
		}
		sb := w.netns(b, "b")
		_, err := fill.Attach(ctx, w.cfg(sb, true)) // long attached: their announcements are over
		sb.Close()                                  // its path is enough to delete it: keep the process's fds few
		if err != nil {
			b.Fatal(err)
		}
	}
	settle(b)
	return w
}

// netns makes a namespace that the world's teardown deletes.
func (w *world) netns(b *testing.B, tag string) *nsutil.NS {
	r := make([]byte, 6)
	rand.Read(r)
	ns, err := nsutil.Create("", "nlbt-"+tag+"-"+hex.EncodeToString(r))
	if err != nil {
		b.Fatal(err)
	}
	path := ns.Path()
	w.undo = append(w.undo, func() { ns.Close(); nsutil.Delete(path) })
	return ns
}

// close tears the world down: sandboxes, networks, driver, host.
func (w *world) close() {
	for _, f := range slices.Backward(w.undo) {
		f()
	}
	w.undo = nil
	if current == w {
		current = nil
	}
}

// settle waits (up to five minutes) until the machine is idle: the kernel
// destroys namespaces of earlier worlds in a background worker for minutes
// after they are deleted, and new IPv6 interfaces send router
// solicitations for about 10 s, each flooded to every port of their bridge
// and processed in every sandbox. Neither is the steady state of a host
// with that many endpoints.
func settle(b *testing.B) {
	quiet := 0
	for deadline := time.Now().Add(5 * time.Minute); quiet < 2 && time.Now().Before(deadline); {
		idle, err := idleShare(500 * time.Millisecond)
		if err != nil {
			b.Fatal(err)
		}
		if idle >= 0.85 {
			quiet++
		} else {
			quiet = 0
		}
	}
}

// idleShare is the share of CPU time spent idle over d, from /proc/stat.
func idleShare(d time.Duration) (float64, error) {
	read := func() (idle, total uint64, err error) {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return 0, 0, err
		}
		line, _, _ := strings.Cut(string(b), "\n")
		for i, f := range strings.Fields(line)[1:] {
			v, _ := strconv.ParseUint(f, 10, 64)
			total += v
			if i == 3 || i == 4 { // idle, iowait
				idle += v
			}
		}
		return idle, total, nil
	}
	i0, t0, err := read()
	if err != nil {
		return 0, err
	}
	time.Sleep(d)
	i1, t1, err := read()
	if err != nil || t1 == t0 {
		return 0, err
	}
	return float64(i1-i0) / float64(t1-t0), nil
}

func (w *world) nat() bool { return strings.HasPrefix(w.mode, "nat+") }

// network makes network i: nlbbench<i> on 10.(96+i).0.0/16, and in dual
// mode also fd00:<i>::/64.
func (w *world) network(i int) (*bridge.Network, error) {
	cfg := bridge.NetworkConfig{Name: fmt.Sprint("nlbbench", i),
		IPv4: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(96 + i), 0, 1}), 16)}
	if w.mode == "dual" {
		cfg.IPv6 = netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, byte(i), 15: 1}), 64)
	}
	n, err := w.d.CreateNetwork(ctx, cfg)
	if err == nil {
		w.undo = append(w.undo, func() { n.Delete(ctx) })
	}
	return n, err
}

// cfg is the endpoint of the workload: the defaults (3 announcements, the
// first before Attach returns) or, if quiet, no announcements (Count 0);
// with the firewall one published port.
func (w *world) cfg(sb *nsutil.NS, quiet bool) bridge.EndpointConfig {
	c := bridge.EndpointConfig{NetNS: sb.Path()}
	if quiet {
		c.Advertise = &bridge.Advertise{}
	}
	if w.nat() {
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

// TestMain prints the benchmarks' percentiles as a markdown table and
// plots attach latency against existing endpoints.
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
		var rows []row
		for _, k := range order {
			r := last[k]
			rows = append(rows, r)
			fmt.Printf("| %s | %s | %s | %s | %s |\n", r.bench, r.op, ms(r.p50), ms(r.p90), ms(r.p99))
		}
		floorRatios(rows)
		reportPlot(rows)
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

// advs are the two series: the default EndpointConfig (the headline rows)
// and announcements off (Count 0), named by a suffix.
var advs = []struct {
	suffix string
	quiet  bool
}{{"", false}, {"/adv=off", true}}

// floorRatios prints nlbridge's nat+1port attach p50 over the kernel
// floor's at each scale point: the gap that library logic and the waits
// of the defaults add.
func floorRatios(rows []row) {
	p50 := map[string]time.Duration{}
	for _, r := range rows {
		p50[r.bench] = r.p50
	}
	printed := false
	for _, existing := range scales() {
		base := "BenchmarkAttach/" + name("nat+1port", existing)
		fl, ok := p50["BenchmarkAttach/"+name("floor", existing)]
		if !ok || fl == 0 {
			continue
		}
		if !printed {
			fmt.Println("\n| existing | floor p50 ms | nlbridge nat+1port / floor | Count 0 / floor |\n| ---: | ---: | ---: | ---: |")
			printed = true
		}
		ratio := func(k string) string {
			if d, ok := p50[k]; ok {
				return fmt.Sprintf("%.2f", float64(d)/float64(fl))
			}
			return ""
		}
		fmt.Printf("| %d | %.3f | %s | %s |\n", existing, float64(fl.Microseconds())/1000, ratio(base), ratio(base+"/adv=off"))
	}
}
