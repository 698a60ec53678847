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

// ifc is a network device.
type ifc struct {
	index  uint32
	name   string
	kind   string // "loopback", "bridge", "veth"
	mtu    int
	mac    net.HardwareAddr
	up     bool
	master uint32
	group  uint32
	alias  string

	peerNS *netns // veth: the other end
	peer   uint32

	isolated    bool              // bridge port isolation
	addrGenNone bool              // IPv6 address generation mode none
	sysctls     map[string]string // per device: "ipv6.conf.disable_ipv6" -> "1"
}

// Kernel limits the driver's requests run into.
const (
	maxBridgePorts = 1024 // BR_MAX_PORTS
	maxAlias       = 255  // IFALIASZ - 1
)

func (ns *netns) addLink(l *ifc) {
	ns.next++
	l.index = ns.next
	if l.sysctls == nil {
		l.sysctls = map[string]string{}
	}
	ns.links[l.index] = l
}

func (ns *netns) byName(name string) *ifc {
	for _, l := range ns.links {
		if l.name == name {
			return l
		}
	}
	return nil
}

// deleteLink destroys a device: a veth with its peer, a bridge after
// releasing its ports; addresses and routes go with it.
func (ns *netns) deleteLink(l *ifc) {
	delete(ns.links, l.index)
	ns.dropAddrs(l.index, func(*ifaddr) bool { return true })
	ns.dropRoutes(func(r *route) bool { return r.oif == l.index })
	if l.kind == "bridge" {
		for _, p := range ns.links {
			if p.master == l.index {
				p.master = 0
			}
		}
	}
	if l.peerNS != nil {
		if p := l.peerNS.links[l.peer]; p != nil && p.peerNS == ns {
			p.peerNS = nil
			l.peerNS.deleteLink(p)
		}
	}
}

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

// target is the device a request names: by index, else by name.
func (ns *netns) target(r linkReq) *ifc {
	if r.index != 0 {
		return ns.links[r.index]
	}
	if r.name != nil {
		return ns.byName(*r.name)
	}
	return nil
}

func (k *Kernel) newLink(ns *netns, m netlink.Message) ([]netlink.Message, syscall.Errno) {
	r, err := parseLinkReq(m.Data)
	if err != nil {
		return nil, syscall.EINVAL
	}
	l := ns.target(r)
	if l == nil {
		if r.index != 0 || m.Header.Flags&netlink.Create == 0 {
			return nil, unix.ENODEV
		}
		l, errno := k.createLink(ns, r)
		if errno != 0 {
			return nil, errno
		}
		if m.Header.Flags&netlink.Echo != 0 {
			return []netlink.Message{ns.linkMsg(l)}, 0
		}
		return nil, 0
	}
	if m.Header.Flags&netlink.Excl != 0 {
		return nil, unix.EEXIST
	}
	if r.kind != "" && r.kind != l.kind {
		return nil, unix.EOPNOTSUPP
	}
	return nil, ns.changeLink(l, r)
}

// createLink creates a bridge or a veth pair. As in the kernel, an alias
// and bridge-port data in a create are ignored.
func (k *Kernel) createLink(ns *netns, r linkReq) (*ifc, syscall.Errno) {
	if r.kind != "bridge" && r.kind != "veth" {
		return nil, unix.EOPNOTSUPP
	}
	l := &ifc{kind: r.kind, mtu: 1500, mac: r.mac}
	if r.name != nil {
		l.name = *r.name
	}
	if errno := ns.checkNewName(l.name); errno != 0 {
		return nil, errno
	}
	if r.mtu != nil {
		if errno := checkMTU(*r.mtu); errno != 0 {
			return nil, errno
		}
		l.mtu = int(*r.mtu)
	}
	if l.mac == nil {
		l.mac = randomMAC()
	} else if len(l.mac) != 6 {
		return nil, unix.EINVAL
	}
	if r.group != nil {
		l.group = *r.group
	}
	var master *ifc
	if r.master != nil && *r.master != 0 {
		var errno syscall.Errno
		if master, errno = ns.checkMaster(*r.master); errno != 0 {
			return nil, errno
		}
	}
	var peer *ifc
	var peerNS *netns
	if r.kind == "veth" {
		var errno syscall.Errno
		if peer, peerNS, errno = k.vethPeer(ns, r, l.mtu); errno != 0 {
			return nil, errno
		}
		if peerNS == ns && peer.name == l.name {
			return nil, unix.EEXIST
		}
	}
	l.up = upAfter(false, r)
	ns.addLink(l)
	if master != nil {
		l.master = master.index
	}
	if peer != nil {
		peerNS.addLink(peer)
		l.peerNS, l.peer = peerNS, peer.index
		peer.peerNS, peer.peer = ns, l.index
	}
	return l, 0
}

