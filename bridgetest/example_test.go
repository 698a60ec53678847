package bridgetest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/bridgetest"
	"golang.org/x/sys/unix"
)

// A driver on the fake: attach a sandbox and look at it.
func Example() {
	ctx := context.Background()
	k := bridgetest.New()
	k.AddNS("/run/netns/c1")
	d, err := bridge.Open(ctx, bridge.Options{Kernel: k, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		panic(err)
	}
	defer d.Close()
	nw, err := d.CreateNetwork(ctx, bridge.NetworkConfig{Name: "br0", IPv4: netip.MustParsePrefix("10.1.0.1/24")})
	if err != nil {
		panic(err)
	}
	if _, err := nw.Attach(ctx, bridge.EndpointConfig{NetNS: "/run/netns/c1", Advertise: &bridge.Advertise{},
		Sysctls: []string{"net.ipv4.conf.IFNAME.arp_notify=1"}}); err != nil {
		panic(err)
	}
	fmt.Print(k.DumpNS("/run/netns/c1"))
	// Output:
	// netns /run/netns/c1
	//   1: lo: <loopback> UP mtu 65536
	//   2: eth0: <veth> UP mtu 1500 link/ether 02:42:0a:01:00:02 peer 3@/proc/1/ns/net addrgenmode none
	//   inet 10.1.0.2/24 dev eth0
	//   route default via 10.1.0.1 dev eth0 metric 100
	//   route 10.1.0.0/24 dev eth0 proto kernel scope link
	//   sysctl net.ipv4.conf.eth0.arp_notify = 1
}

// The next RTM_NEWLINK fails with EEXIST: the network is not created,
// and nothing is left of it.
func ExampleKernel_FailNext() {
	ctx := context.Background()
	k := bridgetest.New()
	d, err := bridge.Open(ctx, bridge.Options{Kernel: k, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		panic(err)
	}
	defer d.Close()
	before := k.DumpNS("")
	k.FailNext(bridgetest.Fault{Type: unix.RTM_NEWLINK, Errno: unix.EEXIST})
	_, err = d.CreateNetwork(ctx, bridge.NetworkConfig{Name: "br0", IPv4: netip.MustParsePrefix("10.1.0.1/24")})
	fmt.Println(errors.Is(err, unix.EEXIST), k.DumpNS("") == before)
	// Output:
	// true true
}
