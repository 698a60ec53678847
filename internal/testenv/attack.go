package testenv

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

// What a hostile sandbox sends, with the sockets any root process in its
// namespace can open.

// SendARP broadcasts an Ethernet/IPv4 ARP packet (28 bytes, e.g. from
// disco.ARP.MarshalBinary) out of interface index in ns; the kernel adds
// the Ethernet header with the interface's MAC.
func SendARP(ns *nsutil.NS, index int, arp []byte) error {
	return ns.Do(func() error {
		c, err := packet.Listen(&net.Interface{Index: index}, packet.Datagram, unix.ETH_P_ARP, nil)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.WriteTo(arp, &packet.Addr{HardwareAddr: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}})
		return err
	})
}

// SendICMPv6 sends an ICMPv6 message (e.g. from ndp.MarshalMessage; the
// kernel fills in the checksum) from src to dst out of interface index in
// ns, with hop limit 255 as NDP requires. src must be an address of the
// interface that is not tentative.
func SendICMPv6(ns *nsutil.NS, index int, src, dst netip.Addr, msg []byte) error {
	return ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), "icmpv6")
		defer f.Close()
		for _, o := range [][2]int{{unix.IPV6_MULTICAST_HOPS, 255}, {unix.IPV6_UNICAST_HOPS, 255}, {unix.IPV6_MULTICAST_IF, index}} {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, o[0], o[1]); err != nil {
				return err
			}
		}
		if err := unix.Bind(fd, &unix.SockaddrInet6{Addr: src.As16(), ZoneId: uint32(index)}); err != nil {
			return fmt.Errorf("bind %s: %w", src, err)
		}
		return unix.Sendto(fd, msg, 0, &unix.SockaddrInet6{Addr: dst.As16(), ZoneId: uint32(index)})
	})
}

// RogueRA is a Router Advertisement offering a default route and the
// prefix for SLAAC, with mac as source link-layer address.
func RogueRA(mac net.HardwareAddr, prefix netip.Prefix) []byte {
	b, err := ndp.MarshalMessage(&ndp.RouterAdvertisement{CurrentHopLimit: 64, RouterLifetime: 30 * time.Minute,
		Options: []ndp.Option{
			&ndp.PrefixInformation{PrefixLength: uint8(prefix.Bits()), OnLink: true, AutonomousAddressConfiguration: true,
				ValidLifetime: time.Hour, PreferredLifetime: time.Hour, Prefix: prefix.Addr()},
			&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac},
		}})
	if err != nil {
		panic(err) // fixed, valid message
	}
	return b
}

// DialFrom connects over TCP from local (an address of ns) to ap, and
// returns the greeting line (see Serve).
func DialFrom(ns *nsutil.NS, local netip.Addr, ap netip.AddrPort, timeout time.Duration) (string, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: local.AsSlice()}}
		c, err = d.Dial("tcp", ap.String())
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}
