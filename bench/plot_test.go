package bench

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// plotPath is where TestMain writes the attach latency plot; NLB_BENCH_PLOT
// overrides it.
func plotPath() string {
	if p := os.Getenv("NLB_BENCH_PLOT"); p != "" {
		return p
	}
	return "attach-latency.png"
}

// writePlot draws the attach p50 against existing endpoints, one line per
// implementation and mode (a point for those measured at one scale only),
// on a log scale so that the exec-based peers fit beside the rest.
func writePlot(rows []row, path string) error {
	series := map[string]plotter.XYs{}
	for _, r := range rows {
		name, existing, ok := seriesOf(r)
		if !ok {
			continue
		}
		series[name] = append(series[name], plotter.XY{X: float64(existing), Y: float64(r.p50.Microseconds()) / 1000})
	}
	if len(series) == 0 {
		return nil
	}
	p := plot.New()
	p.Title.Text = "Attach latency (median) against existing endpoints"
	p.X.Label.Text = "existing endpoints"
	p.Y.Label.Text = "attach p50, ms (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.YOffs = -vg.Points(14) // below the title
	p.Add(plotter.NewGrid())
	names := make([]string, 0, len(series))
	var ticks []plot.Tick
	top := 0.0
	for n, pts := range series {
		names = append(names, n)
		for _, pt := range pts {
			top = max(top, pt.Y)
			if !slices.ContainsFunc(ticks, func(t plot.Tick) bool { return t.Value == pt.X }) {
				ticks = append(ticks, plot.Tick{Value: pt.X, Label: strconv.Itoa(int(pt.X))})
			}
		}
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.Y.Max = top * 20 // room for the legend above the lines
	slices.Sort(names)
	for i, n := range names {
		pts := series[n]
		slices.SortFunc(pts, func(a, b plotter.XY) int { return int(a.X - b.X) })
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return err
		}
		line.Color, points.Color = plotutil.Color(i), plotutil.Color(i)
		points.Shape = plotutil.Shape(i)
		p.Add(line, points)
		p.Legend.Add(n, line, points)
	}
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}

// seriesOf names the line an attach row belongs to, from its benchmark
// name: BenchmarkAttach/mode=plain/existing=1000 is "nlbridge plain" at
// 1000, with /adv=off "nlbridge plain (Count 0)".
func seriesOf(r row) (string, int, bool) {
	if r.op != "attach" {
		return "", 0, false
	}
	parts := strings.Split(strings.TrimPrefix(r.bench, "Benchmark"), "/")
	existing := -1
	var words []string
	switch parts[0] {
	case "Attach":
		words = append(words, "nlbridge")
	case "BaselineAttach":
		words = append(words, "vishvananda")
	case "PeerAttach":
	default:
		return "", 0, false
	}
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(p, "=")
		switch {
		case k == "existing":
			n, err := strconv.Atoi(v)
			if err != nil {
				return "", 0, false
			}
			existing = n
		case k == "mode" && v == "floor":
			words = []string{"kernel floor (raw netlink) nat+1port"}
		case k == "adv" && v == "off":
			words = append(words, "(Count 0)")
		default:
			words = append(words, v)
		}
	}
	if existing < 0 {
		return "", 0, false
	}
	return strings.Join(words, " "), existing, true
}

// TestReplot redraws the plot from the markdown table a `make bench` run
// printed: NLB_BENCH_TABLE=<saved output> go test -run TestReplot .
func TestReplot(t *testing.T) {
	in := os.Getenv("NLB_BENCH_TABLE")
	if in == "" {
		t.Skip("set NLB_BENCH_TABLE to a saved `make bench` output to redraw its plot")
	}
	b, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	var rows []row
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 7 || !strings.HasPrefix(strings.TrimSpace(f[1]), "Benchmark") {
			continue
		}
		ms, err := strconv.ParseFloat(strings.TrimSpace(f[3]), 64)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		rows = append(rows, row{bench: strings.TrimSpace(f[1]), op: strings.TrimSpace(f[2]), p50: time.Duration(ms * float64(time.Millisecond))})
	}
	if err := writePlot(rows, plotPath()); err != nil {
		t.Fatal(err)
	}
}

// reportPlot writes the plot and says where, or why not.
func reportPlot(rows []row) {
	path := plotPath()
	if err := writePlot(rows, path); err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		return
	}
	fmt.Println("\nattach latency plot:", path)
}
