package bridgetest

import (
	"crypto/rand"
	"net"
	"strings"
	"syscall"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"golang.org/x/sys/unix"
)

// Decoding link requests and encoding the kernel's link messages.

// linkReq is a decoded RTM_NEWLINK / RTM_DELLINK / RTM_GETLINK.
type linkReq struct {
	index         uint32
	flags, change uint32
	name          *string
	mtu           *uint32
	mac           net.HardwareAddr
	master        *uint32
	group         *uint32
	alias         *string
	nsFD          *uint32
	kind          string
	slaveKind     string
	data          []byte // IFLA_INFO_DATA
	slaveData     []byte // IFLA_INFO_SLAVE_DATA
	addrGenMode   *uint8
}

func parseLinkReq(b []byte) (linkReq, error) {
	var r linkReq
	if len(b) < unix.SizeofIfInfomsg {
		return r, syscall.EINVAL
	}
	r.index = nlenc.Uint32(b[4:8])
	r.flags, r.change = nlenc.Uint32(b[8:12]), nlenc.Uint32(b[12:16])
	ad, err := netlink.NewAttributeDecoder(b[unix.SizeofIfInfomsg:])
	if err != nil {
		return r, syscall.EINVAL
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.IFLA_IFNAME:
			s := ad.String()
			r.name = &s
		case unix.IFLA_MTU:
			v := ad.Uint32()
			r.mtu = &v
		case unix.IFLA_ADDRESS:
			r.mac = net.HardwareAddr(ad.Bytes())
		case unix.IFLA_MASTER:
			v := ad.Uint32()
			r.master = &v
		case unix.IFLA_GROUP:
			v := ad.Uint32()
			r.group = &v
		case unix.IFLA_IFALIAS:
			s := strings.TrimRight(string(ad.Bytes()), "\x00")
			r.alias = &s
		case unix.IFLA_NET_NS_FD:
			v := ad.Uint32()
			r.nsFD = &v
		case unix.IFLA_LINKINFO:
			ad.Nested(func(ad *netlink.AttributeDecoder) error {
				for ad.Next() {
					switch ad.Type() {
					case unix.IFLA_INFO_KIND:
						r.kind = ad.String()
					case unix.IFLA_INFO_SLAVE_KIND:
						r.slaveKind = ad.String()
					case unix.IFLA_INFO_DATA:
						r.data = ad.Bytes()
					case unix.IFLA_INFO_SLAVE_DATA:
						r.slaveData = ad.Bytes()
					}
				}
				return nil
			})
		case unix.IFLA_AF_SPEC:
			ad.Nested(func(ad *netlink.AttributeDecoder) error {
				for ad.Next() {
					if ad.Type() == unix.AF_INET6 {
						ad.Nested(func(ad *netlink.AttributeDecoder) error {
							for ad.Next() {
								if ad.Type() == unix.IFLA_INET6_ADDR_GEN_MODE {
									v := ad.Uint8()
									r.addrGenMode = &v
								}
							}
							return nil
						})
					}
				}
				return nil
			})
		}
	}
	if ad.Err() != nil {
		return r, syscall.EINVAL
	}
	return r, nil
}

// portForwarding reports whether a bridge port passes traffic: it, its
// bridge and (for a veth) its peer are up.
func (ns *netns) portForwarding(l *ifc) bool {
	br := ns.links[l.master]
	if br == nil || !br.up || !l.up {
		return false
	}
	if l.peerNS != nil {
		p := l.peerNS.links[l.peer]
		return p != nil && p.up
	}
	return true
}

// linkMsg encodes the device as the kernel's RTM_NEWLINK.
func (ns *netns) linkMsg(l *ifc) netlink.Message {
	hdr := make([]byte, unix.SizeofIfInfomsg)
	typ := uint16(unix.ARPHRD_ETHER)
	if l.kind == "loopback" {
		typ = unix.ARPHRD_LOOPBACK
	}
	nlenc.PutUint16(hdr[2:4], typ)
	nlenc.PutUint32(hdr[4:8], l.index)
	var flags uint32 = unix.IFF_BROADCAST | unix.IFF_MULTICAST
	if l.kind == "loopback" {
		flags = unix.IFF_LOOPBACK
	}
	if l.up {
		flags |= unix.IFF_UP | unix.IFF_RUNNING | unix.IFF_LOWER_UP
	}
	nlenc.PutUint32(hdr[8:12], flags)
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.IFLA_IFNAME, l.name)
	ae.Uint32(unix.IFLA_MTU, uint32(l.mtu))
	ae.Uint32(unix.IFLA_GROUP, l.group)
	ae.Bytes(unix.IFLA_ADDRESS, l.mac)
	if l.alias != "" {
		ae.String(unix.IFLA_IFALIAS, l.alias)
	}
	if l.master != 0 {
		ae.Uint32(unix.IFLA_MASTER, l.master)
	}
	if l.peerNS != nil {
		ae.Uint32(unix.IFLA_LINK, l.peer)
	}
	if l.kind != "loopback" {
		ae.Nested(unix.IFLA_LINKINFO, func(ae *netlink.AttributeEncoder) error {
			ae.String(unix.IFLA_INFO_KIND, l.kind)
			if l.kind == "bridge" {
				ae.Nested(unix.IFLA_INFO_DATA, func(ae *netlink.AttributeEncoder) error {
					ae.Uint32(unix.IFLA_BR_STP_STATE, 0)
					return nil
				})
			}
			if l.master != 0 {
				ae.String(unix.IFLA_INFO_SLAVE_KIND, "bridge")
				ae.Nested(unix.IFLA_INFO_SLAVE_DATA, func(ae *netlink.AttributeEncoder) error {
					state := uint8(0) // BR_STATE_DISABLED
					if ns.portForwarding(l) {
						state = 3 // BR_STATE_FORWARDING
					}
					ae.Uint8(unix.IFLA_BRPORT_STATE, state)
					ae.Uint8(unix.IFLA_BRPORT_MODE, boolByte(l.hairpin))
					ae.Uint8(unix.IFLA_BRPORT_ISOLATED, boolByte(l.isolated))
					return nil
				})
			}
			return nil
		})
	}
	b, _ := ae.Encode()
	return netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK}, Data: append(hdr, b...)}
}

// upAfter is IFF_UP after a request's flags and change mask (as
// rtnl_dev_combine_flags: change 0 with flags set means these flags).
func upAfter(up bool, r linkReq) bool {
	switch {
	case r.change&unix.IFF_UP != 0:
		return r.flags&unix.IFF_UP != 0
	case r.change == 0 && r.flags != 0:
		return r.flags&unix.IFF_UP != 0
	}
	return up
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func randomMAC() net.HardwareAddr {
	m := make(net.HardwareAddr, 6)
	rand.Read(m)
	m[0] = m[0]&^1 | 2
	return m
}
