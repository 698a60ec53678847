package bridgetest

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/disco"
	"github.com/nlbridge/bridge/internal/kern"
	"github.com/nlbridge/bridge/link"
	"golang.org/x/sys/unix"
)

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
