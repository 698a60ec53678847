package bench

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRoundTrips counts, with strace attached to this process as an
// independent oracle, the netlink requests (sendmsg/sendto on netlink
// sockets: one per round trip) and namespace switches (setns) per attach
// and per detach. Its timings are strace's, not nlbridge's: read only the
// counts. `make bench` installs strace; without it this skips.
func BenchmarkRoundTrips(parent *testing.B) {
	if _, err := exec.LookPath("strace"); err != nil {
		parent.Skip("strace not installed (make bench installs it)")
	}
	for _, mode := range []string{"plain", "dual", "nat+1port"} {
		for _, adv := range advs {
			parent.Run(name(mode, 0)+adv.suffix, func(b *testing.B) {
				w := newWorld(parent, b, 0, mode)
				sbs := sandboxes(b, b.N)
				var detach []func() error
				att := traced(b, func() {
					for _, sb := range sbs {
						ep, err := w.n.Attach(ctx, w.cfg(sb, adv.quiet))
						if err != nil {
							b.Fatal(err)
						}
						detach = append(detach, func() error { return ep.Detach(ctx) })
					}
				})
				det := traced(b, func() {
					for _, d := range detach {
						if err := d(); err != nil {
							b.Fatal(err)
						}
					}
				})
				n := float64(b.N)
				b.ReportMetric(float64(att.netlink)/n, "netlink-sends/attach")
				b.ReportMetric(float64(att.setns)/n, "setns/attach")
				b.ReportMetric(float64(det.netlink)/n, "netlink-sends/detach")
				b.ReportMetric(float64(det.setns)/n, "setns/detach")
			})
		}
	}
}

type syscallCount struct{ netlink, setns int }

// traced runs fn with strace following every thread of this process, and
// counts its netlink sends and setns calls. The driver's own goroutines
// (the reclaimer) may add a send of theirs.
func traced(b *testing.B, fn func()) syscallCount {
	out := filepath.Join(b.TempDir(), "strace")
	// -f with the process's id attaches to all its threads, and new ones.
	cmd := exec.Command("strace", "-f", "-yy", "-e", "trace=sendmsg,sendto,setns", "-o", out, "-p", strconv.Itoa(os.Getpid()))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() && !strings.Contains(sc.Text(), "attached") {
	}
	go func() {
		for sc.Scan() {
		}
	}()
	b.ResetTimer()
	fn()
	b.StopTimer()
	time.Sleep(10 * time.Millisecond) // let strace write out the last calls
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	f, err := os.Open(out)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var c syscallCount
	lines := bufio.NewScanner(f)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	for lines.Scan() {
		l := lines.Text()
		switch {
		case strings.Contains(l, "resumed>"):
		case (strings.Contains(l, " sendmsg(") || strings.Contains(l, " sendto(")) && strings.Contains(l, "<NETLINK:"):
			c.netlink++
		case strings.Contains(l, " setns("):
			c.setns++
		}
	}
	return c
}
