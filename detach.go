package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/addr"
	"github.com/nlbridge/bridge/internal/linkmsg"
	"github.com/nlbridge/bridge/internal/nl"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/nat"
	"golang.org/x/sys/unix"
)

// flushReused deletes stale conntrack entries (UDP flows, NAT bindings) of
// addresses that an earlier endpoint of the network had.
func (e *Endpoint) flushReused(ctx context.Context) error {
	n := e.n
	n.mu.Lock()
	var reused []netip.Addr
	for _, a := range []netip.Addr{e.ipv4.Addr(), e.ipv6.Addr()} {
		if a.IsValid() && n.released[a] {
			reused = append(reused, a)
		}
	}
	n.mu.Unlock()
	return n.d.flushConntrack(ctx, false, reused...) // its predecessor's own flows went at its detach
}

// cutOff stops the endpoint's announcements and removes its firewall
// elements and conntrack entries: after it, no traffic is NATed to it.
func (e *Endpoint) cutOff() error {
	eps := []*Endpoint{e}
	return errors.Join(e.n.d.unpublish(eps), e.n.d.flushConntrack(context.Background(), true, addrsOf(eps)...))
}

// Detach removes the endpoint. It returns as soon as the endpoint is cut
// off: announcements stopped, firewall elements gone, the host end off the
// bridge and down, conntrack entries gone, the sandbox interface down,
// renamed and without addresses (so the sandbox can take a new endpoint
// with the same name and addresses at once). The driver deletes the veth
// pair shortly after, together with others (see reclaimLoop). Detach is
// idempotent, and succeeds when the sandbox namespace is already gone.
// Driver.Detach detaches several endpoints in fewer round trips.
func (e *Endpoint) Detach(ctx context.Context) error {
	return e.n.d.Detach(ctx, e)
}

