// Package route adds and lists routes over rtnetlink, with netip types.
//
// List and Get read routes. AddMsg and AddDefaultMsg only build a request
// (with the Acknowledge flag), so that several go in one round trip: send
// them with (*netlink.Conn).SendMessages and read one ack each.
// All functions are safe for concurrent use as far as the conn is.
package route

import (
	"fmt"
	"net/netip"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/internal/nl"
	"golang.org/x/sys/unix"
)

// Route is one route of the main table.
type Route struct {
	Dst    netip.Prefix // 0.0.0.0/0 or ::/0 for a default route
	Gw     netip.Addr   // zero for a directly connected route
	Oif    uint32
	Metric uint32
	Type   uint8 // unix.RTN_*
}

// IsDefault reports whether r is a default route.
func (r Route) IsDefault() bool { return r.Dst.Bits() == 0 }

// AddDefaultMsg builds an RTM_NEWROUTE for a default route via gw out of
// interface oif, with the given metric (0 = the kernel's default).
func AddDefaultMsg(oif uint32, gw netip.Addr, metric uint32) netlink.Message {
	gw = gw.Unmap()
	dst := netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	if gw.Is4() {
		dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	return AddMsg(oif, dst, gw, metric)
}

// AddMsg builds an RTM_NEWROUTE for dst via gw out of interface oif, with
// the given metric (0 = the kernel's default). dst and gw are of one
// family; a zero-length dst is a default route.
func AddMsg(oif uint32, dst netip.Prefix, gw netip.Addr, metric uint32) netlink.Message {
	gw, dst = gw.Unmap(), dst.Masked()
	fam := uint8(unix.AF_INET6)
	if gw.Is4() {
		fam = unix.AF_INET
	}
	a := rtnetlink.RouteAttributes{Gateway: gw.AsSlice(), OutIface: oif, Priority: metric}
	if dst.Bits() > 0 {
		a.Dst = dst.Addr().AsSlice()
	}
	m := &rtnetlink.RouteMessage{Family: fam, DstLength: uint8(dst.Bits()), Table: unix.RT_TABLE_MAIN,
		Protocol: unix.RTPROT_BOOT, Scope: unix.RT_SCOPE_UNIVERSE, Type: unix.RTN_UNICAST, Attributes: a}
	b, _ := m.MarshalBinary() // cannot fail: fixed attributes
	return netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWROUTE, Flags: nl.Create}, Data: b}
}

// List returns the unicast routes of the main table, both families.
func List(c *netlink.Conn) ([]Route, error) {
	msgs, err := nl.Dump(c, unix.RTM_GETROUTE, make([]byte, unix.SizeofRtMsg))
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var out []Route
	for _, m := range msgs {
		var rm rtnetlink.RouteMessage
		if err := rm.UnmarshalBinary(m.Data); err != nil {
			return nil, fmt.Errorf("decode route: %w", err)
		}
		if rm.Table != unix.RT_TABLE_MAIN || rm.Type != unix.RTN_UNICAST {
			continue
		}
		a := rm.Attributes
		dst, ok := netip.AddrFromSlice(a.Dst)
		if !ok {
			dst = netip.IPv4Unspecified()
			if rm.Family == unix.AF_INET6 {
				dst = netip.IPv6Unspecified()
			}
		}
		gw, _ := netip.AddrFromSlice(a.Gateway)
		out = append(out, Route{Dst: netip.PrefixFrom(dst.Unmap(), int(rm.DstLength)), Gw: gw.Unmap(),
			Oif: a.OutIface, Metric: a.Priority, Type: rm.Type})
	}
	return out, nil
}

// Get asks the kernel for the route it would use to reach dst out of
// interface oif (0 = any). It fails (e.g. ENETUNREACH) when there is none.
func Get(c *netlink.Conn, dst netip.Addr, oif uint32) (Route, error) {
	dst = dst.Unmap()
	fam := uint8(unix.AF_INET6)
	if dst.Is4() {
		fam = unix.AF_INET
	}
	b, _ := (&rtnetlink.RouteMessage{Family: fam, DstLength: uint8(dst.BitLen()),
		Attributes: rtnetlink.RouteAttributes{Dst: dst.AsSlice(), OutIface: oif}}).MarshalBinary()
	msgs, err := c.Execute(netlink.Message{Header: netlink.Header{Type: unix.RTM_GETROUTE, Flags: netlink.Request}, Data: b})
	if err != nil {
		return Route{}, fmt.Errorf("get route to %s: %w", dst, err)
	}
	if len(msgs) != 1 {
		return Route{}, fmt.Errorf("get route to %s: %d answers", dst, len(msgs))
	}
	var rm rtnetlink.RouteMessage
	if err := rm.UnmarshalBinary(msgs[0].Data); err != nil {
		return Route{}, fmt.Errorf("decode route: %w", err)
	}
	gw, _ := netip.AddrFromSlice(rm.Attributes.Gateway)
	return Route{Dst: netip.PrefixFrom(dst, int(rm.DstLength)), Gw: gw.Unmap(), Oif: rm.Attributes.OutIface,
		Metric: rm.Attributes.Priority, Type: rm.Type}, nil
}
