// Package disco announces an interface's addresses to its neighbours, so
// that caches holding a stale MAC for a reused address are corrected at
// once: a gratuitous ARP for IPv4 (AF_PACKET, mdlayher/packet) and an
// unsolicited Neighbour Advertisement with the Override flag to ff02::1 for
// IPv6 (ICMPv6, encoded by mdlayher/ndp). The sockets are created inside
// the interface's namespace without moving the caller's thread, and no
// process is started.
//
// On its own it gives: Open, an Announcer for one interface whose Send
// sends both announcements (checking first that the interface still has
// the MAC); Gratuitous, ParseARP and UnsolicitedNA, which build and parse
// the frames.
package disco

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/mdlayher/ndp"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/packet"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

// broadcast is the Ethernet broadcast address.
var broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Announcer sends announcements for one interface. Open it, call Send as
// often as needed, then Close. It is not safe for concurrent use.
type Announcer struct {
	index int
	mac   net.HardwareAddr
	ip4   netip.Addr
	ip6   netip.Addr
	arp   *packet.Conn // nil without IPv4
	icmp6 *os.File     // raw ICMPv6 socket bound to ip6; nil without IPv6
	ns    *nsutil.NS   // for a netlink conn to re-read the MAC
	rt    *netlink.Conn
}

// Open creates the sockets inside ns for interface index, which should
// carry mac, ip4 and ip6 (either may be zero to skip that family). The
// IPv6 address must not be tentative (add it with IFA_F_NODAD). The
// Announcer keeps its own handle on ns.
func Open(ns *nsutil.NS, index int, mac net.HardwareAddr, ip4, ip6 netip.Addr) (*Announcer, error) {
	a := &Announcer{index: index, mac: mac, ip4: ip4, ip6: ip6}
	// By index only: x/net resolves interface names through a
	// process-wide cache filled from the host namespace.
	ifi := &net.Interface{Index: index, HardwareAddr: mac}
	err := ns.Do(func() (err error) {
		if ip4.IsValid() {
			if a.arp, err = packet.Listen(ifi, packet.Datagram, unix.ETH_P_ARP, nil); err != nil {
				return fmt.Errorf("open ARP socket: %w", err)
			}
		}
		if ip6.IsValid() {
			if a.icmp6, err = openICMPv6(index, ip6); err != nil {
				return fmt.Errorf("open ICMPv6 socket: %w", err)
			}
		}
		return nil
	})
	if err == nil {
		a.ns, err = ns.Dup()
	}
	if err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// openICMPv6 opens a raw ICMPv6 socket in the calling thread's namespace,
// bound to src, sending multicast out of interface index with hop limit
// 255 (RFC 4861). The kernel computes ICMPv6 checksums itself.
func openICMPv6(index int, src netip.Addr) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "icmpv6")
	for _, o := range [][2]int{{unix.IPV6_MULTICAST_HOPS, 255}, {unix.IPV6_UNICAST_HOPS, 255}, {unix.IPV6_MULTICAST_IF, index}} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, o[0], o[1]); err != nil {
			f.Close()
			return nil, err
		}
	}
	// Receive nothing: this socket only sends.
	var filter unix.ICMPv6Filter
	for i := range filter.Data {
		filter.Data[i] = 0xffffffff
	}
	if err := unix.SetsockoptICMPv6Filter(fd, unix.IPPROTO_ICMPV6, unix.ICMPV6_FILTER, &filter); err != nil {
		f.Close()
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet6{Addr: src.As16(), ZoneId: uint32(index)}); err != nil {
		f.Close()
		return nil, fmt.Errorf("bind %s: %w", src, err)
	}
	return f, nil
}

// ErrMACChanged is returned by Send when the interface no longer has the
// MAC being announced; nothing is sent.
var ErrMACChanged = errors.New("interface MAC changed")

// Send re-reads the interface's MAC through rt, a NETLINK_ROUTE conn in the
// interface's namespace (nil: the Announcer dials its own), fails with
// ErrMACChanged if it is no longer the announced one, and otherwise sends
// one gratuitous ARP and one unsolicited NA.
func (a *Announcer) Send(rt *netlink.Conn) error {
	if rt == nil {
		if a.rt == nil {
			c, err := a.ns.Dial(unix.NETLINK_ROUTE)
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
		return fmt.Errorf("%w: %s is now %s", ErrMACChanged, a.mac, l.MAC)
	}
	if a.arp != nil {
		b, err := Gratuitous(a.mac, a.ip4).MarshalBinary()
		if err != nil {
			return err
		}
		if _, err := a.arp.WriteTo(b, &packet.Addr{HardwareAddr: broadcast}); err != nil {
			return fmt.Errorf("send gratuitous ARP for %s: %w", a.ip4, err)
		}
	}
	if a.icmp6 != nil {
		b, err := UnsolicitedNA(a.mac, a.ip6)
		if err != nil {
			return err
		}
		dst := &unix.SockaddrInet6{Addr: netip.IPv6LinkLocalAllNodes().As16(), ZoneId: uint32(a.index)}
		if err := unix.Sendto(int(a.icmp6.Fd()), b, 0, dst); err != nil {
			return fmt.Errorf("send neighbour advertisement for %s: %w", a.ip6, err)
		}
	}
	return nil
}

// UnsolicitedNA encodes the ICMPv6 Neighbour Advertisement announcing that
// ip is at mac: Override set, Solicited clear, target link-layer option.
// The checksum is left for the kernel.
func UnsolicitedNA(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	return ndp.MarshalMessage(&ndp.NeighborAdvertisement{Override: true, TargetAddress: ip,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}}})
}

// Close closes the sockets.
func (a *Announcer) Close() error {
	var errs []error
	if a.arp != nil {
		errs = append(errs, a.arp.Close())
	}
	if a.icmp6 != nil {
		errs = append(errs, a.icmp6.Close())
	}
	if a.rt != nil {
		errs = append(errs, a.rt.Close())
	}
	if a.ns != nil {
		errs = append(errs, a.ns.Close())
	}
	return errors.Join(errs...)
}
