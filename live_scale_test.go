package bridge_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/internal/testenv"
)

// TestLiveManyEndpointsDetachAndDeleteInBatches detaches 150 endpoints in
// one Driver.Detach and deletes a network of 150 more, each endpoint with
// a published port. Their requests, hundreds per batch, once overflowed
// the netlink sockets' receive buffers with acks, and the lost acks were
// waited for forever.
func TestLiveManyEndpointsDetachAndDeleteInBatches(t *testing.T) {
	d, host := hostDriver(t)
	cfg := bridge.NetworkConfig{Name: "nlbt0", IPv4: netip.MustParsePrefix("172.29.0.1/16")}
	n, err := d.CreateNetwork(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var eps []*bridge.Endpoint
	for range 300 {
		ep, err := n.Attach(ctx, bridge.EndpointConfig{NetNS: testenv.NetNS(t, "sb").Path(), Advertise: &bridge.Advertise{},
			Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostIP: netip.IPv4Unspecified(), ContainerPort: 80}}})
		if err != nil {
			t.Fatal(err)
		}
		eps = append(eps, ep)
	}
	within := func(what string, fn func() error) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- fn() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("%s hangs", what)
		}
	}
	within("detach 150 endpoints at once", func() error { return d.Detach(ctx, eps[:150]...) })
	within("delete a network of 150 endpoints", func() error { return n.Delete(ctx) })
	testenv.NoElements(t, host, "nlbridge")
}
