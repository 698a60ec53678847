package bridge

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/internal/linkmsg"
	"github.com/nlbridge/bridge/internal/nl"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/nat"
	"golang.org/x/sys/unix"
)

// GC collects garbage, with the semantics of CNI's GC: it detaches every
// complete endpoint, of every network in the namespace, for which keep
// returns false, and removes whatever belongs to no complete endpoint or
// network: pairs and bridges that a process died while making (their
// record names an owner that is gone), retired devices, and the firewall
// elements and conntrack entries of endpoints whose sandbox died (their
// veth went with it) or whose detach was cut short. Endpoints that a live
// process is still attaching are left alone. keep may be nil (keep all).
func (d *Driver) GC(ctx context.Context, keep func(*Endpoint) bool) error {
	const op = "gc"
	if err := ctx.Err(); err != nil {
		return ctxError(ctx, op, err)
	}
	err := d.locked(ctx, nil, func(c *netlink.Conn) (bool, error) {
		if err := d.loadNetworks(c); err != nil {
			return false, err
		}
		for _, n := range d.networkList() {
			if err := n.loadEndpoints(c); err != nil {
				return false, err
			}
		}
		return false, nil
	})
	if err != nil {
		return ctxError(ctx, op, err)
	}
	var drop []*Endpoint
	for _, n := range d.networkList() {
		for _, e := range n.Endpoints() {
			if keep != nil && !keep(e) {
				drop = append(drop, e)
			}
		}
	}
	if err := d.Detach(ctx, drop...); err != nil {
		return &Error{Op: op, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return ctxError(ctx, op, err)
	}
	var stale []netip.Addr
	err = d.locked(ctx, nil, func(c *netlink.Conn) (bool, error) {
		var err error
		defer d.forgetPublished() // orphans may have gone
		stale, err = d.collect(ctx, c)
		return true, err
	})
	if err == nil {
		err = d.flushConntrack(ctx, true, stale...)
	}
	if err != nil {
		return ctxError(ctx, op, err)
	}
	return nil
}

// collect removes residue (see GC) and returns the addresses whose
// conntrack entries must go. Must hold the host lock, with every network
// and endpoint read.
func (d *Driver) collect(ctx context.Context, c *netlink.Conn) ([]netip.Addr, error) {
	var stale []netip.Addr
	bridges, err := link.ListFiltered(c, link.Filter{Kind: "bridge"})
	if err != nil {
		return nil, err
	}
	for _, br := range bridges {
		if !isNetRecord(br.Alias) {
			continue
		}
		rec, err := decodeNetRecord(br.Alias)
		if err != nil || rec.Owner == (owner{}) || rec.Owner.alive(d.k) {
			continue
		}
		rec.Config.Name = br.Name
		if err := d.removeHalfNetwork(c, br, rec); err != nil {
			return nil, fmt.Errorf("remove half-made network %s: %w", br.Name, err)
		}
	}
	veths, err := link.ListFiltered(c, link.Filter{Kind: "veth"})
	if err != nil {
		return nil, err
	}
	var half []netlink.Message
	devices := map[string]bool{} // veths that stay: their guards too
	for _, l := range veths {
		if l.Group != reclaimGroup {
			devices[l.Name] = true
		}
		if !isEpRecord(l.Alias) {
			continue
		}
		rec, err := decodeEpRecord(l.Alias)
		if err != nil {
			continue
		}
		switch {
		case l.Group == reclaimGroup: // retired; its detach may have died before the flush
		case rec.Owner != (owner{}) && !rec.Owner.alive(d.k):
			half = append(half, linkmsg.RetireHostEnd(l.Index, reclaimGroup))
			delete(devices, l.Name)
		default:
			continue
		}
		for _, a := range []netip.Addr{rec.IPv4, rec.IPv6} {
			if a.IsValid() {
				stale = append(stale, a)
			}
		}
	}
	if len(half) > 0 {
		if _, err := nl.ExecIgnoring(c, unix.ENODEV, half...); err != nil {
			return nil, err
		}
	}
	if err := link.DeleteGroup(c, reclaimGroup); err != nil {
		return nil, err
	}
	if d.fw == nil {
		return d.notInUse(stale), nil
	}
	orphans, orphanAddrs, err := d.orphanPorts(ctx)
	if err != nil {
		return nil, err
	}
	stale = append(stale, orphanAddrs...)
	if err := d.fw.RemovePorts(ctx, orphans...); err != nil {
		return nil, err
	}
	// Guards go in before their veth exists: an attach that died there
	// (or a detach after retiring the host end) leaves them without one.
	guarded, err := d.fw.GuardPorts(ctx)
	if err != nil {
		return nil, err
	}
	var gone []string
	for _, p := range guarded {
		if !devices[p] {
			gone = append(gone, p)
		}
	}
	if err := d.fw.RemoveGuardPorts(ctx, gone...); err != nil {
		return nil, err
	}
	names, err := d.fw.Bridges(ctx)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		if _, ok := d.Network(name); !ok {
			if err := d.fw.RemoveBridge(ctx, name); err != nil {
				return nil, err
			}
		}
	}
	return d.notInUse(stale), nil
}

// notInUse drops the addresses that an endpoint has now (an address is
// taken again as soon as its endpoint detaches): their conntrack entries
// are that endpoint's.
func (d *Driver) notInUse(addrs []netip.Addr) []netip.Addr {
	used := map[netip.Addr]bool{}
	for _, n := range d.networkList() {
		n.mu.Lock()
		for a := range n.used {
			used[a] = true
		}
		n.mu.Unlock()
	}
	var out []netip.Addr
	for _, a := range addrs {
		if !used[a] {
			out = append(out, a)
		}
	}
	return out
}

// orphanPorts lists the firewall's port elements that belong to no
// endpoint, complete or being attached by this process (another process
// adds its elements and its record's ports in one locked step), and the
// addresses of no endpoint among theirs, whose conntrack entries can go.
// An element is matched as a whole, not by address: an orphan of a dead
// endpoint whose address was taken again must go too.
func (d *Driver) orphanPorts(ctx context.Context) ([]nat.Port, []netip.Addr, error) {
	ports, err := d.fw.Ports(ctx)
	if err != nil {
		return nil, nil, err
	}
	live := map[nat.Port]bool{}
	used := map[netip.Addr]bool{}
	for _, n := range d.networkList() {
		n.mu.Lock()
		for _, set := range []map[*Endpoint]struct{}{n.endpoints, n.inflight} {
			for e := range set {
				used[e.ipv4.Addr()], used[e.ipv6.Addr()] = true, true
				e.mu.Lock()
				for _, p := range e.ports {
					live[p.Port] = true
				}
				e.mu.Unlock()
			}
		}
		for _, r := range n.foreign {
			used[r.IPv4], used[r.IPv6] = true, true
		}
		n.mu.Unlock()
	}
	var out []nat.Port
	var stale []netip.Addr
	for _, p := range ports {
		if !live[p] {
			out = append(out, p)
			if !used[p.Addr] {
				stale = append(stale, p.Addr)
			}
		}
	}
	return out, stale, nil
}
