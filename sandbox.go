package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/addr"
	"github.com/nlbridge/bridge/internal/kern"
	"github.com/nlbridge/bridge/internal/nl"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/nsutil"
	"github.com/nlbridge/bridge/route"
	"golang.org/x/sys/unix"
)

// create makes the endpoint as planned. Everything that needs a thread
// in a namespace happens on one thread, which enters the sandbox and then
// the driver's namespace: the sandbox's route socket, the sysctls and the
// sockets holding published ports. On failure it leaves nothing behind:
// no link, address, route, port or reservation.
//
// Two steps run under the host lock (see hostLock): claim and commit. A
// crash between them leaves a record whose owner is dead, which GC
// removes.
func (e *Endpoint) create(ctx context.Context, op string, ns kern.NS, p attachPlan) (err error) {
	n := e.n
	hc, err := n.d.conn()
	if err != nil {
		return kernel(op, err)
	}
	stop := watch(ctx, hc)
	defer func() { stop(); n.d.release(hc, err) }()
	var sc *netlink.Conn
	var made made
	defer func() {
		if sc != nil {
			sc.Close()
		}
		if err != nil {
			e.rollback(op, made)
		}
	}()
	err = ns.Do(func(t kern.Thread) error {
		var err error
		if sc, err = t.Dial(unix.NETLINK_ROUTE); err != nil {
			return kernel(op, err)
		}
		defer watch(ctx, sc)()
		routes, err := route.List(sc)
		if err != nil {
			return kernel(op, err)
		}
		err = n.d.locked(ctx, hc, func(hc *netlink.Conn) (bool, error) {
			return e.claim(ctx, op, p, &made, ns, sc, hc, routes)
		})
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return kernel(op, err)
		}
		if err := e.configure(ctx, op, t, sc, p, routes); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return kernel(op, err)
		}
		if len(p.ports) > 0 { // the hold sockets are bound in the driver's namespace
			if err := t.Enter(n.d.host); err != nil {
				return kernel(op, err)
			}
		}
		return n.d.locked(ctx, hc, func(hc *netlink.Conn) (bool, error) {
			return e.commit(ctx, op, p, &made, t, hc)
		})
	})
	if err != nil {
		return err
	}
	if err := e.flushReused(ctx); err != nil {
		return kernel(op, err)
	}
	return e.advertise(op, p.adv, ns, sc, hc)
}

// made is what an attach has made so far, besides the links, for its
// rollback.
type made struct {
	reserved  bool // the ID, addresses and MAC
	published bool // the ports' firewall elements
}

// claim is the first step under the host lock: the ID, addresses and MAC
// are chosen among the network's endpoints as the kernel records them,
// then the veth pair is created with a record naming this process as its
// owner. It reports whether it changed a record.
func (e *Endpoint) claim(ctx context.Context, op string, p attachPlan, made *made, ns kern.NS, sc, hc *netlink.Conn, routes []route.Route) (bool, error) {
	if err := e.n.load(hc); err != nil {
		return false, kernel(op, err)
	}
	if err := e.n.reserve(op, e, p); err != nil {
		return false, err
	}
	made.reserved = true
	if err := e.checkRecord(op, p); err != nil {
		return false, err
	}
	if err := e.checkRoutes(op, routes); err != nil {
		return false, err
	}
	return true, e.createVeth(ctx, op, ns, sc, hc, p.ifName == "")
}

// commit is the second step under the host lock: the host ports are held
// and their firewall elements added, then the record is rewritten
// complete, with the ports and without an owner. It runs on thread t in
// the driver's namespace.
func (e *Endpoint) commit(ctx context.Context, op string, p attachPlan, made *made, t kern.Thread, hc *netlink.Conn) (bool, error) {
	if len(p.ports) > 0 {
		// Host ports clash across networks and processes: check against
		// every port in the firewall (complete under the lock), without
		// reading every network's endpoints.
		if err := e.n.d.withPublished(ctx, func() error { return e.holdPorts(op, t, p.ports) }); err != nil {
			var be *Error
			if errors.As(err, &be) {
				return false, err
			}
			return false, kernel(op, err)
		}
		err := e.addPorts(ctx, op)
		made.published = err == nil || nl.Done(ctx) != nil // a batch the ctx cut short may be in
		if err != nil {
			return false, err
		}
	}
	if _, err := nl.Exec(hc, link.SetAliasMsg(e.hostIndex, e.record().encode())); err != nil {
		return true, kernel(op, err)
	}
	return true, nil
}

