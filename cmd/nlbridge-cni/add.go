package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/internal/nl"
	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

// cmdAdd attaches the container: config and runtime input are checked
// before anything changes, then, under the host lock, the network is
// ensured, addresses are chosen and the endpoint is attached.
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
	n, err := createNetwork(ctx, s.d, p.net, p.conf.ForceAddress)
	if err != nil {
		return nil, libError(err)
	}
	host, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return nil, err
	}
	defer host.Close()
	if p.conf.PromiscMode {
		if _, err := nl.Exec(host, promiscMsg(n.BridgeIndex())); err != nil {
			return nil, fmt.Errorf("promiscMode: bridge %s: %w", p.net.Name, err)
		}
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
	a, err := describe(host, n, e)
	if err == nil && len(p.routes) > 0 {
		err = inSandbox(e.NetNS(), func(c *netlink.Conn) error { return addRoutes(c, e.IfName(), p.routes) })
	}
	if err != nil {
		s.d.Detach(ctx, e)
		return nil, err
	}
	r := p.result(a, dres)
	return r, nil
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
