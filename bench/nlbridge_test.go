package bench

import (
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/nat"
)

// BenchmarkAttach times one attach per iteration into a fresh sandbox, at
// several counts of endpoints already on the network: with the default
// EndpointConfig (the headline rows), with announcements off (adv=off),
// and, for nat+1port, the kernel's floor (mode=floor, see floor_test.go).
// Detaches happen off the clock.
func BenchmarkAttach(parent *testing.B) {
	for _, mode := range []string{"plain", "dual", "nat+1port"} {
		for _, existing := range scales() {
			for _, adv := range advs {
				parent.Run(name(mode, existing)+adv.suffix, func(b *testing.B) {
					w := newWorld(parent, b, existing, mode)
					sbs := sandboxes(b, b.N)
					var lat latencies
					var eps []*bridge.Endpoint
					b.ReportAllocs()
					b.ResetTimer()
					for i := range b.N {
						t0 := time.Now()
						ep, err := w.n.Attach(ctx, w.cfg(sbs[i], adv.quiet))
						lat = append(lat, time.Since(t0))
						if err != nil {
							b.Fatal(err)
						}
						eps = append(eps, ep)
					}
					b.StopTimer()
					lat.report(b, "attach")
					w.d.Detach(ctx, eps...)
				})
			}
			if mode == "nat+1port" {
				parent.Run(name("floor", existing), func(b *testing.B) {
					floorAttach(b, newWorld(parent, b, existing, mode))
				})
			}
		}
	}
}

// BenchmarkDetach times one detach per iteration, each right after its
// endpoint's attach (off the clock): inside the announcement window, where
// the defaults still have announcements pending.
func BenchmarkDetach(parent *testing.B) {
	for _, mode := range []string{"plain", "nat+1port"} {
		for _, adv := range advs {
			parent.Run(name(mode, 0)+adv.suffix, func(b *testing.B) {
				w := newWorld(parent, b, 0, mode)
				sbs := sandboxes(b, b.N)
				var lat latencies
				b.ResetTimer()
				for _, sb := range sbs {
					b.StopTimer()
					ep, err := w.n.Attach(ctx, w.cfg(sb, adv.quiet))
					if err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					t0 := time.Now()
					if err := ep.Detach(ctx); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t0))
				}
				b.StopTimer()
				lat.report(b, "detach")
			})
		}
	}
}

// BenchmarkDetachMany times Driver.Detach of 10 endpoints at once; an
// iteration (and each latency reported) is one endpoint's share.
func BenchmarkDetachMany(parent *testing.B) {
	const batch = 10
	for _, mode := range []string{"plain", "nat+1port"} {
		for _, adv := range advs {
			parent.Run(name(mode, 0)+"/batch=10"+adv.suffix, func(b *testing.B) {
				w := newWorld(parent, b, 0, mode)
				eps := w.attachNew(b, (b.N+batch-1)/batch*batch, adv.quiet)
				var lat latencies
				b.ResetTimer()
				for i := 0; i < len(eps); i += batch {
					t0 := time.Now()
					if err := w.d.Detach(ctx, eps[i:i+batch]...); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t0)/batch)
				}
				b.StopTimer()
				lat.report(b, "detach")
			})
		}
	}
}

// attachNew attaches n new sandboxes to the measured network (off the
// clock: callers reset the timer after).
func (w *world) attachNew(b *testing.B, n int, quiet bool) []*bridge.Endpoint {
	var eps []*bridge.Endpoint
	for _, sb := range sandboxes(b, n) {
		ep, err := w.n.Attach(ctx, w.cfg(sb, quiet))
		if err != nil {
			b.Fatal(err)
		}
		eps = append(eps, ep)
	}
	return eps
}

// BenchmarkPublishPort times publishing one more port (an attach with one
// port minus an attach without, is what users pay; this isolates the
// firewall batch) at several counts of existing endpoints with ports.
func BenchmarkPublishPort(parent *testing.B) {
	for _, existing := range scales() {
		parent.Run(name("nat", existing), func(b *testing.B) {
			w := newWorld(parent, b, existing, "nat+1port")
			fw, err := nat.Open(w.host.FD(), "") // the driver's table, through a conn of its own
			if err != nil {
				b.Fatal(err)
			}
			defer fw.Close()
			var lat latencies
			b.ResetTimer()
			for i := range b.N {
				p := portFor(i)
				t0 := time.Now()
				if err := fw.AddPorts(ctx, p); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			lat.report(b, "publish")
			for i := range b.N {
				fw.RemovePorts(ctx, portFor(i))
			}
		})
	}
}

// BenchmarkChurn measures attach+detach pairs per second, sequentially and
// from several goroutines, at up to 1,000 existing endpoints, and the
// kernel's floor of a pair with 1 and 2 workers: nlbridge's messages sent
// raw (mode=floor), and the least any working endpoint needs
// (mode=floor-min); see floorchurn_test.go.
func BenchmarkChurn(parent *testing.B) {
	for _, mode := range []string{"plain", "nat+1port"} {
		for _, existing := range scales() {
			if existing > 1000 {
				continue
			}
			for _, workers := range []int{1, 2, 8} {
				for _, adv := range advs {
					parent.Run(name(mode, existing)+"/workers="+strconv.Itoa(workers)+adv.suffix, func(b *testing.B) {
						churn(b, newWorld(parent, b, existing, mode), workers, adv.quiet)
					})
				}
				if mode == "nat+1port" && workers <= 2 {
					for _, fl := range []string{"floor", "floor-min"} {
						parent.Run(name(fl, existing)+"/workers="+strconv.Itoa(workers), func(b *testing.B) {
							floorChurn(b, newWorld(parent, b, existing, mode), workers, fl == "floor-min")
						})
					}
				}
			}
		}
	}
}

func churn(b *testing.B, w *world, workers int, quiet bool) {
	sbs := sandboxes(b, b.N)
	var wg sync.WaitGroup
	next := make(chan int, b.N)
	for i := range b.N {
		next <- i
	}
	close(next)
	var mu sync.Mutex
	var att, det latencies
	b.ResetTimer()
	t0 := time.Now()
	for range workers {
		wg.Go(func() {
			for i := range next {
				t1 := time.Now()
				ep, err := w.n.Attach(ctx, w.cfg(sbs[i], quiet))
				if err != nil {
					b.Error(err)
					return
				}
				t2 := time.Now()
				if err := ep.Detach(ctx); err != nil {
					b.Error(err)
				}
				t3 := time.Now()
				mu.Lock()
				att, det = append(att, t2.Sub(t1)), append(det, t3.Sub(t2))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "pairs/s")
	b.StopTimer()
	att.report(b, "attach")
	det.report(b, "detach")
}

// portFor is the i-th distinct published port (up to 120,000).
func portFor(i int) nat.Port {
	proto := uint8(6)
	if i%2 == 1 {
		proto = 17
	}
	return nat.Port{Proto: proto, HostIP: netip.IPv4Unspecified(), HostPort: uint16(1 + i/2%60000),
		Addr: netip.MustParseAddr("10.96.200.1"), Port: 80}
}
