package bridge

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/addr"
	"github.com/nlbridge/bridge/internal/nl"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

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

// retire cuts the endpoint's links off at once. First the host end
// leaves the bridge, goes down and joins the reclaim group; if it is gone,
// so is the pair (its sandbox died) and there is nothing more to do.
// Otherwise the sandbox end goes down and is renamed nlbd<hex>, so a
// successor can take its name and addresses at once; that is done only if
// the namespace at the sandbox path is still the one attached to (else the
// reclaimer's delete takes the peer wherever it is).
func (e *Endpoint) retire() error {
	err := e.n.d.withConn(func(c *netlink.Conn) error {
		_, err := nl.Exec(c, link.RetireHostEndMsg(e.hostIndex, reclaimGroup))
		return err
	})
	if errors.Is(err, unix.ENODEV) {
		return nil
	}
	if err != nil {
		return err
	}
	e.n.d.kickReclaim()
	ns, err := nsutil.Open(e.netns)
	if err != nil {
		return nil // the path is gone: so is anything a successor could meet
	}
	defer ns.Close()
	if ns.ID() != e.nsID {
		return nil
	}
	sc, err := dialRoute(ns)
	if err != nil {
		return err
	}
	defer sc.Close()
	msgs := link.RetireMsgs(e.ifIndex, "nlbd"+randomHex(7))
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
			d.reclaimNow()
			return
		case <-d.reclaim:
		}
		select {
		case <-d.ctx.Done():
		case <-time.After(reclaimDelay):
		}
		d.reclaimNow()
	}
}

// Reclaim deletes the devices of detached endpoints now, in one request,
// instead of waiting for the driver's background batch.
func (d *Driver) Reclaim(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return kernel("reclaim", err)
	}
	if err := d.reclaimNow(); err != nil {
		return kernel("reclaim", err)
	}
	return nil
}

// reclaimNow deletes every retired device in one request.
func (d *Driver) reclaimNow() error {
	return d.withConn(func(c *netlink.Conn) error { return link.DeleteGroup(c, reclaimGroup) })
}
