package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/nlbridge/bridge"
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
	return bridge.Options{NoFirewall: noFirewall, NoPortHolds: true,
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

// cmdDel removes the attachment, if any, and deletes its devices before
// returning; then the delegated ipam (if any) releases its address.
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

// cmdStatus reports whether ADD can work: 50 if the driver cannot open, 51
// if only the firewall cannot.
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

// cmdGC detaches the attachments of this network that
// cni.dev/valid-attachments does not list, and lets the library remove
// residue (Driver.GC).
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
