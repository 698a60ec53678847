package disco

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// ARP operations.
const (
	ARPRequest = 1
	ARPReply   = 2
)

// arpLen is the size of an Ethernet/IPv4 ARP packet without the Ethernet
// header.
const arpLen = 28

// ErrBadFrame is returned for a frame that is not Ethernet/IPv4 ARP.
var ErrBadFrame = errors.New("not an Ethernet/IPv4 ARP packet")

// ARP is an Ethernet/IPv4 ARP packet. The zero value is not valid.
type ARP struct {
	Op        uint16
	SenderMAC net.HardwareAddr
	SenderIP  netip.Addr
	TargetMAC net.HardwareAddr
	TargetIP  netip.Addr
}

// Gratuitous returns the gratuitous ARP request announcing that ip is at
// mac: sender and target address are both ip, target MAC is zero.
func Gratuitous(mac net.HardwareAddr, ip netip.Addr) ARP {
	return ARP{Op: ARPRequest, SenderMAC: mac, SenderIP: ip, TargetMAC: make(net.HardwareAddr, 6), TargetIP: ip}
}

// MarshalBinary encodes the packet (28 bytes; the kernel adds the Ethernet
// header on a datagram packet socket).
func (a ARP) MarshalBinary() ([]byte, error) {
	if len(a.SenderMAC) != 6 || len(a.TargetMAC) != 6 || !a.SenderIP.Is4() || !a.TargetIP.Is4() {
		return nil, fmt.Errorf("marshal ARP %+v: want 6-byte MACs and IPv4 addresses", a)
	}
	b := make([]byte, arpLen)
	binary.BigEndian.PutUint16(b[0:2], 1)      // hardware: Ethernet
	binary.BigEndian.PutUint16(b[2:4], 0x0800) // protocol: IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:8], a.Op)
	copy(b[8:14], a.SenderMAC)
	s := a.SenderIP.As4()
	copy(b[14:18], s[:])
	copy(b[18:24], a.TargetMAC)
	t := a.TargetIP.As4()
	copy(b[24:28], t[:])
	return b, nil
}

// ParseARP decodes an ARP packet (without Ethernet header; trailing
// padding is ignored).
func ParseARP(b []byte) (ARP, error) {
	if len(b) < arpLen || binary.BigEndian.Uint16(b[0:2]) != 1 || binary.BigEndian.Uint16(b[2:4]) != 0x0800 ||
		b[4] != 6 || b[5] != 4 {
		return ARP{}, ErrBadFrame
	}
	return ARP{
		Op:        binary.BigEndian.Uint16(b[6:8]),
		SenderMAC: net.HardwareAddr(append([]byte(nil), b[8:14]...)),
		SenderIP:  netip.AddrFrom4([4]byte(b[14:18])),
		TargetMAC: net.HardwareAddr(append([]byte(nil), b[18:24]...)),
		TargetIP:  netip.AddrFrom4([4]byte(b[24:28])),
	}, nil
}
