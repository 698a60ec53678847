package bridgetest

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/disco"
	"github.com/nlbridge/bridge/internal/kern"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

// writeSysctl writes a net.* parameter. Per-device keys
// (net.ipv4.conf.IF.key, net.ipv6.conf.IF.key, and neigh) exist only while
// the device does; "all" and "default" always.
func (k *Kernel) writeSysctl(ns *netns, s nsutil.Sysctl) error {
	p, err := s.Path()
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	fail := func(errno syscall.Errno) error {
		return fmt.Errorf("sysctl %s=%s: %w", s.Key, s.Value, &os.PathError{Op: "open", Path: p, Err: errno})
	}
	errno := k.fault(ns, netlink.Message{}, s.Key)
	k.runHooks()
	if errno != 0 {
		return fail(errno)
	}
	parts := strings.Split(strings.TrimPrefix(p, "/proc/sys/net/"), "/")
	if len(parts) == 4 && (parts[1] == "conf" || parts[1] == "neigh") && parts[2] != "all" && parts[2] != "default" {
		l := ns.byName(parts[2])
		if l == nil {
			return fail(syscall.ENOENT)
		}
		l.sysctls[parts[0]+"."+parts[1]+"."+parts[3]] = s.Value
		return nil
	}
	ns.sysctls[s.Key] = s.Value
	return nil
}

// portKey is a bound port.
type portKey struct {
	proto uint8
	ip    netip.Addr
	port  uint16
}

func (a portKey) clashes(b portKey) bool {
	return a.proto == b.proto && a.port == b.port && a.ip.Is4() == b.ip.Is4() &&
		(a.ip == b.ip || a.ip.IsUnspecified() || b.ip.IsUnspecified())
}

// bind binds a port-holding socket (IPv6 ones are v6-only).
func (k *Kernel) bind(ns *netns, proto uint8, ip netip.Addr, port uint16) (io.Closer, uint16, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if port == 0 {
		for p := uint16(32768); p < 61000; p++ {
			if !ns.bound(portKey{proto, ip, p}) {
				port = p
				break
			}
		}
	}
	key := portKey{proto, ip, port}
	if port == 0 || ns.bound(key) {
		return nil, 0, fmt.Errorf("%w: proto %d %s", kern.ErrPortTaken, proto, netip.AddrPortFrom(ip, port))
	}
	ns.ports[key] = true
	return &hold{k: k, ns: ns, key: key}, port, nil
}

func (ns *netns) bound(key portKey) bool {
	for o := range ns.ports {
		if o.clashes(key) {
			return true
		}
	}
	return false
}

// hold is a bound socket.
type hold struct {
	k    *Kernel
	ns   *netns
	key  portKey
	once sync.Once
}

func (h *hold) Close() error {
	h.once.Do(func() {
		h.k.mu.Lock()
		delete(h.ns.ports, h.key)
		h.k.mu.Unlock()
	})
	return nil
}

// HoldPort binds a port in the namespace at path as another process
// would (proto unix.IPPROTO_TCP, ...; an unspecified address is every
// address of its family), until the returned func is called.
func (k *Kernel) HoldPort(path string, proto uint8, ap netip.AddrPort) (release func(), err error) {
	if path == "" {
		path = HostNS
	}
	k.mu.Lock()
	ns := k.nss[path]
	k.mu.Unlock()
	if ns == nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: syscall.ENOENT}
	}
	h, _, err := k.bind(ns, proto, ap.Addr(), ap.Port())
	if err != nil {
		return nil, err
	}
	return func() { h.Close() }, nil
}

// announcer is the fake's gratuitous ARP / NA sender: it checks the MAC
// as disco.Announcer does and counts what it would send.
type announcer struct {
	k     *Kernel
	ns    *netns
	index int
	mac   net.HardwareAddr
	ip4   netip.Addr
	ip6   netip.Addr
	rt    *netlink.Conn
}

func (k *Kernel) announcer(ns *netns, index int, mac net.HardwareAddr, ip4, ip6 netip.Addr) (kern.Announcer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if ns.links[uint32(index)] == nil {
		return nil, fmt.Errorf("open ARP socket: %w", syscall.ENODEV)
	}
	return &announcer{k: k, ns: ns, index: index, mac: mac, ip4: ip4, ip6: ip6}, nil
}

func (a *announcer) Send(rt *netlink.Conn) error {
	if rt == nil {
		if a.rt == nil {
			c, err := a.k.dial(a.ns, unix.NETLINK_ROUTE)
			if err != nil {
				return err
			}
			a.rt = c
		}
		rt = a.rt
	}
	l, err := link.GetIndex(rt, uint32(a.index))
	if err != nil {
		return err
	}
	if l.MAC.String() != a.mac.String() {
		return fmt.Errorf("%w: %s is now %s", disco.ErrMACChanged, a.mac, l.MAC)
	}
	a.k.mu.Lock()
	defer a.k.mu.Unlock()
	for _, ip := range []netip.Addr{a.ip4, a.ip6} {
		if ip.IsValid() {
			a.ns.announced = append(a.ns.announced, fmt.Sprintf("%s at %s on %s", ip, a.mac, l.Name))
		}
	}
	return nil
}

func (a *announcer) Close() error {
	if a.rt != nil {
		return a.rt.Close()
	}
	return nil
}

// Announcements lists the announcements sent in the namespace at path so
// far, in order, each "IP at MAC on IFNAME".
func (k *Kernel) Announcements(path string) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	if ns := k.nss[path]; ns != nil {
		return append([]string(nil), ns.announced...)
	}
	return nil
}
