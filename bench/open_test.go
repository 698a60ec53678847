package bench

import (
	"testing"
	"time"

	"github.com/nlbridge/bridge"
)

// BenchmarkOpen times what a restarted or short-lived process pays to get
// its state back from the kernel, at several counts of existing endpoints
// (NAT, one published port each): Open alone (the networks, one bridge
// dump, and the firewall check), and Open followed by reading every
// network's endpoints (one dump of each bridge's ports, and the host
// ports held again), which a long-lived daemon does once.
func BenchmarkOpen(parent *testing.B) {
	for _, existing := range scales() {
		for _, full := range []bool{false, true} {
			what := "open"
			if full {
				what = "open+endpoints"
			}
			parent.Run(name("nat+1port", existing)+"/"+what, func(b *testing.B) {
				w := newWorld(parent, b, existing, "nat+1port")
				var lat latencies
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					t0 := time.Now()
					d, err := bridge.Open(ctx, bridge.Options{NetNS: w.host.Path()})
					if err != nil {
						b.Fatal(err)
					}
					eps := 0
					if full {
						for _, n := range d.Networks() {
							eps += len(n.Endpoints())
						}
					}
					lat = append(lat, time.Since(t0))
					b.StopTimer()
					d.Close()
					if full && eps < existing {
						b.Fatalf("recovered %d endpoints, want at least %d", eps, existing)
					}
					b.StartTimer()
				}
				b.StopTimer()
				lat.report(b, what)
			})
		}
	}
}
