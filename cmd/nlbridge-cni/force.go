package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge"
	"golang.org/x/sys/unix"
)

// createNetwork is CreateNetwork with the reference plugin's forceAddress:
// when the bridge carries other gateway addresses than the config's, they
// are replaced instead of being a conflict.
//   - An nlbridge network of this name with another subnet is deleted and
//     made anew, if no attachment uses it; with attachments it stays a
//     conflict (their addresses are in the old subnet).
//   - A bridge that is not ours loses the addresses that clash: every other
//     IPv4 address, and IPv6 addresses whose prefix overlaps the config's.
func createNetwork(ctx context.Context, d *bridge.Driver, cfg bridge.NetworkConfig, force bool) (*bridge.Network, error) {
	n, err := d.CreateNetwork(ctx, cfg)
	for try := 0; force && try < 2 && addrConflict(err); try++ {
		if old, ok := d.Network(cfg.Name); ok {
			if eps := old.Endpoints(); len(eps) > 0 {
				return nil, types.NewError(codeConflict, fmt.Sprintf(
					"forceAddress: network %s has %d attachments in its old subnets (%s %s): DEL them first",
					cfg.Name, len(eps), old.Config().IPv4, old.Config().IPv6), "")
			}
			if err := old.Delete(ctx); err != nil {
				return nil, err
			}
		} else if err := withHostConn(func(c *netlink.Conn) error { return dropClashingAddrs(c, cfg) }); err != nil {
			return nil, fmt.Errorf("forceAddress: bridge %s: %w", cfg.Name, err)
		}
		n, err = d.CreateNetwork(ctx, cfg)
	}
	return n, err
}

// addrConflict reports a conflict on a gateway address.
func addrConflict(err error) bool {
	var e *bridge.Error
	return errors.Is(err, bridge.ErrConflict) && errors.As(err, &e) && (e.Field == "IPv4" || e.Field == "IPv6")
}

// clashes reports whether the bridge address have stands in the way of the
// config's gateway of its family, as the reference plugin decides it.
func clashes(have netip.Prefix, cfg bridge.NetworkConfig) bool {
	want := cfg.IPv6
	if have.Addr().Is4() {
		want = cfg.IPv4
	}
	switch {
	case !want.IsValid() || have == want:
		return false
	case have.Addr().Is4():
		return true
	}
	return !have.Addr().IsLinkLocalUnicast() && have.Overlaps(want)
}

// withHostConn runs fn with a route conn in the plugin's namespace.
func withHostConn(fn func(*netlink.Conn) error) error {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}