// rollback removes what a failed create made. What it cannot remove it
// logs.
func (e *Endpoint) rollback(op string, made made) {
	n := e.n
	if e.hostIndex != 0 { // deleting the pair takes addresses and routes with it
		n.d.undoLink(op, e.hostIndex)
	}
	if !made.published { // held, but not in the firewall
		e.releasePorts()
	}
	if err := n.d.unpublish([]*Endpoint{e}); err != nil { // ports and guard, once the link is gone
		n.d.log.Error("nlbridge: undoing a failed operation", "op", op, "err", err)
	}
	e.releasePorts()
	if made.reserved {
		n.release(e)
	}
}

// record is the endpoint's record, complete.
func (e *Endpoint) record() epRecord {
	r := epRecord{ID: e.id, IfName: e.ifName, NetNS: e.netns, MAC: e.mac, IPv4: e.ipv4.Addr(), IPv6: e.ipv6.Addr()}
	e.mu.Lock()
	for _, p := range e.ports {
		r.Ports = append(r.Ports, portRecord{Proto: Proto(p.Proto), Routed: p.Routed, HostIP: p.HostIP, HostPort: p.HostPort, Port: p.Port.Port})
	}
	e.mu.Unlock()
	return r
}

// pendingRecord is the record while this process attaches the endpoint.
func (e *Endpoint) pendingRecord() epRecord {
	r := e.record()
	r.Owner = e.n.d.self
	return r
}

// configure runs in the sandbox: it writes the sysctls, then brings up lo
// and the interface with its addresses and default routes in one batch.
// On an IPv4-only network with the firewall, the interface first gets IPv6
// address generation mode none, so it comes up without any IPv6 address
// (not even a link-local one: no DAD, router solicitation or MLD report),
// and the firewall's guard drops every IPv6 frame in or out of its port,
// so none can give it one or use it. That needs no /proc access, which
// Docker's disable_ipv6 does: the first /proc/sys/net/ipv6 lookup in a new
// namespace costs milliseconds on a host with thousands of them. Without
// the firewall, disable_ipv6 it is (see writeSysctls). The IPv6 address
// and route come last: if the kernel refuses the address because IPv6 is
// off in the sandbox or on the interface, the endpoint goes on without
// IPv6.
func (e *Endpoint) configure(ctx context.Context, op string, t kern.Thread, sc *netlink.Conn, p attachPlan, routes []route.Route) error {
	sysctls := make([]nsutil.Sysctl, len(p.sysctls))
	for i, s := range p.sysctls {
		sysctls[i] = s.on(e.ifName)
	}
	if err := e.writeSysctls(op, t, sysctls); err != nil {
		return err
	}
	msgs := []netlink.Message{link.UpMsg(1)} // lo is always ifindex 1
	var ignore syscall.Errno
	if !e.n.cfg.IPv6.IsValid() && e.n.d.fw != nil {
		msgs = append(msgs, link.AddrGenModeNoneMsg(e.ifIndex))
		ignore = unix.EAFNOSUPPORT // no IPv6 in the kernel: nothing to keep off
	}
	if e.ipv4.IsValid() {
		msgs = append(msgs, addr.AddMsg(e.ifIndex, e.ipv4))
	}
	msgs = append(msgs, link.UpMsg(e.ifIndex))
	msgs = append(msgs, e.defaultRoute(e.ipv4, p.metric, routes)...)
	v6 := len(msgs)
	if e.ipv6.IsValid() {
		msgs = append(msgs, addr.AddMsg(e.ifIndex, e.ipv6))
		msgs = append(msgs, e.defaultRoute(e.ipv6, p.metric, routes)...)
	}
	_, err := nl.ExecIgnoring(sc, ignore, msgs...)
	var be *nl.BatchError
	if errors.As(err, &be) && be.Index == v6 && (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EAFNOSUPPORT)) {
		return e.dropIPv6(ctx, op)
	}
	if err != nil {
		return kernel(op, err)
	}
	return nil
}

// dropIPv6 gives up the endpoint's IPv6 address, which the sandbox refused
// (the commit's record has none): first in the guard, so that it cannot
// send from it once another endpoint takes it.
func (e *Endpoint) dropIPv6(ctx context.Context, op string) error {
	ipv6 := e.ipv6
	e.ipv6 = netip.Prefix{}
	if err := e.setGuard(ctx, op); err != nil {
		e.ipv6 = ipv6
		return err
	}
	e.n.mu.Lock()
	delete(e.n.used, ipv6.Addr())
	e.n.mu.Unlock()
	return nil
}

