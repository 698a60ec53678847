package bridge_test

import (
	"context"
	"net/netip"
	"testing"

	bridge "github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/bridgetest"
)

func TestFakeSmoke(t *testing.T) {
	ctx := context.Background()
	k := bridgetest.New()
	if err := k.AddNS("/run/netns/c1"); err != nil {
		t.Fatal(err)
	}
	d, err := bridge.Open(ctx, bridge.Options{Kernel: k})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	n, err := d.CreateNetwork(ctx, bridge.NetworkConfig{Name: "br0", IPv4: netip.MustParsePrefix("172.18.0.1/16"), IPv6: netip.MustParsePrefix("fd00:1::1/64")})
	if err != nil {
		t.Fatal(err)
	}
	e, err := n.Attach(ctx, bridge.EndpointConfig{NetNS: "/run/netns/c1", Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(k.Dump())
	if err := e.Detach(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	t.Log(k.Dump())
}
