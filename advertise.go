package bridge

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/disco"
	"github.com/nlbridge/bridge/internal/kern"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/route"
	"golang.org/x/sys/unix"
)

// Advertise sets how an endpoint announces its addresses after attach: a
// gratuitous ARP for IPv4 and an unsolicited Neighbour Advertisement for
// IPv6, so neighbours holding a stale MAC for a reused address update at
// once. A nil *Advertise in EndpointConfig means DefaultAdvertise.
type Advertise struct {
	Count    int           // announcements, 0-3; 0 = none
	Interval time.Duration // between announcements, 100ms-2s; 0 = 1s
}

// DefaultAdvertise is used when EndpointConfig.Advertise is nil.
var DefaultAdvertise = Advertise{Count: 3, Interval: time.Second}

// readyWait bounds the wait for the bridge port to forward and for IPv6
// multicast to be routable before the first announcement.
const readyWait = 200 * time.Millisecond

func (a *Advertise) resolve(op string) (Advertise, error) {
	if a == nil {
		return DefaultAdvertise, nil
	}
	r := *a
	if r.Interval == 0 {
		r.Interval = DefaultAdvertise.Interval
	}
	if r.Count < 0 || r.Count > 3 {
		return r, invalid(op, "Advertise.Count", r.Count, "want 0-3")
	}
	if r.Interval < 100*time.Millisecond || r.Interval > 2*time.Second {
		return r, invalid(op, "Advertise.Interval", r.Interval, "want 100ms-2s")
	}
	return r, nil
}

// advertise sends the first announcement now and the others in the
// background. If the interface cannot send yet (on a loaded host it may
// not be ready within readyWait), the first goes out with the others
// instead: announcements are an optimisation, not a reason to fail the
// attach. Only a failure to open the sockets is returned; the caller rolls
// back.
//
// The announcer's sockets are closed by a driver goroutine after its last
// send: closing an AF_PACKET socket waits for an RCU grace period
// (packet_release calls synchronize_net), 10-20 ms, which neither Attach
// nor Detach waits for. Once stopAdvertising returns nothing more is sent
// (see advGate); Driver.Close waits for the closes too.
func (e *Endpoint) advertise(op string, adv Advertise, ns kern.NS, sc, hc *netlink.Conn) error {
	if adv.Count == 0 || !e.ipv4.IsValid() && !e.ipv6.IsValid() {
		return nil
	}
	e.waitReady(sc, hc)
	a, err := ns.Announcer(int(e.ifIndex), e.mac, e.ipv4.Addr(), e.ipv6.Addr())
	if err != nil {
		return kernel(op, err)
	}
	left := adv.Count
	if a.Send(sc) == nil {
		left--
	}
	d := e.n.d
	d.mu.Lock() // orders wg.Add before Close's wg.Wait
	defer d.mu.Unlock()
	if d.closed {
		a.Close()
		return nil
	}
	if left == 0 {
		d.wg.Go(func() { a.Close() })
		return nil
	}
	ctx, cancel := context.WithCancel(d.ctx)
	g := &advGate{}
	e.mu.Lock()
	e.stopAdv, e.advGate = cancel, g
	e.mu.Unlock()
	d.wg.Go(func() {
		defer a.Close() // Detach does not wait for it
		t := time.NewTicker(adv.Interval)
		defer t.Stop()
		for range left {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			stopped, err := g.send(a)
			if stopped {
				return
			}
			if err != nil { // stop; MAC changed or interface gone are expected
				if !errors.Is(err, disco.ErrMACChanged) && !errors.Is(err, unix.ENODEV) {
					d.log.Warn("nlbridge: announcement", "endpoint", e.id, "err", err)
				}
				return
			}
		}
	})
	return nil
}

// advGate orders background announcements before Detach: each is sent
// holding mu, and none once stopped is set. So stopping waits at most for
// a send in progress, not for the announcer's goroutine to be scheduled.
type advGate struct {
	mu      sync.Mutex
	stopped bool
}

// send sends one announcement unless stopped.
func (g *advGate) send(a kern.Announcer) (stopped bool, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return true, nil
	}
	return false, a.Send(nil)
}

// stop makes sure no announcement is sent after it returns.
func (g *advGate) stop() {
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
}

// waitReady waits, bounded by readyWait, until the host end forwards (not
// with STP on, where that takes seconds) and, with IPv6, until the sandbox
// can route to ff02::1. It sends anyway when the time is up.
func (e *Endpoint) waitReady(sc, hc *netlink.Conn) {
	deadline := time.Now().Add(readyWait)
	for !e.n.stp && time.Now().Before(deadline) {
		if l, err := link.GetIndex(hc, e.hostIndex); err != nil || l.PortState == link.PortForwarding {
			break
		}
		time.Sleep(time.Millisecond)
	}
	for e.ipv6.IsValid() && time.Now().Before(deadline) {
		if _, err := route.Get(sc, netip.IPv6LinkLocalAllNodes(), e.ifIndex); err == nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
}

// stopAdvertising cancels pending announcements; none is sent after it
// returns (the announcer's goroutine and sockets end later).
func (e *Endpoint) stopAdvertising() {
	e.mu.Lock()
	cancel, g := e.stopAdv, e.advGate
	e.mu.Unlock()
	if cancel != nil {
		g.stop()
		cancel()
	}
}