// vethPeer decodes VETH_INFO_PEER: the peer's name, MAC, MTU and namespace.
func (k *Kernel) vethPeer(ns *netns, r linkReq, mtu int) (*ifc, *netns, syscall.Errno) {
	var pb []byte
	ad, err := netlink.NewAttributeDecoder(r.data)
	if err != nil {
		return nil, nil, unix.EINVAL
	}
	for ad.Next() {
		if ad.Type() == 1 { // VETH_INFO_PEER
			pb = ad.Bytes()
		}
	}
	peer := &ifc{kind: "veth", mtu: mtu}
	peerNS := ns
	if pb != nil {
		pr, err := parseLinkReq(pb)
		if err != nil {
			return nil, nil, unix.EINVAL
		}
		if upAfter(false, pr) {
			return nil, nil, unix.ENOTCONN // veth_open before the pair is linked
		}
		if pr.name != nil {
			peer.name = *pr.name
		}
		if pr.mtu != nil {
			if errno := checkMTU(*pr.mtu); errno != 0 {
				return nil, nil, errno
			}
			peer.mtu = int(*pr.mtu)
		}
		peer.mac = pr.mac
		if pr.nsFD != nil {
			if peerNS = k.fds[int(*pr.nsFD)]; peerNS == nil {
				return nil, nil, unix.EBADF
			}
		}
	}
	if peer.mac == nil {
		peer.mac = randomMAC()
	} else if len(peer.mac) != 6 {
		return nil, nil, unix.EINVAL
	}
	if errno := peerNS.checkNewName(peer.name); errno != 0 {
		return nil, nil, errno
	}
	return peer, peerNS, 0
}

func (ns *netns) checkNewName(name string) syscall.Errno {
	if name == "" || len(name) > 15 || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
		return unix.EINVAL
	}
	if ns.byName(name) != nil {
		return unix.EEXIST
	}
	return 0
}

func checkMTU(mtu uint32) syscall.Errno {
	if mtu < 68 || mtu > 65535 {
		return unix.EINVAL
	}
	return 0
}

func (ns *netns) checkMaster(index uint32) (*ifc, syscall.Errno) {
	br := ns.links[index]
	switch {
	case br == nil:
		return nil, unix.EINVAL
	case br.kind != "bridge":
		return nil, unix.EOPNOTSUPP
	}
	n := 0
	for _, p := range ns.links {
		if p.master == index {
			n++
		}
	}
	if n >= maxBridgePorts {
		return nil, unix.EXFULL
	}
	return br, 0
}

// changeLink applies a change to an existing device, validating it all
// first so that a refused change changes nothing.
func (ns *netns) changeLink(l *ifc, r linkReq) syscall.Errno {
	up := upAfter(l.up, r)
	rename := r.index != 0 && r.name != nil && *r.name != l.name
	if rename {
		if l.up {
			return unix.EBUSY // a device must be down to be renamed
		}
		if errno := ns.checkNewName(*r.name); errno != 0 {
			return errno
		}
	}
	if r.mtu != nil {
		if errno := checkMTU(*r.mtu); errno != 0 {
			return errno
		}
	}
	if r.alias != nil && len(*r.alias) > maxAlias {
		return unix.EINVAL
	}
	if r.mac != nil && len(r.mac) != 6 {
		return unix.EINVAL
	}
	if r.master != nil && *r.master != 0 && *r.master != l.master {
		if _, errno := ns.checkMaster(*r.master); errno != 0 {
			return errno
		}
	}
	master := l.master
	if r.master != nil {
		master = *r.master
	}
	if r.slaveData != nil && (r.slaveKind != "bridge" || master == 0) {
		return unix.EOPNOTSUPP
	}
	if rename {
		l.name = *r.name
	}
	if r.mtu != nil {
		l.mtu = int(*r.mtu)
	}
	if r.mac != nil {
		l.mac = r.mac
	}
	if r.group != nil {
		l.group = *r.group
	}
	if r.alias != nil {
		l.alias = *r.alias
	}
	if up != l.up {
		l.up = up
		ns.linkUpDown(l)
	}
	l.master = master
	if r.slaveData != nil {
		ad, err := netlink.NewAttributeDecoder(r.slaveData)
		if err == nil {
			for ad.Next() {
				if ad.Type() == unix.IFLA_BRPORT_ISOLATED {
					l.isolated = ad.Uint8() != 0
				}
			}
		}
	}
	if r.addrGenMode != nil {
		l.addrGenNone = *r.addrGenMode == 1
	}
	return 0
}

func (k *Kernel) delLink(ns *netns, m netlink.Message) ([]netlink.Message, syscall.Errno) {
	r, err := parseLinkReq(m.Data)
	if err != nil {
		return nil, syscall.EINVAL
	}
	if r.index == 0 && r.name == nil {
		if r.group == nil {
			return nil, unix.EINVAL
		}
		if *r.group == 0 {
			return nil, unix.EPERM
		}
		found := false
		for _, l := range ns.sortedLinks() {
			if ns.links[l.index] != nil && l.group == *r.group && l.kind != "loopback" {
				ns.deleteLink(l)
				found = true
			}
		}
		if !found {
			return nil, unix.ENODEV
		}
		return nil, 0
	}
	l := ns.target(r)
	switch {
	case l == nil:
		return nil, unix.ENODEV
	case l.kind == "loopback":
		return nil, unix.EOPNOTSUPP
	}
	ns.deleteLink(l)
	return nil, 0
}

func (k *Kernel) getLink(ns *netns, m netlink.Message) ([]netlink.Message, syscall.Errno) {
	r, err := parseLinkReq(m.Data)
	if err != nil {
		return nil, syscall.EINVAL
	}
	if m.Header.Flags&netlink.Dump != netlink.Dump {
		l := ns.target(r)
		if l == nil {
			return nil, unix.ENODEV
		}
		return []netlink.Message{ns.linkMsg(l)}, 0
	}
	var parts []netlink.Message
	for _, l := range ns.sortedLinks() {
		if r.master != nil && *r.master != 0 && l.master != *r.master || r.kind != "" && l.kind != r.kind {
			continue
		}
		parts = append(parts, ns.linkMsg(l))
	}
	return dump(parts), 0
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
