package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

// endpointID is the library key of an attachment: what GC's
// cni.dev/valid-attachments names.
func endpointID(containerID, ifName string) string { return containerID + "/" + ifName }

// session is one call's driver, opened under the host lock.
type session struct {
	d      *bridge.Driver
	unlock func()
}

// driverOptions: the caller's namespace is the host; the library's
// informational log (e.g. a repaired table) stays out of the runtime's
// stderr, warnings and errors go there.
func driverOptions(noFirewall bool) bridge.Options {
	return bridge.Options{NoFirewall: noFirewall,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
}

func open(ctx context.Context) (*session, error) {
	unlock, err := lockHost()
	if err != nil {
		return nil, err
	}
	d, err := bridge.Open(ctx, driverOptions(false))
	if err != nil {
		unlock()
		return nil, libError(err)
	}
	return &session{d: d, unlock: unlock}, nil
}

// close deletes the devices of endpoints detached in this call (a process
// that exits cannot leave that to the driver's goroutine), then closes.
func (s *session) close(ctx context.Context) error {
	err := s.d.Reclaim(ctx)
	s.d.Close()
	s.unlock()
	return err
}

func cmdAdd(args *skel.CmdArgs) error {
	ctx := context.Background()
	p, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if err := checkIfName(args.IfName); err != nil {
		return err
	}
	req, err := parseRequest(p.conf, args.Args)
	if err != nil {
		return err
	}
	if err := checkSandbox(args.Netns); err != nil {
		return err
	}
	dns := types.DNS{}
	if p.conf.IPAM.ResolvConf != "" && p.hostLoc {
		if dns, err = readResolvConf(p.conf.IPAM.ResolvConf); err != nil {
			return err
		}
	}
	s, err := open(ctx)
	if err != nil {
		return err
	}
	res, err := s.add(ctx, p, req, args)
	if cerr := s.close(ctx); err == nil && cerr != nil {
		err = libError(cerr)
	}
	if err != nil {
		return err
	}
	if res.DNS.IsEmpty() {
		res.DNS = dns
	}
	return types.PrintResult(res, p.conf.CNIVersion)
}

func (s *session) add(ctx context.Context, p *plan, req *request, args *skel.CmdArgs) (_ *current.Result, err error) {
	id := endpointID(args.ContainerID, args.IfName)
	want := req.ips
	var dres types.DNS
	if !p.hostLoc {
		del := delegate{typ: p.conf.IPAM.Type, stdin: args.StdinData}
		r, got, err := del.add(ctx, p)
		if err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				del.del(ctx)
			}
		}()
		want, dres = got, r.DNS
	}
	n, err := s.d.CreateNetwork(ctx, p.net)
	if err != nil {
		return nil, libError(err)
	}
	used := map[netip.Addr]bool{}
	for _, e := range n.Endpoints() {
		if e.ID() == id {
			return nil, types.NewError(codeExists, fmt.Sprintf("attachment %s exists on %s: DEL it first", id, p.net.Name), "")
		}
		used[e.IPv4().Addr()], used[e.IPv6().Addr()] = true, true
	}
	var w4, w6 netip.Addr
	for _, a := range want {
		if a.Is4() {
			w4 = a
		} else {
			w6 = a
		}
	}
	cfg := bridge.EndpointConfig{ID: id, NetNS: args.Netns, IfName: args.IfName, MAC: req.mac,
		Ports: req.ports}
	cfg.Advertise, cfg.Sysctls = p.announcement()
	var e *bridge.Endpoint
	// An address the plugin chose may be claimed by an attach the record
	// shows only as in flight: take the next one.
	for try := 0; ; try++ {
		if cfg.IPv4, err = choose(p.v4, w4, used); err != nil {
			return nil, err
		}
		if cfg.IPv6, err = choose(p.v6, w6, used); err != nil {
			return nil, err
		}
		if !w4.IsValid() && p.v4 != nil && p.v4.whole() {
			cfg.IPv4 = netip.Prefix{} // the library's lowest free is the same, chosen under its own lock
		}
		if !w6.IsValid() && p.v6 != nil && p.v6.whole() {
			cfg.IPv6 = netip.Prefix{}
		}
		e, err = n.Attach(ctx, cfg)
		var be *bridge.Error
		if err == nil || try == 8 || !errors.Is(err, bridge.ErrConflict) || !errors.As(err, &be) ||
			(be.Field != "IPv4" || w4.IsValid() || !cfg.IPv4.IsValid()) && (be.Field != "IPv6" || w6.IsValid() || !cfg.IPv6.IsValid()) {
			break
		}
		if be.Field == "IPv4" {
			used[cfg.IPv4.Addr()] = true
		} else {
			used[cfg.IPv6.Addr()] = true
		}
	}
	if err != nil {
		return nil, libError(err)
	}
	a, err := s.describe(n, e)
	if err != nil {
		s.d.Detach(ctx, e)
		return nil, err
	}
	r := p.result(a, dres)
	return r, nil
}

