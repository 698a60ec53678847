package bridge

import (
	"context"
	"errors"
	"net/netip"

	"github.com/nlbridge/bridge/internal/alloc"
	"github.com/nlbridge/bridge/route"
)

// Attach connects the sandbox namespace cfg.NetNS to the network: one
// sendmsg creates the veth pair with the peer born in the sandbox under its
// final name, MAC and MTU and the host end up on the bridge; one batch then
// brings up lo and the interface with its addresses and default routes;
// then its ports are published and the first announcement is sent.
// It fails without touching the kernel on bad input, and removes
// everything it made if it fails later. The calling thread never changes
// namespace. Safe for concurrent use.
func (n *Network) Attach(ctx context.Context, cfg EndpointConfig) (*Endpoint, error) {
	op := "attach " + cfg.NetNS + " to " + n.cfg.Name
	p, err := n.plan(op, cfg)
	if err != nil {
		return nil, err
	}
	if n.d.isClosed() {
		return nil, &Error{Op: op, Kind: ErrClosed, Err: errors.New("the driver is closed")}
	}
	ns, err := n.d.k.OpenNS(cfg.NetNS)
	if err != nil {
		return nil, &Error{Op: op, Field: "NetNS", Value: cfg.NetNS, Kind: ErrInvalid, Err: err}
	}
	defer ns.Close()
	e := &Endpoint{n: n, netns: p.netns, ifName: p.ifName, nsID: ns.ID()}
	if err := e.create(ctx, op, ns, p); err != nil {
		return nil, ctxError(ctx, op, err)
	}
	n.mu.Lock()
	deleted := n.deleted
	delete(n.inflight, e)
	if !deleted {
		n.endpoints[e] = struct{}{}
	}
	n.mu.Unlock()
	if deleted { // the network went away meanwhile, and its group delete took our links
		e.markDetached()
		e.cutOff()
		n.release(e)
		return nil, &Error{Op: op, Kind: ErrClosed, Err: errors.New("network deleted during attach")}
	}
	return e, nil
}

// reserve claims the ID, addresses and MAC among the network's endpoints
// (this process's and, as last read from the kernel, the others'). The
// interface name is chosen against the sandbox's links in create. Must
// hold the host lock.
func (n *Network) reserve(op string, e *Endpoint, p attachPlan) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.deleted {
		return &Error{Op: op, Kind: ErrClosed, Err: errors.New("network deleted")}
	}
	e.id = p.id
	if e.id == "" {
		e.id = randomHex(16)
	} else if n.ids[e.id] {
		return &Error{Op: op, Field: "ID", Value: e.id, Kind: ErrExists, Err: errors.New("an endpoint of the network has this ID")}
	}
	var err error
	if e.ipv4, err = n.claim(op, "IPv4", p.ipv4, n.cfg.IPv4); err != nil {
		return err
	}
	if e.ipv6, err = n.claim(op, "IPv6", p.ipv6, n.cfg.IPv6); err != nil {
		delete(n.used, e.ipv4.Addr())
		return err
	}
	e.mac = p.mac
	if e.mac == nil {
		e.mac = alloc.MAC(e.ipv4.Addr())
	}
	if n.macs[string(e.mac)] {
		delete(n.used, e.ipv4.Addr())
		delete(n.used, e.ipv6.Addr())
		return conflict(op, "MAC", e.mac, "used by another endpoint of the network")
	}
	n.macs[string(e.mac)] = true
	n.ids[e.id] = true
	n.inflight[e] = struct{}{}
	return nil
}

// claim reserves the wanted address, or the lowest free one when want is
// zero and the network has that family. Must hold n.mu.
func (n *Network) claim(op, field string, want, gw netip.Prefix) (netip.Prefix, error) {
	if !gw.IsValid() {
		return netip.Prefix{}, nil
	}
	if want.IsValid() {
		if n.used[want.Addr()] {
			return netip.Prefix{}, conflict(op, field, want, "used by another endpoint of the network")
		}
		n.used[want.Addr()] = true
		return want, nil
	}
	p, ok := alloc.Lowest(gw, func(a netip.Addr) bool { return n.used[a] || a == bridgeLinkLocal })
	if !ok {
		return netip.Prefix{}, conflict(op, field, gw.Masked(), "no free address left")
	}
	n.used[p.Addr()] = true
	return p, nil
}

// release frees what reserve claimed.
func (n *Network) release(e *Endpoint) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.used, e.ipv4.Addr())
	delete(n.used, e.ipv6.Addr())
	delete(n.macs, string(e.mac))
	delete(n.ids, e.id)
	delete(n.endpoints, e)
	delete(n.inflight, e)
	for _, a := range []netip.Addr{e.ipv4.Addr(), e.ipv6.Addr()} {
		if a.IsValid() {
			n.released[a] = true
		}
	}
}

// checkRoutes refuses subnets that overlap a route the sandbox already has.
func (e *Endpoint) checkRoutes(op string, routes []route.Route) error {
	for _, r := range routes {
		if r.IsDefault() || r.Dst == linkLocal6 {
			continue
		}
		for _, p := range []netip.Prefix{e.ipv4, e.ipv6} {
			if p.IsValid() && p.Masked().Overlaps(r.Dst) {
				field := "IPv4"
				if p.Addr().Is6() {
					field = "IPv6"
				}
				return conflict(op, field, p, "overlaps the sandbox's route to "+r.Dst.String())
			}
		}
	}
	return nil
}
