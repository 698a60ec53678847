package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/addr"
	"github.com/nlbridge/bridge/internal/nl"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/nsutil"
	"github.com/nlbridge/bridge/route"
	"golang.org/x/sys/unix"
)

// Attach connects the sandbox namespace cfg.NetNS to the network: one
// request creates the veth pair with the peer born in the sandbox under its
// final name, MAC and MTU and the host end up on the bridge; one batch then
// brings up lo and the interface with its addresses and default routes.
// It fails without touching the kernel on bad input, and removes
// everything it made if it fails later. The calling thread never changes
// namespace. Safe for concurrent use.
func (n *Network) Attach(ctx context.Context, cfg EndpointConfig) (*Endpoint, error) {
	op := "attach " + cfg.NetNS + " to " + n.cfg.Name
	if err := n.checkEndpoint(op, cfg); err != nil {
		return nil, err
	}
	ns, err := nsutil.Open(cfg.NetNS)
	if err != nil {
		return nil, &Error{Op: op, Field: "NetNS", Value: cfg.NetNS, Kind: ErrInvalid, Err: err}
	}
	defer ns.Close()
	sc, err := dialRoute(ns)
	if err != nil {
		return nil, kernel(op, err)
	}
	defer sc.Close()

	routes, err := route.List(sc)
	if err != nil {
		return nil, kernel(op, err)
	}
	e := &Endpoint{n: n, netns: cfg.NetNS, ifName: cfg.IfName, nsID: ns.ID()}
	if err := n.reserve(op, e, cfg); err != nil {
		return nil, err
	}
	if err := e.checkRoutes(op, routes); err != nil {
		n.release(e)
		return nil, err
	}
	if err := e.create(ctx, op, ns, sc, cfg, routes); err != nil {
		n.release(e)
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.deleted { // the network went away meanwhile, with our links
		n.release(e)
		return nil, &Error{Op: op, Kind: ErrClosed, Err: errors.New("network deleted during attach")}
	}
	n.endpoints[e] = struct{}{}
	return e, nil
}

// checkEndpoint validates what can be checked without the kernel.
func (n *Network) checkEndpoint(op string, cfg EndpointConfig) error {
	if cfg.NetNS == "" {
		return invalid(op, "NetNS", cfg.NetNS, "required")
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

// reserve claims addresses, MAC and (for automatic names) nothing else: the
// interface name is chosen against the sandbox's links in create.
func (n *Network) reserve(op string, e *Endpoint, cfg EndpointConfig) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.deleted {
		return &Error{Op: op, Kind: ErrClosed, Err: errors.New("network deleted")}
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
		e.mac = randomMAC()
		if e.ipv4.IsValid() {
			a := e.ipv4.Addr().As4()
			e.mac = net.HardwareAddr{0x02, 0x42, a[0], a[1], a[2], a[3]}
		}
	}
	if n.macs[string(e.mac)] {
		delete(n.used, e.ipv4.Addr())
		delete(n.used, e.ipv6.Addr())
		return conflict(op, "MAC", e.mac, "used by another endpoint of the network")
	}
	n.macs[string(e.mac)] = true
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
	subnet := gw.Masked()
	for a := subnet.Addr().Next(); subnet.Contains(a); a = a.Next() {
		if a == gw.Addr() || n.used[a] || a.Is6() && a == netip.MustParseAddr("fe80::1") {
			continue
		}
		p := netip.PrefixFrom(a, gw.Bits())
		if checkHost(op, field, p, subnet) != nil {
			break // reached the broadcast address
		}
		n.used[a] = true
		return p, nil
	}
	return netip.Prefix{}, conflict(op, field, subnet, "no free address left")
}

// release frees what reserve claimed.
func (n *Network) release(e *Endpoint) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.used, e.ipv4.Addr())
	delete(n.used, e.ipv6.Addr())
	delete(n.macs, string(e.mac))
	delete(n.endpoints, e)
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

// create makes the veth pair and configures the sandbox side; on failure
// it deletes the pair, which takes the addresses and routes with it.
func (e *Endpoint) create(ctx context.Context, op string, ns *nsutil.NS, sc *netlink.Conn, cfg EndpointConfig, routes []route.Route) (err error) {
	n := e.n
	hc, err := n.d.conn()
	if err != nil {
		return kernel(op, err)
	}
	defer func() { n.d.release(hc, err) }()

	if err := e.createVeth(op, ns, sc, hc, cfg.IfName == ""); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			link.Delete(hc, e.hostIndex)
		}
	}()
	if err := ctx.Err(); err != nil {
		return kernel(op, err)
	}

	sysctls, err := parseSysctls(op, e.ifName, cfg.Sysctls)
	if err != nil {
		return err
	}
	if err := e.sandboxSysctls(op, ns, sysctls); err != nil {
		return err
	}
	msgs := []netlink.Message{link.UpMsg(1)} // lo is always ifindex 1
	for _, p := range []netip.Prefix{e.ipv4, e.ipv6} {
		if p.IsValid() {
			msgs = append(msgs, addr.AddMsg(e.ifIndex, p))
		}
	}
	msgs = append(msgs, link.UpMsg(e.ifIndex))
	msgs = append(msgs, e.defaultRoutes(cfg.RouteMetric, routes)...)
	if _, err := nl.Exec(sc, msgs...); err != nil {
		return kernel(op, err)
	}
	if err := e.flushReused(); err != nil {
		return kernel(op, err)
	}
	if err := e.publish(op, cfg.Ports); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			e.unpublish()
		}
	}()
	adv, _ := cfg.Advertise.resolve(op) // checked in checkEndpoint
	return e.advertise(op, adv, ns, sc, hc)
}