// describe reads the MACs of the bridge and the host end for the result.
func (s *session) describe(n *bridge.Network, e *bridge.Endpoint) (attachment, error) {
	a := attachment{bridge: n.Config().Name, hostName: e.HostIfName(), mac: e.MAC(), ifName: e.IfName(),
		netns: e.NetNS(), v4: e.IPv4(), v6: e.IPv6(), gw4: n.Config().IPv4.Addr(), gw6: n.Config().IPv6.Addr()}
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return a, err
	}
	defer c.Close()
	br, err := link.GetIndex(c, n.BridgeIndex())
	if err != nil {
		return a, fmt.Errorf("read bridge %s: %w", a.bridge, err)
	}
	h, err := link.GetIndex(c, e.HostIfIndex())
	if err != nil {
		return a, fmt.Errorf("read host end %s: %w", a.hostName, err)
	}
	a.bridgeMAC, a.hostMAC = br.MAC, h.MAC
	return a, nil
}

// checkSandbox refuses a CNI_NETNS that is missing or is the plugin's own
// namespace, before anything is changed.
func checkSandbox(path string) error {
	if path == "" {
		return argsError("CNI_NETNS is required")
	}
	ns, err := nsutil.Open(path)
	if err != nil {
		return argsError("CNI_NETNS %s: %v", path, err)
	}
	defer ns.Close()
	self, err := nsutil.Current()
	if err != nil {
		return err
	}
	defer self.Close()
	if ns.ID() == self.ID() {
		return types.NewError(types.ErrInvalidNetNS, "CNI_NETNS "+path+" is the plugin's own namespace", "")
	}
	return nil
}

func cmdDel(args *skel.CmdArgs) error {
	ctx := context.Background()
	p, err := parseConf(args.StdinData)
	if err != nil {
		// A config that ADD would refuse now still names the bridge and
		// the ipam: DEL must be able to clean up.
		if p, err = parseForDel(args.StdinData); err != nil {
			return err
		}
	}
	s, err := open(ctx)
	if err != nil {
		return err
	}
	err = s.del(ctx, p, endpointID(args.ContainerID, args.IfName))
	if cerr := s.close(ctx); err == nil && cerr != nil {
		err = libError(cerr)
	}
	if err != nil {
		return err
	}
	if !p.hostLoc {
		return delegate{typ: p.conf.IPAM.Type, stdin: args.StdinData}.del(ctx)
	}
	return nil
}

// del detaches the attachment if it exists: with or without netns or
// prevResult, the ID finds it in the kernel record.
func (s *session) del(ctx context.Context, p *plan, id string) error {
	n, ok := s.d.Network(p.net.Name)
	if !ok {
		return nil
	}
	e, ok := n.Endpoint(id)
	if !ok {
		return nil
	}
	return libError(s.d.Detach(ctx, e))
}

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
	return checkSandboxSide(args.Netns, e, prev.addrs, fail)
}

func cmdStatus(args *skel.CmdArgs) error {
	ctx := context.Background()
	p, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	d, err := bridge.Open(ctx, driverOptions(false))
	if err != nil {
		// Without the firewall, links still work: existing attachments
		// keep L2/L3 but may lose NAT and published ports.
		if d2, err2 := bridge.Open(ctx, driverOptions(true)); err2 == nil {
			d2.Close()
			return types.NewError(codeLimited, "nlbridge: firewall unavailable: "+err.Error(), "")
		}
		return types.NewError(codeNotAvailable, "nlbridge: "+err.Error(), "")
	}
	d.Close()
	if !p.hostLoc {
		return invokeStatus(ctx, p, args)
	}
	return nil
}

func cmdGC(args *skel.CmdArgs) error {
	ctx := context.Background()
	p, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	valid := map[string]bool{}
	for _, a := range p.conf.ValidAttachments {
		valid[endpointID(a.ContainerID, a.IfName)] = true
	}
	s, err := open(ctx)
	if err != nil {
		return err
	}
	err = s.d.GC(ctx, func(e *bridge.Endpoint) bool {
		return e.Network().Config().Name != p.net.Name || valid[e.ID()]
	})
	if cerr := s.close(ctx); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return libError(err)
	}
	if !p.hostLoc {
		return invokeGC(ctx, p, args)
	}
	return nil
}