// createVeth creates the pair, choosing the host name at random and, when
// auto, the lowest free eth<N> in the sandbox: eth0 is tried first, which
// saves a link dump in the common case of a sandbox's first interface.
// The guard elements, keyed by the host name, go in first. Names taken
// meanwhile are retried a few times.
func (e *Endpoint) createVeth(ctx context.Context, op string, ns kern.NS, sc, hc *netlink.Conn, auto bool) error {
	n := e.n
	if auto {
		e.ifName = "eth0"
	}
	e.hostName = "veth" + randomHex(7)
	if err := e.setGuard(ctx, op); err != nil {
		return err
	}
	for try := 0; ; try++ {
		l, err := link.CreateVeth(hc, link.VethSpec{Name: e.hostName, Master: n.index, Group: n.group,
			MTU: n.cfg.MTU, PeerName: e.ifName, PeerMAC: e.mac, PeerNetNS: ns.FD(), Isolated: n.cfg.DisableICC,
			Alias: e.pendingRecord().encode()})
		if err == nil {
			e.hostIndex, e.ifIndex = l.Index, l.Peer
			return nil
		}
		if l.Index != 0 { // created, but a follow-up failed
			n.d.undoLink(op, l.Index)
			return kernel(op, err)
		}
		if errors.Is(err, unix.EXFULL) {
			return &Error{Op: op, Kind: ErrConflict, Err: fmt.Errorf("bridge %s has the kernel's maximum of 1024 ports: %w", n.cfg.Name, err)}
		}
		if !errors.Is(err, unix.EEXIST) || try == 3 {
			return kernel(op, err)
		}
		// Taken: the sandbox's name, or (rarely) the host end's.
		if auto {
			name, err := freeEthName(sc)
			if err != nil {
				return kernel(op, err)
			}
			if name != e.ifName {
				e.ifName = name
				continue
			}
		} else if _, gerr := link.Get(sc, e.ifName); gerr == nil {
			return conflict(op, "IfName", e.ifName, "the sandbox already has an interface of this name")
		}
		e.hostName = "veth" + randomHex(7)
		if err := e.setGuard(ctx, op); err != nil {
			return err
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

// writeSysctls disables IPv6 on the interface of an IPv4-only network
// without the firewall (as Docker does; with the firewall, see configure),
// and applies the caller's sysctls. It runs on a thread in the sandbox.
func (e *Endpoint) writeSysctls(op string, t kern.Thread, user []nsutil.Sysctl) error {
	if !e.n.cfg.IPv6.IsValid() && e.n.d.fw == nil {
		off := nsutil.Sysctl{Key: "net.ipv6.conf." + dotted(e.ifName) + ".disable_ipv6", Value: "1"}
		err := t.WriteSysctl(off)
		if err != nil && !errors.Is(err, os.ErrNotExist) { // no IPv6 in the kernel: nothing to disable
			return &Error{Op: op, Field: "Sysctls", Value: off.Key + "=1", Err: err}
		}
	}
	for _, s := range user {
		if err := t.WriteSysctl(s); err != nil {
			return &Error{Op: op, Field: "Sysctls", Value: strings.Join(e.sysctlKeys(user), ","), Err: err}
		}
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

// defaultRoute builds the default route, if any, that the endpoint
// provides for the family of its address p.
func (e *Endpoint) defaultRoute(p netip.Prefix, metric uint32, existing []route.Route) []netlink.Message {
	if e.n.cfg.Internal || !p.IsValid() || !e.n.cfg.gateway(p.Addr().Is6()) {
		return nil
	}
	gw := e.n.cfg.IPv4.Addr()
	if p.Addr().Is6() {
		gw = e.n.cfg.IPv6.Addr()
	}
	if metric == 0 {
		if hasDefault(existing, p.Addr().Is4()) {
			return nil
		}
		metric = autoMetric
	}
	return []netlink.Message{route.AddDefaultMsg(e.ifIndex, gw, metric)}
}

func hasDefault(routes []route.Route, v4 bool) bool {
	for _, r := range routes {
		if r.IsDefault() && r.Dst.Addr().Is4() == v4 {
			return true
		}
	}
	return false
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	rand.Read(b)
	return hex.EncodeToString(b)[:n]
}
