package bridge

import (
	"context"
	"errors"
	"fmt"
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
	if err := n.checkEndpoint(op, cfg); err != nil {
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
	e := &Endpoint{n: n, netns: cfg.NetNS, ifName: cfg.IfName, nsID: ns.ID()}
	if err := e.create(ctx, op, ns, cfg); err != nil {
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

// checkEndpoint validates what can be checked without the kernel.
func (n *Network) checkEndpoint(op string, cfg EndpointConfig) error {
	if cfg.NetNS == "" {
		return invalid(op, "NetNS", cfg.NetNS, "required")
	}
	if len(cfg.ID) > maxIDLen {
		return invalid(op, "ID", cfg.ID, fmt.Sprintf("longer than %d bytes", maxIDLen))
	}
	if cfg.IfName != "" {
		if err := checkName(op, "IfName", cfg.IfName); err != nil {
			return err
		}
		if _, err := parseSysctls(op, cfg.IfName, cfg.Sysctls); err != nil {
			return err
		}
	} else if _, err := parseSysctls(op, "eth0", cfg.Sysctls); err != nil {
		return err
	}
	if err := checkMAC(op, cfg.MAC); err != nil {
		return err
	}
	if _, err := cfg.Advertise.resolve(op); err != nil {
		return err
	}
	if len(cfg.Ports) > 0 && n.d.fw == nil {
		return invalid(op, "Ports", len(cfg.Ports), "publishing ports needs the firewall (Options.NoFirewall is set)")
	}
	if err := checkPorts(op, cfg.Ports); err != nil {
		return err
	}
	if err := checkEndpointAddr(op, "IPv4", cfg.IPv4, n.cfg.IPv4); err != nil {
		return err
	}
	return checkEndpointAddr(op, "IPv6", cfg.IPv6, n.cfg.IPv6)
}

func checkEndpointAddr(op, field string, p, gw netip.Prefix) error {
	switch {
	case !p.IsValid():
		return nil
	case !gw.IsValid():
		return invalid(op, field, p, "the network has no "+field+" subnet")
	case p.Addr().Is4() != gw.Addr().Is4() || p.Addr().Zone() != "" || p.Addr().Is4In6():
		return invalid(op, field, p, "not an "+field+" prefix")
	case p.Bits() != gw.Bits():
		return invalid(op, field, p, fmt.Sprintf("prefix length differs from the network's /%d", gw.Bits()))
	case p.Addr() == gw.Addr():
		return invalid(op, field, p, "is the gateway address")
	}
	return checkHost(op, field, p, gw.Masked())
}

// maxIDLen bounds EndpointConfig.ID; the whole record must fit in an
// interface alias.
const maxIDLen = 128

// reserve claims the ID, addresses and MAC among the network's endpoints
// (this process's and, as last read from the kernel, the others'). The
// interface name is chosen against the sandbox's links in create. Must
// hold the host lock.
func (n *Network) reserve(op string, e *Endpoint, cfg EndpointConfig) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.deleted {
		return &Error{Op: op, Kind: ErrClosed, Err: errors.New("network deleted")}
	}
	e.id = cfg.ID
	if e.id == "" {
		e.id = randomHex(16)
	} else if n.ids[e.id] {
		return &Error{Op: op, Field: "ID", Value: e.id, Kind: ErrExists, Err: errors.New("an endpoint of the network has this ID")}
	}
	var err error
	if e.ipv4, err = n.claim(op, "IPv4", cfg.IPv4, n.cfg.IPv4); err != nil {
		return err
	}
	if e.ipv6, err = n.claim(op, "IPv6", cfg.IPv6, n.cfg.IPv6); err != nil {
		delete(n.used, e.ipv4.Addr())
		return err
	}
	e.mac = cfg.MAC
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
