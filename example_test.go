package bridge_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/nlbridge/bridge"
)

// Create a dual-stack network, attach a sandbox, and tear both down.
func Example() {
	ctx := context.Background()
	d, err := bridge.Open(ctx, bridge.Options{NetNS: "/run/netns/host"})
	if err != nil {
		panic(err)
	}
	defer d.Close()

	nw, err := d.CreateNetwork(ctx, bridge.NetworkConfig{
		Name: "br-app",
		IPv4: netip.MustParsePrefix("172.18.0.1/16"),
		IPv6: netip.MustParsePrefix("fd18::1/64"),
	})
	if err != nil {
		panic(err)
	}
	ep, err := nw.Attach(ctx, bridge.EndpointConfig{NetNS: "/run/netns/c1"})
	if err != nil {
		panic(err)
	}
	fmt.Println(ep.IfName(), ep.IPv4(), ep.IPv6(), ep.MAC())

	if err := ep.Detach(ctx); err != nil {
		panic(err)
	}
	if err := nw.Delete(ctx); err != nil {
		panic(err)
	}
}
