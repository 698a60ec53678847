package bridgetest

import (
	"net"
	"strings"
	"syscall"

	"github.com/mdlayher/netlink"
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
	hairpin     bool              // bridge port hairpin mode
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
	if len(name) > 15 {
		return unix.ERANGE // longer than the attribute policy's IFNAMSIZ-1
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
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
	if rename { // also while up (Linux 6.x renames live devices)
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
		return unix.ERANGE
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
				switch ad.Type() {
				case unix.IFLA_BRPORT_ISOLATED:
					l.isolated = ad.Uint8() != 0
				case unix.IFLA_BRPORT_MODE:
					l.hairpin = ad.Uint8() != 0
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