// flushReused deletes stale conntrack entries (UDP flows, NAT bindings) of
// addresses that an earlier endpoint of the network had.
func (e *Endpoint) flushReused() error {
	n := e.n
	n.mu.Lock()
	var reused []netip.Addr
	for _, a := range []netip.Addr{e.ipv4.Addr(), e.ipv6.Addr()} {
		if a.IsValid() && n.released[a] {
			reused = append(reused, a)
		}
	}
	n.mu.Unlock()
	return n.d.flushConntrack(reused...)
}

// cutOff stops the endpoint's announcements and removes its firewall
// elements and conntrack entries: after it, no traffic is NATed to it.
func (e *Endpoint) cutOff() error {
	e.stopAdvertising()
	return errors.Join(e.unpublish(), e.n.d.flushConntrack(e.ipv4.Addr(), e.ipv6.Addr()))
}

// createVeth creates the pair, choosing the host name at random and, when
// auto, the lowest free eth<N> in the sandbox. Names taken meanwhile are
// retried a few times.
func (e *Endpoint) createVeth(op string, ns *nsutil.NS, sc, hc *netlink.Conn, auto bool) error {
	n := e.n
	for try := 0; ; try++ {
		if auto {
			name, err := freeEthName(sc)
			if err != nil {
				return kernel(op, err)
			}
			e.ifName = name
		}
		e.hostName = "veth" + randomHex(7)
		l, err := link.CreateVeth(hc, link.VethSpec{Name: e.hostName, Master: n.index, Group: n.group,
			MTU: n.cfg.MTU, PeerName: e.ifName, PeerMAC: e.mac, PeerNetNS: ns.FD(), Isolated: n.cfg.DisableICC})
		if err == nil {
			e.hostIndex, e.ifIndex = l.Index, l.Peer
			return nil
		}
		if l.Index != 0 { // created, but a follow-up failed
			link.Delete(hc, l.Index)
			return kernel(op, err)
		}
		if errors.Is(err, unix.EXFULL) {
			return &Error{Op: op, Kind: ErrConflict, Err: fmt.Errorf("bridge %s has the kernel's maximum of 1024 ports: %w", n.cfg.Name, err)}
		}
		if !errors.Is(err, unix.EEXIST) || try == 3 {
			return kernel(op, err)
		}
		if !auto {
			if _, gerr := link.Get(sc, e.ifName); gerr == nil {
				return conflict(op, "IfName", e.ifName, "the sandbox already has an interface of this name")
			}
		}
	}
}

// freeEthName returns the lowest eth<N> not present in the sandbox.
func freeEthName(sc *netlink.Conn) (string, error) {
	links, err := link.List(sc)
	if err != nil {
		return "", err
	}
	taken := map[string]bool{}
	for _, l := range links {
		taken[l.Name] = true
	}
	for i := 0; ; i++ {
		if name := fmt.Sprintf("eth%d", i); !taken[name] {
			return name, nil
		}
	}
}

