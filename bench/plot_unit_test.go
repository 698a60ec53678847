package bench

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSeriesOf(t *testing.T) {
	for _, c := range []struct {
		bench, op string
		name      string
		existing  int
		ok        bool
	}{
		{"BenchmarkAttach/mode=plain/existing=1000", "attach", "nlbridge plain", 1000, true},
		{"BenchmarkAttach/mode=nat+1port/existing=0/adv=off", "attach", "nlbridge nat+1port (Count 0)", 0, true},
		{"BenchmarkAttach/mode=floor/existing=5000", "attach", "kernel floor (raw netlink) nat+1port", 5000, true},
		{"BenchmarkBaselineAttach/impl=vish-fast/existing=5000", "attach", "vishvananda vish-fast", 5000, true},
		{"BenchmarkPeerAttach/tool=netavark/mode=nat+1port/existing=0", "attach", "netavark nat+1port", 0, true},
		{"BenchmarkPeerAttach/tool=netavark/mode=nat+1port/existing=0", "detach", "", 0, false},
		{"BenchmarkChurn/mode=plain/existing=0/workers=2", "attach", "", 0, false},
	} {
		name, existing, ok := seriesOf(row{bench: c.bench, op: c.op})
		if name != c.name || existing != c.existing || ok != c.ok {
			t.Errorf("seriesOf(%s %s) = %q %d %v, want %q %d %v", c.bench, c.op, name, existing, ok, c.name, c.existing, c.ok)
		}
	}
}

func TestWritePlot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.png")
	rows := []row{
		{bench: "BenchmarkAttach/mode=plain/existing=0", op: "attach", p50: 800 * time.Microsecond},
		{bench: "BenchmarkAttach/mode=plain/existing=1000", op: "attach", p50: 900 * time.Microsecond},
		{bench: "BenchmarkPeerAttach/tool=cni/mode=nat+1port/existing=0", op: "attach", p50: 200 * time.Millisecond},
	}
	if err := writePlot(rows, path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if r := img.Bounds(); r.Dx() < 500 || r.Dy() < 300 {
		t.Errorf("plot is %v", r)
	}
}
