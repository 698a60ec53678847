package main

import (
	"context"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/addr"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

// STATUS codes of CNI 1.1.
const (
	codeNotAvailable uint = 50 // the plugin cannot ADD
	codeLimited      uint = 51 // and existing attachments may have limited connectivity
)

// checkSandboxSide looks inside the sandbox: the interface exists, is up,
// has the endpoint's MAC and every address of prevResult.
func checkSandboxSide(path string, e *bridge.Endpoint, want []netip.Prefix, fail func(string, ...any) error) error {
	if path == "" {
		path = e.NetNS()
	}
	ns, err := nsutil.Open(path)
	if err != nil {
		return fail("sandbox %s: %v", path, err)
	}
	defer ns.Close()
	c, err := ns.Dial(unix.NETLINK_ROUTE)
	if err != nil {
		return fail("sandbox %s: %v", path, err)
	}
	defer c.Close()
	l, err := link.Get(c, e.IfName())
	switch {
	case err != nil:
		return fail("interface %s in %s: %v", e.IfName(), path, err)
	case !l.Up:
		return fail("interface %s in %s is down", e.IfName(), path)
	case !strings.EqualFold(l.MAC.String(), e.MAC().String()):
		return fail("interface %s has MAC %s, want %s", e.IfName(), l.MAC, e.MAC())
	}
	have, err := addr.List(c, l.Index)
	if err != nil {
		return fail("addresses of %s: %v", e.IfName(), err)
	}
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h.Prefix == w
		}
		if !found {
			return fail("interface %s lacks address %s", e.IfName(), w)
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
