package bridgetest

import (
	"net/netip"
	"sort"
	"syscall"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"golang.org/x/sys/unix"
)

// rtnl answers one rtnetlink request.
func (k *Kernel) rtnl(ns *netns, m netlink.Message) ([]netlink.Message, syscall.Errno) {
	switch m.Header.Type {
	case unix.RTM_NEWLINK:
		return k.newLink(ns, m)
	case unix.RTM_DELLINK:
		return k.delLink(ns, m)
	case unix.RTM_GETLINK:
		return k.getLink(ns, m)
	case unix.RTM_NEWADDR:
		return nil, ns.newAddr(m)
	case unix.RTM_DELADDR:
		return nil, ns.delAddr(m)
	case unix.RTM_GETADDR:
		return ns.getAddrs(m), 0
	case unix.RTM_NEWROUTE:
		return nil, ns.newRoute(m)
	case unix.RTM_GETROUTE:
		return ns.getRoute(m)
	}
	return nil, unix.EOPNOTSUPP
}

// ifaddr is an interface address.
type ifaddr struct {
	index  uint32
	prefix netip.Prefix
	flags  uint32
}

func parseAddr(b []byte) (ifaddr, syscall.Errno) {
	if len(b) < unix.SizeofIfAddrmsg {
		return ifaddr{}, unix.EINVAL
	}
	a := ifaddr{index: nlenc.Uint32(b[4:8])}
	family, bits := b[0], int(b[1])
	ad, err := netlink.NewAttributeDecoder(b[unix.SizeofIfAddrmsg:])
	if err != nil {
		return a, unix.EINVAL
	}
	var addr, local []byte
	for ad.Next() {
		switch ad.Type() {
		case unix.IFA_ADDRESS:
			addr = ad.Bytes()
		case unix.IFA_LOCAL:
			local = ad.Bytes()
		case unix.IFA_FLAGS:
			a.flags = ad.Uint32()
		}
	}
	if local != nil {
		addr = local
	}
	ip, ok := netip.AddrFromSlice(addr)
	if !ok || family == unix.AF_INET && !ip.Is4() || family == unix.AF_INET6 && !ip.Is6() || family != unix.AF_INET && family != unix.AF_INET6 {
		return a, unix.EINVAL
	}
	if bits > ip.BitLen() {
		return a, unix.EINVAL
	}
	a.prefix = netip.PrefixFrom(ip, bits)
	return a, 0
}

func (ns *netns) newAddr(m netlink.Message) syscall.Errno {
	a, errno := parseAddr(m.Data)
	if errno != 0 {
		return errno
	}
	l := ns.links[a.index]
	if l == nil {
		return unix.ENODEV
	}
	if a.prefix.Addr().Is6() && (l.sysctls["ipv6.conf.disable_ipv6"] == "1" || ns.sysctls["net.ipv6.conf.all.disable_ipv6"] == "1") {
		return unix.EACCES
	}
	for _, o := range ns.addrs {
		if o.index == a.index && o.prefix.Addr() == a.prefix.Addr() {
			if m.Header.Flags&netlink.Excl != 0 {
				return unix.EEXIST
			}
			o.prefix, o.flags = a.prefix, a.flags
			return 0
		}
	}
	ns.addrs = append(ns.addrs, &a)
	if l.up {
		ns.addConnected(&a)
	}
	return 0
}

func (ns *netns) delAddr(m netlink.Message) syscall.Errno {
	a, errno := parseAddr(m.Data)
	if errno != 0 {
		return errno
	}
	n := len(ns.addrs)
	ns.dropAddrs(a.index, func(o *ifaddr) bool { return o.prefix == a.prefix })
	if len(ns.addrs) == n {
		return unix.EADDRNOTAVAIL
	}
	return 0
}

// dropAddrs removes the addresses of the interface that match, with their
// connected routes.
func (ns *netns) dropAddrs(index uint32, match func(*ifaddr) bool) {
	kept := ns.addrs[:0]
	for _, a := range ns.addrs {
		if a.index == index && match(a) {
			ns.dropRoutes(func(r *route) bool { return r.connected && r.oif == index && r.dst == a.prefix.Masked() })
			continue
		}
		kept = append(kept, a)
	}
	ns.addrs = kept
}

