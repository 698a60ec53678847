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

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/addr"
	"github.com/nlbridge/bridge/internal/nl"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/nsutil"
	"github.com/nlbridge/bridge/route"
	"golang.org/x/sys/unix"
)

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

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	rand.Read(b)
	return hex.EncodeToString(b)[:n]
}
