package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/bridgetest"
	"golang.org/x/sys/unix"
)

// These examples run on bridgetest's in-memory kernel, so go test checks
// their output without root. On a real host, leave Options.Kernel nil.

// Create a network and attach a sandbox; the sandbox's interface,
// addresses and routes as the kernel shows them.
func Example_bridgetest() {
	ctx := context.Background()
	k := bridgetest.New()
	k.AddNS("/run/netns/c1") // what `ip netns add c1` makes

	d, err := bridge.Open(ctx, bridge.Options{Kernel: k, Logger: discardLog()})
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
	ep, err := nw.Attach(ctx, bridge.EndpointConfig{NetNS: "/run/netns/c1", Advertise: &bridge.Advertise{}})
	if err != nil {
		panic(err)
	}
	fmt.Println(ep.IfName(), ep.IPv4(), ep.IPv6(), ep.MAC())
	fmt.Print(k.DumpNS("/run/netns/c1"))
	// Output:
	// eth0 172.18.0.2/16 fd18::2/64 02:42:ac:12:00:02
	// netns /run/netns/c1
	//   1: lo: <loopback> UP mtu 65536
	//   2: eth0: <veth> UP mtu 1500 link/ether 02:42:ac:12:00:02 peer 3@/proc/1/ns/net
	//   inet 172.18.0.2/16 dev eth0
	//   inet6 fd18::2/64 dev eth0
	//   route default via 172.18.0.1 dev eth0 metric 100
	//   route 172.18.0.0/16 dev eth0 proto kernel scope link
	//   route default via fd18::1 dev eth0 metric 100
	//   route fd18::/64 dev eth0 proto kernel scope link metric 256
}

// Publish a port: the firewall maps it to the sandbox, and a socket holds
// the host port. Detach takes both away.
func ExampleNetwork_Attach_ports() {
	ctx := context.Background()
	k := bridgetest.New()
	k.AddNS("/run/netns/web")
	d, err := bridge.Open(ctx, bridge.Options{Kernel: k, Logger: discardLog()})
	if err != nil {
		panic(err)
	}
	defer d.Close()
	nw, err := d.CreateNetwork(ctx, bridge.NetworkConfig{Name: "br-web", IPv4: netip.MustParsePrefix("10.88.0.1/24")})
	if err != nil {
		panic(err)
	}
	ep, err := nw.Attach(ctx, bridge.EndpointConfig{NetNS: "/run/netns/web", Advertise: &bridge.Advertise{},
		Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}})
	if err != nil {
		panic(err)
	}
	fmt.Println(ep.Ports())
	printLines(k.DumpNS(""), "8080", "bound", "elements")

	if err := ep.Detach(ctx); err != nil {
		panic(err)
	}
	fmt.Println("after detach:")
	printLines(k.DumpNS(""), "8080", "bound", "elements")
	// Output:
	// [tcp 0.0.0.0:8080->80]
	// bound tcp 0.0.0.0:8080
	// elements = { tcp . 8080 : 10.88.0.2 . 80 }
	// after detach:
}

// Restart: a driver opened again on the same kernel recovers the network
// and its endpoints from the records the kernel keeps.
func ExampleOpen_restart() {
	ctx := context.Background()
	k := bridgetest.New()
	k.AddNS("/run/netns/c1")
	d, err := bridge.Open(ctx, bridge.Options{Kernel: k, Logger: discardLog()})
	if err != nil {
		panic(err)
	}
	nw, err := d.CreateNetwork(ctx, bridge.NetworkConfig{Name: "br0", IPv4: netip.MustParsePrefix("10.1.0.1/24")})
	if err != nil {
		panic(err)
	}
	if _, err := nw.Attach(ctx, bridge.EndpointConfig{ID: "db", NetNS: "/run/netns/c1", Advertise: &bridge.Advertise{}}); err != nil {
		panic(err)
	}
	d.Close() // or the process dies

	d, err = bridge.Open(ctx, bridge.Options{Kernel: k, Logger: discardLog()})
	if err != nil {
		panic(err)
	}
	defer d.Close()
	for _, n := range d.Networks() {
		for _, e := range n.Endpoints() {
			fmt.Println(n.Config().Name, e.ID(), e.NetNS(), e.IfName(), e.IPv4())
		}
	}
	// Output:
	// br0 db /run/netns/c1 eth0 10.1.0.2/24
}

// Inject a kernel error: the attach fails with it, and leaves nothing.
func ExampleNetwork_Attach_kernelError() {
	ctx := context.Background()
	k := bridgetest.New()
	k.AddNS("/run/netns/c1")
	d, err := bridge.Open(ctx, bridge.Options{Kernel: k, Logger: discardLog()})
	if err != nil {
		panic(err)
	}
	defer d.Close()
	nw, err := d.CreateNetwork(ctx, bridge.NetworkConfig{Name: "br0", IPv4: netip.MustParsePrefix("10.1.0.1/24")})
	if err != nil {
		panic(err)
	}
	host := k.DumpNS("")
	k.FailNext(bridgetest.Fault{Type: unix.RTM_NEWADDR, NetNS: "/run/netns/c1", Errno: unix.EADDRNOTAVAIL})
	_, err = nw.Attach(ctx, bridge.EndpointConfig{NetNS: "/run/netns/c1", Advertise: &bridge.Advertise{}})
	fmt.Println(errors.Is(err, unix.EADDRNOTAVAIL))
	fmt.Println(k.DumpNS("") == host)
	fmt.Print(k.DumpNS("/run/netns/c1"))
	// Output:
	// true
	// true
	// netns /run/netns/c1
	//   1: lo: <loopback> UP mtu 65536
}

// printLines prints the lines of s that contain word and any of kinds.
func printLines(s, word string, kinds ...string) {
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, word) {
			continue
		}
		for _, k := range kinds {
			if strings.Contains(l, k) {
				fmt.Println(strings.TrimSpace(l))
				break
			}
		}
	}
}