func (ns *netns) getAddrs(m netlink.Message) []netlink.Message {
	family := uint8(0)
	if len(m.Data) > 0 {
		family = m.Data[0]
	}
	var parts []netlink.Message
	for _, a := range ns.sortedAddrs() {
		f := uint8(unix.AF_INET)
		if a.prefix.Addr().Is6() {
			f = unix.AF_INET6
		}
		if family != 0 && family != f {
			continue
		}
		hdr := make([]byte, unix.SizeofIfAddrmsg)
		hdr[0], hdr[1] = f, uint8(a.prefix.Bits())
		nlenc.PutUint32(hdr[4:8], a.index)
		ae := netlink.NewAttributeEncoder()
		ae.Bytes(unix.IFA_ADDRESS, a.prefix.Addr().AsSlice())
		if f == unix.AF_INET {
			ae.Bytes(unix.IFA_LOCAL, a.prefix.Addr().AsSlice())
		}
		ae.Uint32(unix.IFA_FLAGS, a.flags)
		b, _ := ae.Encode()
		parts = append(parts, netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWADDR}, Data: append(hdr, b...)})
	}
	return dump(parts)
}

func (ns *netns) sortedAddrs() []*ifaddr {
	out := append([]*ifaddr(nil), ns.addrs...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].index < out[j].index })
	return out
}

// route is a route of the main table.
type route struct {
	dst       netip.Prefix
	gw        netip.Addr
	oif       uint32
	metric    uint32
	connected bool // added by the kernel for an address (proto kernel, scope link)
}

// linkUpDown follows a device going up or down: connected routes come
// and go, and IPv6 addresses are flushed when it goes down (IPv4 ones
// stay), as in the kernel.
func (ns *netns) linkUpDown(l *ifc) {
	if !l.up {
		ns.dropRoutes(func(r *route) bool { return r.oif == l.index })
		ns.dropAddrs(l.index, func(a *ifaddr) bool { return a.prefix.Addr().Is6() })
		return
	}
	for _, a := range ns.addrs {
		if a.index == l.index {
			ns.addConnected(a)
		}
	}
}

func (ns *netns) addConnected(a *ifaddr) {
	metric := uint32(0)
	if a.prefix.Addr().Is6() {
		metric = 256
	}
	dst := a.prefix.Masked()
	for _, r := range ns.routes {
		if r.connected && r.oif == a.index && r.dst == dst {
			return
		}
	}
	ns.routes = append(ns.routes, &route{dst: dst, oif: a.index, metric: metric, connected: true})
}

func (ns *netns) dropRoutes(match func(*route) bool) {
	kept := ns.routes[:0]
	for _, r := range ns.routes {
		if !match(r) {
			kept = append(kept, r)
		}
	}
	ns.routes = kept
}

func parseRoute(b []byte) (route, uint8, syscall.Errno) {
	if len(b) < unix.SizeofRtMsg {
		return route{}, 0, unix.EINVAL
	}
	family, bits := b[0], int(b[1])
	ad, err := netlink.NewAttributeDecoder(b[unix.SizeofRtMsg:])
	if err != nil {
		return route{}, 0, unix.EINVAL
	}
	var r route
	var dst []byte
	for ad.Next() {
		switch ad.Type() {
		case unix.RTA_DST:
			dst = ad.Bytes()
		case unix.RTA_GATEWAY:
			r.gw, _ = netip.AddrFromSlice(ad.Bytes())
		case unix.RTA_OIF:
			r.oif = ad.Uint32()
		case unix.RTA_PRIORITY:
			r.metric = ad.Uint32()
		}
	}
	zero := netip.IPv4Unspecified()
	if family == unix.AF_INET6 {
		zero = netip.IPv6Unspecified()
	} else if family != unix.AF_INET {
		return r, family, unix.EAFNOSUPPORT
	}
	a := zero
	if dst != nil {
		var ok bool
		if a, ok = netip.AddrFromSlice(dst); !ok || a.BitLen() != zero.BitLen() {
			return r, family, unix.EINVAL
		}
	}
	if bits > zero.BitLen() || r.gw.IsValid() && r.gw.BitLen() != zero.BitLen() {
		return r, family, unix.EINVAL
	}
	r.dst = netip.PrefixFrom(a, bits).Masked()
	return r, family, 0
}

