// Package linkmsg builds the link requests of the bridge driver's own
// steps: a veth host end made a bare bridge port (sent with every
// link.CreateVeth), a host end retired into the reclaim group and a
// sandbox end taken out of the way; and the encoders they share with
// package link.
package linkmsg

import (
	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"github.com/nlbridge/bridge/internal/nl"
	"golang.org/x/sys/unix"
)

// HostEnd builds an RTM_NEWLINK that brings up the device named name as
// a device with no IPv6 addressing (addrgenmode none: no link-local
// address, so no DAD, router solicitations or MLD, whose deferred work
// would contend for the RTNL lock) and the alias, if not "". If bridged
// (it is a bridge port), the port is in hairpin mode (a frame may leave by
// the port it came in on: what br_netfilter bridges back to its sender,
// such as a sandbox's connection to its own published port) and, if
// isolated, has bridge-port isolation. Port flags
// cannot ride in the create message (the kernel ignores
// IFLA_INFO_SLAVE_DATA there), nor can the inet6 settings (EAFNOSUPPORT)
// or an alias (ignored).
func HostEnd(name string, bridged, isolated bool, alias string) netlink.Message {
	a := &rtnetlink.LinkAttributes{Name: name}
	if alias != "" {
		a.Alias = &alias
	}
	if bridged {
		on := driver.BridgeEnableEnabled
		port := &driver.BridgePort{Mode: &on}
		if isolated {
			port.Isolated = &on
		}
		a.Info = &rtnetlink.LinkInfo{SlaveKind: "bridge", SlaveData: port}
	}
	b, _ := (&rtnetlink.LinkMessage{Flags: unix.IFF_UP, Change: unix.IFF_UP, Attributes: a}).MarshalBinary()
	return netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK, Flags: nl.Change}, Data: append(b, AddrGenModeNone()...)}
}

// RetireHostEnd builds an RTM_NEWLINK that takes a bridge port out of
// service at once: off its bridge (IFLA_MASTER 0), down, and into link
// group group, to be deleted later with others by link.DeleteGroup.
func RetireHostEnd(index, group uint32) netlink.Message {
	b := IfInfo(unix.AF_UNSPEC, index, 0, unix.IFF_UP)
	a, _ := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.IFLA_MASTER, Data: nlenc.Uint32Bytes(0)},
		{Type: unix.IFLA_GROUP, Data: nlenc.Uint32Bytes(group)},
	})
	return netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK, Flags: nl.Change}, Data: append(b, a...)}
}

// Retire builds the requests that take a device out of the way in its
// namespace: down (which also drops its routes and IPv6 addresses), then
// renamed to name (a device must be down to be renamed), freeing its name
// for a successor.
func Retire(index uint32, name string) []netlink.Message {
	down := netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK, Flags: nl.Change},
		Data: IfInfo(unix.AF_UNSPEC, index, 0, unix.IFF_UP)}
	a, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.IFLA_IFNAME, Data: nlenc.Bytes(name)}})
	rename := netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK, Flags: nl.Change},
		Data: append(IfInfo(unix.AF_UNSPEC, index, 0, 0), a...)}
	return []netlink.Message{down, rename}
}

// IfInfo encodes a struct ifinfomsg.
func IfInfo(family uint8, index, flags, change uint32) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = family
	nlenc.PutUint32(b[4:8], index)
	nlenc.PutUint32(b[8:12], flags)
	nlenc.PutUint32(b[12:16], change)
	return b
}

// AddrGenModeNone encodes IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_ADDR_GEN_MODE: none } }.
func AddrGenModeNone() []byte {
	ae := netlink.NewAttributeEncoder()
	ae.Nested(unix.IFLA_AF_SPEC, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(unix.AF_INET6, func(ae *netlink.AttributeEncoder) error {
			ae.Uint8(unix.IFLA_INET6_ADDR_GEN_MODE, 1) // IN6_ADDR_GEN_MODE_NONE
			return nil
		})
		return nil
	})
	b, _ := ae.Encode()
	return b
}
