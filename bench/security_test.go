package bench

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/internal/testenv"
	"github.com/nlbridge/bridge/nsutil"
)

// What the guard (RA guard and source checks, issue 10) costs, with the
// check on (the default) and off (AllowSpoofing), on a dual-stack network
// with the firewall on; "nofirewall" is the baseline without any table.

var guardModes = []struct {
	name  string
	noFW  bool
	allow bool
}{{"spoofcheck=on", false, false}, {"spoofcheck=off", false, true}, {"nofirewall", true, false}}

// guardNet makes a host namespace, a driver and a dual-stack network, and
// tears them down when the benchmark ends. It tears down the world of the
// other benchmarks first: one world alive at a time.
func guardNet(b *testing.B, noFW, allow bool) *bridge.Network {
	b.Helper()
	testenv.Root(b)
	if current != nil {
		current.close()
	}
	host := testenv.NetNS(b, "host")
	d, err := bridge.Open(ctx, bridge.Options{NetNS: host.Path(), NoFirewall: noFW})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	n, err := d.CreateNetwork(ctx, bridge.NetworkConfig{Name: "nlbguard", IPv4: netip.MustParsePrefix("10.95.0.1/16"),
		IPv6: netip.MustParsePrefix("fd95::1/64"), AllowSpoofing: allow})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { n.Delete(ctx) })
	return n
}

// BenchmarkGuardAttach times one dual-stack attach per iteration with the
// spoof check on and off (the guard batch goes in before the veth pair).
func BenchmarkGuardAttach(b *testing.B) {
	for _, m := range guardModes {
		b.Run(m.name, func(b *testing.B) {
			n := guardNet(b, m.noFW, m.allow)
			sbs := sandboxes(b, b.N)
			settle(b)
			var lat latencies
			eps := make([]*bridge.Endpoint, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				t0 := time.Now()
				ep, err := n.Attach(ctx, bridge.EndpointConfig{NetNS: sbs[i].Path(), Advertise: &bridge.Advertise{}})
				lat = append(lat, time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
				eps = append(eps, ep)
			}
			b.StopTimer()
			lat.report(b, "attach")
			for _, ep := range eps {
				ep.Detach(ctx)
			}
		})
	}
}

// throughputTime is how long one TCP transfer runs.
const throughputTime = 2 * time.Second

// BenchmarkGuardThroughput sends TCP from one sandbox to another over the
// bridge for 2 s and reports MB/s. Each run is one transfer whatever b.N
// (run it with -benchtime 1x).
func BenchmarkGuardThroughput(b *testing.B) {
	for _, m := range guardModes {
		b.Run(m.name, func(b *testing.B) {
			n := guardNet(b, m.noFW, m.allow)
			sbs := sandboxes(b, 2)
			var eps [2]*bridge.Endpoint
			for i, sb := range sbs {
				ep, err := n.Attach(ctx, bridge.EndpointConfig{NetNS: sb.Path(), Advertise: &bridge.Advertise{}})
				if err != nil {
					b.Fatal(err)
				}
				eps[i] = ep
			}
			settle(b)
			b.ResetTimer()
			sent, took := transfer(b, sbs[0], sbs[1], netip.AddrPortFrom(eps[1].IPv4().Addr(), 5001))
			b.StopTimer()
			b.ReportMetric(float64(sent)/took.Seconds()/1e6, "MB/s")
			b.ReportMetric(float64(took.Nanoseconds()), "ns/op") // one transfer
			for _, ep := range eps {
				ep.Detach(ctx)
			}
		})
	}
}

// transfer streams from sandbox from to a sink at ap in sandbox to for
// throughputTime and returns the bytes the sink received and how long.
func transfer(b *testing.B, from, to *nsutil.NS, ap netip.AddrPort) (int64, time.Duration) {
	var ln net.Listener
	if err := to.Do(func() (err error) { ln, err = net.Listen("tcp", ap.String()); return err }); err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- 0
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	var c net.Conn
	if err := from.Do(func() (err error) { c, err = net.DialTimeout("tcp", ap.String(), 5*time.Second); return err }); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 128<<10)
	t0 := time.Now()
	for time.Since(t0) < throughputTime {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	n := <-got
	return n, time.Since(t0)
}
