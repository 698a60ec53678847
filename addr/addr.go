// Package addr adds, lists and deletes interface addresses over rtnetlink,
// with netip.Prefix in and out.
//
// List reads a device's addresses. AddMsg and DeleteMsg only build a
// request (with the Acknowledge flag), so that several go in one round
// trip: send them with (*netlink.Conn).SendMessages and read one ack each.
// All functions are safe for concurrent use as far as the conn is.
package addr

import (
	"fmt"
	"net/netip"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/internal/nl"
	"golang.org/x/sys/unix"
)

// Addr is one address on one interface.
type Addr struct {
	Index  uint32       // interface
	Prefix netip.Prefix // address with the subnet length
	Flags  uint32       // IFA_F_*
}

// AddMsg builds an RTM_NEWADDR. IPv6 addresses get IFA_F_NODAD, so they
// are usable at once (and can be bound) instead of tentative for seconds.
func AddMsg(index uint32, p netip.Prefix) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: unix.RTM_NEWADDR, Flags: nl.Create},
		Data:   ifaddr(index, p),
	}
}

// DeleteMsg builds an RTM_DELADDR.
func DeleteMsg(index uint32, p netip.Prefix) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: unix.RTM_DELADDR, Flags: nl.Change},
		Data:   ifaddr(index, p),
	}
}

func ifaddr(index uint32, p netip.Prefix) []byte {
	a := p.Addr().Unmap()
	m := &rtnetlink.AddressMessage{Family: family(a), PrefixLength: uint8(p.Bits()), Index: index,
		Attributes: &rtnetlink.AddressAttributes{Address: a.AsSlice()}}
	if a.Is6() {
		m.Attributes.Flags = unix.IFA_F_NODAD
	} else {
		m.Attributes.Local = a.AsSlice()
	}
	b, _ := m.MarshalBinary() // cannot fail: fixed attributes
	return b
}

// List returns the addresses of one interface (index 0 = all interfaces).
func List(c *netlink.Conn, index uint32) ([]Addr, error) {
	msgs, err := nl.Dump(c, unix.RTM_GETADDR, make([]byte, unix.SizeofIfAddrmsg))
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var out []Addr
	for _, m := range msgs {
		var am rtnetlink.AddressMessage
		if err := am.UnmarshalBinary(m.Data); err != nil {
			return nil, fmt.Errorf("decode address: %w", err)
		}
		if index != 0 && am.Index != index || am.Attributes == nil {
			continue
		}
		ip := am.Attributes.Local
		if ip == nil {
			ip = am.Attributes.Address
		}
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		out = append(out, Addr{Index: am.Index, Prefix: netip.PrefixFrom(a.Unmap(), int(am.PrefixLength)),
			Flags: am.Attributes.Flags})
	}
	return out, nil
}

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}