// Detach detaches the endpoints, of any networks of the driver, as each
// one's Endpoint.Detach does, with the requests of all of them in one
// batch per kind: one firewall batch, one link request and one conntrack
// request in the driver's namespace. Only the requests in each sandbox
// stay one per endpoint. Endpoints already detached are skipped. On error,
// none of the endpoints counts as detached: Detach may be called again.
func (d *Driver) Detach(ctx context.Context, eps ...*Endpoint) error {
	for i, e := range eps {
		switch {
		case e == nil:
			return invalid("detach", fmt.Sprintf("eps[%d]", i), "nil", "not an endpoint")
		case e.n.d != d:
			return invalid("detach", fmt.Sprintf("eps[%d]", i), e.hostName, "an endpoint of another driver")
		}
	}
	if err := ctx.Err(); err != nil {
		return kernel("detach", err)
	}
	var todo []*Endpoint
	for _, e := range eps {
		if e.markDetached() {
			todo = append(todo, e)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	if err := d.retire(ctx, todo); err != nil {
		for _, e := range todo {
			e.mu.Lock()
			e.detached = false
			e.mu.Unlock()
		}
		op := "detach " + todo[0].hostName + " from " + todo[0].n.cfg.Name
		if len(todo) > 1 {
			op = fmt.Sprintf("detach %d endpoints", len(todo))
		}
		return ctxError(ctx, op, err)
	}
	for _, e := range todo {
		e.n.release(e)
	}
	return nil
}

// Deleting one veth costs the kernel 15-30 ms (RCU grace periods in device
// unregistration), while deleting a link group costs about 0.5 ms per
// device. So Detach only retires an endpoint, which is immediate, and a
// driver-owned goroutine deletes retired devices together.
//
// Retired devices are recognisable after a crash: host ends are in
// reclaimGroup and named veth*, sandbox ends are down and named nlbd*.
// Open deletes the reclaim group, so a restart cleans up.

// reclaimGroup holds retired host ends: groupBase + 0, which no network
// uses (no bridge has ifindex 0).
const reclaimGroup = groupBase

// reclaimDelay lets retirements accumulate into one group delete.
const reclaimDelay = 50 * time.Millisecond

// retire cuts the endpoints off and takes their links out of the way.
// Announcements stop first. Then, under the host lock, the host ends leave
// their bridges, go down and join the reclaim group (a host end that is
// gone took its pair with it: its sandbox died), which also takes their
// records out of their networks; then the firewall elements go. Once no
// traffic can reach the endpoints, their conntrack entries are flushed,
// and then each sandbox end goes down and is renamed nlbd<hex> without
// addresses. (The flush, a CPU-bound walk of the whole table per request,
// is not run alongside: the RCU grace periods that link changes wait for
// would wait for it.) If a step on the links fails, pairs are deleted now
// instead, unless ctx cut the step short: then the endpoints stay as they
// are, to be detached again. A crash after the links leaves firewall
// elements of no endpoint, which GC removes.
func (d *Driver) retire(ctx context.Context, eps []*Endpoint) error {
	for _, e := range eps {
		e.stopAdvertising()
	}
	var hostEnds []netlink.Message
	for _, e := range eps {
		hostEnds = append(hostEnds, linkmsg.RetireHostEnd(e.hostIndex, reclaimGroup))
	}
	deleted := false
	err := d.locked(ctx, nil, func(c *netlink.Conn) (bool, error) {
		if _, err := nl.ExecIgnoring(c, unix.ENODEV, hostEnds...); err != nil {
			if cutShort(ctx, err) != nil {
				return true, err
			}
			deleted = true
			for _, e := range eps {
				if err := e.deletePair(); err != nil {
					return true, err
				}
			}
		} else {
			d.kickReclaim()
		}
		return true, d.unpublish(eps)
	})
	if err != nil {
		return err
	}
	errs := []error{d.flushConntrack(context.Background(), true, addrsOf(eps)...)} // the links are out: finish
	for _, e := range eps {
		if !deleted && e.retireSandboxEnd() != nil {
			errs = append(errs, e.deletePair())
		}
	}
	return errors.Join(errs...)
}

// unpublish stops the endpoints' announcements, removes their port and
// guard elements in one firewall batch (elements already gone do not
// count) and releases their host ports. If the batch fails, the ports stay
// held, so a retry can remove them. It runs without a deadline: its
// callers have taken the links out (a Detach or Delete finishes then) or
// undo a failed attach.
func (d *Driver) unpublish(eps []*Endpoint) error {
	var ch nat.Change // the guard elements go in the same batch
	for _, e := range eps {
		e.stopAdvertising()
		e.mu.Lock()
		for _, p := range e.ports {
			ch.RemovePorts = append(ch.RemovePorts, p.Port)
		}
		e.mu.Unlock()
		ch.RemoveGuards = append(ch.RemoveGuards, e.takeGuard()...)
	}
	if d.fw != nil {
		if err := d.fw.Apply(context.Background(), ch); err != nil {
			return err
		}
	}
	for _, e := range eps {
		e.releasePorts()
		e.forgetGuard()
	}
	return nil
}

// addrsOf lists the endpoints' addresses (zero where a family is absent).
func addrsOf(eps []*Endpoint) []netip.Addr {
	var addrs []netip.Addr
	for _, e := range eps {
		addrs = append(addrs, e.ipv4.Addr(), e.ipv6.Addr())
	}
	return addrs
}

// retireSandboxEnd takes the sandbox end down and out of the way, so a
// successor can take its name and addresses at once. That is done only if
// the namespace at the sandbox path is still the one attached to (else the
// reclaimer's delete takes the peer wherever it is).
func (e *Endpoint) retireSandboxEnd() error {
	ns, err := e.n.d.k.OpenNS(e.netns)
	if err != nil {
		return nil // the path is gone: so is anything a successor could meet
	}
	defer ns.Close()
	if !e.recovered && ns.ID() != e.nsID {
		return nil
	}
	sc, err := dial(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer sc.Close()
	if e.recovered { // is the interface at the path still ours?
		l, err := link.GetIndex(sc, e.ifIndex)
		if err != nil || l.Name != e.ifName || !bytes.Equal(l.MAC, e.mac) {
			return nil
		}
	}
	msgs := linkmsg.Retire(e.ifIndex, "nlbd"+randomHex(7))
	for _, p := range []netip.Prefix{e.ipv4, e.ipv6} {
		if p.IsValid() { // IPv4 addresses outlive the link going down
			msgs = append(msgs, addr.DeleteMsg(e.ifIndex, p))
		}
	}
	_, err = nl.ExecIgnoring(sc, unix.ENODEV, msgs...)
	if errors.Is(err, unix.EADDRNOTAVAIL) { // IPv6 ones went with it
		err = nil
	}
	return err
}

// deletePair deletes the veth pair now (slow: see reclaimGroup).
func (e *Endpoint) deletePair() error {
	return e.n.d.undo(func(c *netlink.Conn) error {
		err := link.Delete(c, e.hostIndex)
		if errors.Is(err, unix.ENODEV) {
			return nil
		}
		return err
	})
}

// kickReclaim asks the reclaimer to delete retired devices soon.
func (d *Driver) kickReclaim() {
	select {
	case d.reclaim <- struct{}{}:
	default:
	}
}

// reclaimLoop deletes the reclaim group shortly after retirements, and
// once more when the driver closes.
func (d *Driver) reclaimLoop() {
	for {
		select {
		case <-d.ctx.Done():
			d.logReclaim(d.reclaimNow(context.Background()))
			return
		case <-d.reclaim:
		}
		select {
		case <-d.ctx.Done():
		case <-time.After(reclaimDelay):
		}
		d.logReclaim(d.reclaimNow(context.Background()))
	}
}

// logReclaim logs a failed background delete of retired devices (the
// next one, or the next Open, tries again).
func (d *Driver) logReclaim(err error) {
	if err != nil {
		d.log.Error("nlbridge: deleting detached endpoints' devices", "err", err)
	}
}

// Reclaim deletes the devices of detached endpoints now, in one request,
// instead of waiting for the driver's background batch.
func (d *Driver) Reclaim(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return kernel("reclaim", err)
	}
	if err := d.reclaimNow(ctx); err != nil {
		return ctxError(ctx, "reclaim", err)
	}
	return nil
}

// reclaimNow deletes every retired device in one request.
func (d *Driver) reclaimNow(ctx context.Context) error {
	return d.withConn(ctx, func(c *netlink.Conn) error { return link.DeleteGroup(c, reclaimGroup) })
}