// sandboxSysctls disables IPv6 on the interface of an IPv4-only network,
// applies the caller's sysctls, and then drops the IPv6 address if IPv6
// ended up disabled on the interface.
func (e *Endpoint) sandboxSysctls(op string, ns *nsutil.NS, user []nsutil.Sysctl) error {
	v6 := "net.ipv6.conf." + dotted(e.ifName) + ".disable_ipv6"
	var all []nsutil.Sysctl
	if !e.n.cfg.IPv6.IsValid() {
		all = append(all, nsutil.Sysctl{Key: v6, Value: "1"})
	}
	all = append(all, user...)
	if len(all) == 0 && !e.ipv6.IsValid() {
		return nil
	}
	err := ns.Do(func() error {
		for _, s := range all {
			err := nsutil.WriteSysctl(s)
			if err != nil && !(s.Key == v6 && errors.Is(err, os.ErrNotExist)) {
				return err
			}
		}
		if e.ipv6.IsValid() {
			if v, err := nsutil.ReadSysctl(v6); err != nil || v != "0" {
				e.n.mu.Lock()
				delete(e.n.used, e.ipv6.Addr())
				e.n.mu.Unlock()
				e.ipv6 = netip.Prefix{}
			}
		}
		return nil
	})
	if err != nil {
		return &Error{Op: op, Field: "Sysctls", Value: strings.Join(e.sysctlKeys(user), ","), Err: err}
	}
	return nil
}

func (e *Endpoint) sysctlKeys(ss []nsutil.Sysctl) []string {
	keys := make([]string, len(ss))
	for i, s := range ss {
		keys[i] = s.Key + "=" + s.Value
	}
	return keys
}

// defaultRoutes builds the default routes the endpoint provides.
func (e *Endpoint) defaultRoutes(metric uint32, existing []route.Route) []netlink.Message {
	if e.n.cfg.Internal {
		return nil
	}
	var msgs []netlink.Message
	for _, p := range []netip.Prefix{e.ipv4, e.ipv6} {
		if !p.IsValid() {
			continue
		}
		if !e.n.cfg.gateway(p.Addr().Is6()) {
			continue
		}
		gw := e.n.cfg.IPv4.Addr()
		if p.Addr().Is6() {
			gw = e.n.cfg.IPv6.Addr()
		}
		m := metric
		if m == 0 {
			if hasDefault(existing, p.Addr().Is4()) {
				continue
			}
			m = autoMetric
		}
		msgs = append(msgs, route.AddDefaultMsg(e.ifIndex, gw, m))
	}
	return msgs
}

func hasDefault(routes []route.Route, v4 bool) bool {
	for _, r := range routes {
		if r.IsDefault() && r.Dst.Addr().Is4() == v4 {
			return true
		}
	}
	return false
}

// Detach removes the endpoint. It returns as soon as the endpoint is cut
// off: announcements stopped, firewall elements and conntrack entries
// gone, the sandbox interface down, renamed and without addresses (so the
// sandbox can take a new endpoint with the same name and addresses at
// once), the host end off the bridge. The driver deletes the veth pair
// shortly after, together with others (see reclaim.go). Detach is
// idempotent, and succeeds when the sandbox namespace is already gone.
func (e *Endpoint) Detach(ctx context.Context) error {
	if !e.markDetached() {
		return nil
	}
	n := e.n
	op := "detach " + e.hostName + " from " + n.cfg.Name
	if err := e.cutOff(); err != nil {
		e.mu.Lock()
		e.detached = false
		e.mu.Unlock()
		return kernel(op, err)
	}
	err := e.retire()
	if err != nil { // fall back to deleting the pair now
		err = n.d.withConn(func(c *netlink.Conn) error { return link.Delete(c, e.hostIndex) })
	}
	if err != nil {
		e.mu.Lock()
		e.detached = false
		e.mu.Unlock()
		return kernel(op, err)
	}
	n.release(e)
	return nil
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	rand.Read(b)
	return hex.EncodeToString(b)[:n]
}
