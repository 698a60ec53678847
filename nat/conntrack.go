package nat

import (
	"net/netip"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/internal/nl"
	"golang.org/x/sys/unix"
)

// ctnetlink attributes (linux/netfilter/nfnetlink_conntrack.h); x/sys
// does not define them.
const (
	ctaTupleOrig  = 1
	ctaTupleReply = 2
	ctaFilter     = 25

	ctaTupleIP = 1
	ctaIPv4Src = 1
	ctaIPv6Src = 3

	ctaFilterOrigFlags  = 1
	ctaFilterReplyFlags = 2
	ctaFilterFlagIPSrc  = 1 << 0

	ipctnlMsgCtDelete = 2
)

// flushConntrackMsgs builds the deletes of every conntrack entry involving
// addr: as original source (its outbound flows, NATed or not) and as reply
// source (every flow to it: routed ones, whose reply source is their
// original destination, and DNAT'ed ones to a published port). The kernel
// runs each as a filtered flush (Linux 6.8+), a walk of the whole conntrack
// table, so there are as few as that.
func flushConntrackMsgs(addr netip.Addr) []netlink.Message {
	return flushMsgs(addr, true)
}

// flushInboundConntrackMsgs builds only the delete of entries whose reply
// source is addr: every flow to it. That is what can appear for an address
// after its endpoint is gone; its own outbound flows cannot.
func flushInboundConntrackMsgs(addr netip.Addr) []netlink.Message {
	return flushMsgs(addr, false)
}

func flushMsgs(addr netip.Addr, outbound bool) []netlink.Message {
	addr = addr.Unmap()
	family, src := uint8(unix.AF_INET), uint16(ctaIPv4Src)
	if addr.Is6() {
		family, src = unix.AF_INET6, ctaIPv6Src
	}
	del := func(tuple, ipAttr, filterAttr uint16, flag uint32) netlink.Message {
		ae := netlink.NewAttributeEncoder()
		ae.Nested(tuple, func(ae *netlink.AttributeEncoder) error {
			ae.Nested(ctaTupleIP, func(ae *netlink.AttributeEncoder) error {
				ae.Bytes(ipAttr, addr.AsSlice())
				return nil
			})
			return nil
		})
		ae.Nested(ctaFilter, func(ae *netlink.AttributeEncoder) error {
			ae.Uint32(filterAttr, flag) // host byte order
			return nil
		})
		b, _ := ae.Encode() // cannot fail: fixed attributes
		return netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK<<8 | ipctnlMsgCtDelete), Flags: nl.Change},
			// nfgenmsg: family, version 1 (= only this family), resource id 0
			Data: append([]byte{family, 1, 0, 0}, b...),
		}
	}
	msgs := []netlink.Message{del(ctaTupleReply, src, ctaFilterReplyFlags, ctaFilterFlagIPSrc)}
	if outbound {
		msgs = append(msgs, del(ctaTupleOrig, src, ctaFilterOrigFlags, ctaFilterFlagIPSrc))
	}
	return msgs
}

// FlushConntrack deletes the conntrack entries involving the addresses
// (only inbound ones unless outbound), in one round trip on c, a
// NETLINK_NETFILTER conn. No entry to delete is not an error.
func FlushConntrack(c *netlink.Conn, outbound bool, addrs ...netip.Addr) error {
	var msgs []netlink.Message
	for _, a := range addrs {
		if a.IsValid() {
			msgs = append(msgs, flushMsgs(a, outbound)...)
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	_, err := nl.ExecIgnoring(c, unix.ENOENT, msgs...) // ENOENT: nothing matched
	return err
}
