package bridge

import (
	"context"
	"net"
	"net/netip"
	"sync"

	"github.com/nlbridge/bridge/nat"
	"github.com/nlbridge/bridge/nsutil"
)

// EndpointConfig describes a sandbox's interface on a network. NetNS is
// required; everything else may be left zero.
type EndpointConfig struct {
	// ID is the caller's key for the endpoint, unique within the network
	// (Docker's endpoint ID; for CNI, the container ID and interface
	// name); "" = a random one.
	ID string

	NetNS  string           // path of the sandbox netns, e.g. /run/netns/c1
	IfName string           // name inside the sandbox; "" = lowest free eth<N>
	IPv4   netip.Prefix     // e.g. 172.18.0.2/16; zero = lowest free address (when the network has IPv4)
	IPv6   netip.Prefix     // zero = lowest free address (when the network has IPv6)
	MAC    net.HardwareAddr // nil = 02:42 + the 4 IPv4 address bytes (random without IPv4)

	// Sysctls are set on the interface before it comes up, each written
	// "net.<family>.<group>.IFNAME.<key>=<value>", IFNAME standing for the
	// interface, e.g. "net.ipv4.conf.IFNAME.arp_notify=1".
	Sysctls []string

	// RouteMetric chooses the default routes. 0 (automatic): a default
	// route with metric 100 per family via the gateway, only if the sandbox
	// has no default route of that family yet, so the first network joined
	// provides it. Non-zero: a default route with this metric in any case;
	// the lowest metric wins, so a value below 100 takes over from an
	// automatic route. Internal networks never add default routes.
	RouteMetric uint32

	// Ports are published on the host (see PortMapping); they need the
	// firewall.
	Ports []PortMapping

	// Advertise sets the gratuitous ARP / unsolicited NA announcements
	// after attach; nil = DefaultAdvertise (3, one second apart). The first
	// is sent before Attach returns, unless the interface cannot send
	// within 200 ms (a loaded host): then it goes out with the others.
	Advertise *Advertise
}

// autoMetric is the metric of automatic default routes.
const autoMetric = 100

// Endpoint is a sandbox's interface on a network: a veth pair whose host
// end is on the bridge. Its methods are safe for concurrent use.
type Endpoint struct {
	n         *Network
	id        string
	recovered bool // read back from the kernel: nsID unknown
	netns     string
	hostName  string
	hostIndex uint32
	ifName    string
	ifIndex   uint32
	nsID      nsutil.ID // identity of the sandbox namespace
	mac       net.HardwareAddr
	ipv4      netip.Prefix
	ipv6      netip.Prefix

	mu       sync.Mutex
	detached bool
	stopAdv  context.CancelFunc // cancels background announcements; nil if none
	advGate  *advGate           // background sends pass it; nil if none
	ports    []published
	guard    *nat.Guard // the elements in the firewall's guard; nil if none
}

// ID is the endpoint's key within its network (EndpointConfig.ID).
func (e *Endpoint) ID() string { return e.id }

// Network is the network the endpoint is attached to.
func (e *Endpoint) Network() *Network { return e.n }

// NetNS is the path of the sandbox namespace.
func (e *Endpoint) NetNS() string { return e.netns }

// HostIfName is the name of the host end (on the bridge).
func (e *Endpoint) HostIfName() string { return e.hostName }

// HostIfIndex is the index of the host end in the driver's namespace.
func (e *Endpoint) HostIfIndex() uint32 { return e.hostIndex }

// IfName is the name of the interface inside the sandbox.
func (e *Endpoint) IfName() string { return e.ifName }

// IfIndex is the index of the interface inside the sandbox.
func (e *Endpoint) IfIndex() uint32 { return e.ifIndex }

// MAC is the sandbox interface's MAC address.
func (e *Endpoint) MAC() net.HardwareAddr { return append(net.HardwareAddr(nil), e.mac...) }

// IPv4 is the sandbox interface's IPv4 address; zero if none.
func (e *Endpoint) IPv4() netip.Prefix { return e.ipv4 }

// IPv6 is the sandbox interface's IPv6 address; zero if none (also when a
// sysctl disabled IPv6 on the interface).
func (e *Endpoint) IPv6() netip.Prefix { return e.ipv6 }

// markDetached flags the endpoint as gone and reports whether it was
// attached until now.
func (e *Endpoint) markDetached() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	was := !e.detached
	e.detached = true
	return was
}