// newRoute adds a route through a gateway on an up device, as the kernel
// checks it: the gateway is on one of the device's connected subnets (so
// the device exists and is up), and no route with that destination and
// metric exists.
func (ns *netns) newRoute(m netlink.Message) syscall.Errno {
	r, _, errno := parseRoute(m.Data)
	if errno != 0 {
		return errno
	}
	l := ns.links[r.oif]
	switch {
	case r.oif == 0 && !r.gw.IsValid():
		return unix.EINVAL
	case r.gw.IsValid() && !ns.reachable(r.gw, r.oif):
		return unix.ENETUNREACH // the gateway is looked up first: a missing or down device has no route to it
	case l == nil:
		return unix.ENODEV
	case !l.up:
		return unix.ENETDOWN
	}
	if r.metric == 0 && r.dst.Addr().Is6() {
		r.metric = 1024
	}
	for _, o := range ns.routes {
		if o.dst == r.dst && o.metric == r.metric && (r.dst.Addr().Is4() || o.gw == r.gw && o.oif == r.oif) {
			if m.Header.Flags&netlink.Excl != 0 {
				return unix.EEXIST
			}
		}
	}
	ns.routes = append(ns.routes, &r)
	return 0
}

func (ns *netns) reachable(gw netip.Addr, oif uint32) bool {
	for _, r := range ns.routes {
		if r.connected && r.oif == oif && r.dst.Contains(gw) {
			return true
		}
	}
	return false
}

// getRoute answers a dump of the main table, or the route to one
// destination (RTA_DST, optionally through RTA_OIF): the longest match,
// or for IPv6 multicast the device's multicast route once it is up.
func (ns *netns) getRoute(m netlink.Message) ([]netlink.Message, syscall.Errno) {
	q, family, errno := parseRoute(m.Data)
	if m.Header.Flags&netlink.Dump == netlink.Dump {
		var parts []netlink.Message
		for _, r := range ns.sortedRoutes() {
			if family == 0 || family == routeFamily(r) {
				parts = append(parts, routeMsg(r, unix.RTN_UNICAST))
			}
		}
		return dump(parts), 0
	}
	if errno != 0 {
		return nil, errno
	}
	dst := q.dst.Addr()
	if dst.Is6() && dst.IsMulticast() {
		if l := ns.links[q.oif]; l != nil && l.up {
			return []netlink.Message{routeMsg(&route{dst: netip.PrefixFrom(dst, 128), oif: q.oif}, unix.RTN_MULTICAST)}, 0
		}
		return nil, unix.ENETUNREACH
	}
	var best *route
	for _, r := range ns.routes {
		if r.dst.Contains(dst) && (q.oif == 0 || r.oif == q.oif) && (best == nil || r.dst.Bits() > best.dst.Bits()) {
			best = r
		}
	}
	if best == nil {
		return nil, unix.ENETUNREACH
	}
	return []netlink.Message{routeMsg(best, unix.RTN_UNICAST)}, 0
}

func routeFamily(r *route) uint8 {
	if r.dst.Addr().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func (ns *netns) sortedRoutes() []*route {
	out := append([]*route(nil), ns.routes...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if routeFamily(a) != routeFamily(b) {
			return routeFamily(a) < routeFamily(b)
		}
		if a.dst != b.dst {
			return a.dst.String() < b.dst.String()
		}
		return a.metric < b.metric
	})
	return out
}

func routeMsg(r *route, typ uint8) netlink.Message {
	hdr := make([]byte, unix.SizeofRtMsg)
	hdr[0], hdr[1] = routeFamily(r), uint8(r.dst.Bits())
	hdr[4], hdr[5], hdr[6], hdr[7] = unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE, typ
	if r.connected {
		hdr[5], hdr[6] = unix.RTPROT_KERNEL, unix.RT_SCOPE_LINK
	}
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(unix.RTA_TABLE, unix.RT_TABLE_MAIN)
	if r.dst.Bits() > 0 {
		ae.Bytes(unix.RTA_DST, r.dst.Addr().AsSlice())
	}
	if r.metric != 0 {
		ae.Uint32(unix.RTA_PRIORITY, r.metric)
	}
	if r.gw.IsValid() {
		ae.Bytes(unix.RTA_GATEWAY, r.gw.AsSlice())
	}
	ae.Uint32(unix.RTA_OIF, r.oif)
	b, _ := ae.Encode()
	return netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWROUTE}, Data: append(hdr, b...)}
}
