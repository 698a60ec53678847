package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/addr"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/route"
	"golang.org/x/sys/unix"
)

// cmdCheck verifies the attachment against prevResult (and runs the
// delegated ipam's CHECK).
func cmdCheck(args *skel.CmdArgs) error {
	ctx := context.Background()
	p, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if err := version.ParsePrevResult(&p.conf.PluginConf); err != nil {
		return types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	prev, err := fromPrev(p.conf.PrevResult, args.IfName)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK: "+err.Error(), "")
	}
	if !p.hostLoc {
		if err := invokeCheck(ctx, p, args); err != nil {
			return err
		}
	}
	s, err := open(ctx)
	if err != nil {
		return err
	}
	err = s.check(p, args, prev)
	s.close(ctx)
	return err
}

// check compares the kernel with prevResult: the attachment exists with
// the interface, MAC, sandbox and addresses prevResult gives; the host end
// is up on the bridge; the sandbox interface is up with those addresses.
func (s *session) check(p *plan, args *skel.CmdArgs, prev prevAttachment) error {
	id := endpointID(args.ContainerID, args.IfName)
	fail := func(format string, a ...any) error {
		return types.NewError(types.ErrInternal, "CHECK "+id+": "+fmt.Sprintf(format, a...), "")
	}
	n, ok := s.d.Network(p.net.Name)
	if !ok {
		return fail("no network %s", p.net.Name)
	}
	e, ok := n.Endpoint(id)
	if !ok {
		return fail("no attachment on %s", p.net.Name)
	}
	if !strings.EqualFold(prev.mac, e.MAC().String()) {
		return fail("MAC %s, prevResult says %s", e.MAC(), prev.mac)
	}
	if prev.netns != e.NetNS() && prev.netns != args.Netns {
		return fail("sandbox %s, prevResult says %s", e.NetNS(), prev.netns)
	}
	if prev.host != "" && prev.host != e.HostIfName() {
		return fail("host end %s, prevResult says %s", e.HostIfName(), prev.host)
	}
	have := []netip.Prefix{e.IPv4(), e.IPv6()}
	for _, a := range prev.addrs {
		if a != have[0] && a != have[1] {
			return fail("address %s of prevResult is not the attachment's (%s, %s)", a, have[0], have[1])
		}
	}
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	h, err := link.GetIndex(c, e.HostIfIndex())
	switch {
	case err != nil:
		return fail("host end %s: %v", e.HostIfName(), err)
	case h.Master != n.BridgeIndex() || !h.Up:
		return fail("host end %s is not up on bridge %s", h.Name, p.net.Name)
	}
	return checkSandboxSide(args.Netns, e, prev.addrs, p.routes, fail)
}

// STATUS codes of CNI 1.1.
const (
	codeNotAvailable uint = 50 // the plugin cannot ADD
	codeLimited      uint = 51 // and existing attachments may have limited connectivity
)

// checkSandboxSide looks inside the sandbox at path (or the endpoint's).
func checkSandboxSide(path string, e *bridge.Endpoint, want []netip.Prefix, routes []route.Route, fail func(string, ...any) error) error {
	if path == "" {
		path = e.NetNS()
	}
	var failed error
	err := inSandbox(path, func(c *netlink.Conn) error {
		failed = checkInterface(c, e.IfName(), e.MAC(), want, routes, fail)
		return nil
	})
	if err != nil {
		return fail("sandbox %s: %v", path, err)
	}
	return failed
}

// checkInterface checks the sandbox interface ifName: it exists, is up,
// has the MAC and every address of want, and the routes go out of it.
func checkInterface(c *netlink.Conn, ifName string, mac net.HardwareAddr, want []netip.Prefix, routes []route.Route,
	fail func(string, ...any) error) error {
	l, err := link.Get(c, ifName)
	switch {
	case err != nil:
		return fail("interface %s: %v", ifName, err)
	case !l.Up:
		return fail("interface %s is down", ifName)
	case !strings.EqualFold(l.MAC.String(), mac.String()):
		return fail("interface %s has MAC %s, want %s", ifName, l.MAC, mac)
	}
	have, err := addr.List(c, l.Index)
	if err != nil {
		return fail("addresses of %s: %v", ifName, err)
	}
	for _, w := range want {
		if !slices.ContainsFunc(have, func(h addr.Addr) bool { return h.Prefix == w }) {
			return fail("interface %s lacks address %s", ifName, w)
		}
	}
	if len(routes) == 0 {
		return nil
	}
	rs, err := route.List(c)
	if err != nil {
		return fail("routes: %v", err)
	}
	for _, w := range routes {
		if !slices.ContainsFunc(rs, func(r route.Route) bool { return r.Dst == w.Dst && r.Gw == w.Gw && r.Oif == l.Index }) {
			return fail("no route %s via %s dev %s", w.Dst, w.Gw, ifName)
		}
	}
	return nil
}

// The delegated ipam plugin gets the same verbs as we do.

func invokeCheck(ctx context.Context, p *plan, args *skel.CmdArgs) error {
	return invoke.DelegateCheck(ctx, p.conf.IPAM.Type, args.StdinData, nil)
}

func invokeStatus(ctx context.Context, p *plan, args *skel.CmdArgs) error {
	return invoke.DelegateStatus(ctx, p.conf.IPAM.Type, args.StdinData, nil)
}

func invokeGC(ctx context.Context, p *plan, args *skel.CmdArgs) error {
	return invoke.DelegateGC(ctx, p.conf.IPAM.Type, args.StdinData, nil)
}
