// Package link creates, reads and deletes network devices over rtnetlink:
// bridges, veth pairs whose peer is born in another namespace, bridge-port
// flags and link groups. On its own it gives: CreateBridge, CreateVeth,
// Get, GetIndex, List, ListFiltered, Delete and DeleteGroup, which send
// and wait for the kernel's answer.
//
// Functions ending in Msg only build a request (with the Acknowledge
// flag), so that several go in one round trip: send them with
// (*netlink.Conn).SendMessages and read one ack each. The generic ones
// are UpMsg, SetMsg, SetAliasMsg, DeleteMsg and AddrGenModeNoneMsg. All
// take the caller's *netlink.Conn (a NETLINK_ROUTE socket, or nltest.Dial
// in tests) and are safe for concurrent use as far as the conn is.
package link

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"github.com/nlbridge/bridge/internal/linkmsg"
	"github.com/nlbridge/bridge/internal/nl"
	"golang.org/x/sys/unix"
)

// Link is what the kernel reports about a device.
type Link struct {
	Index  uint32
	Name   string
	Kind   string // "bridge", "veth", ... ("" for devices without a driver kind)
	MTU    int
	MAC    net.HardwareAddr
	Group  uint32
	Alias  string
	Master uint32 // 0 = not enslaved
	Up     bool   // administratively up (IFF_UP)
	Peer   uint32 // for veth: the peer's index in its own namespace (IFLA_LINK)

	STP       bool  // for bridges: spanning tree on
	PortState uint8 // for bridge ports: BR_STATE_* (PortForwarding when passing traffic)
}

// PortForwarding is the bridge-port state in which a port passes traffic.
const PortForwarding = uint8(driver.BridgePortStateForwarding)

// Get reads one device by name. A missing device gives an error for which
// errors.Is(err, unix.ENODEV) holds.
func Get(c *netlink.Conn, name string) (Link, error) {
	return get(c, &rtnetlink.LinkMessage{Attributes: &rtnetlink.LinkAttributes{Name: name}}, strconv.Quote(name))
}

// GetIndex reads one device by index.
func GetIndex(c *netlink.Conn, index uint32) (Link, error) {
	return get(c, &rtnetlink.LinkMessage{Index: index}, strconv.Itoa(int(index)))
}

func get(c *netlink.Conn, req *rtnetlink.LinkMessage, what string) (Link, error) {
	b, err := req.MarshalBinary()
	if err != nil {
		return Link{}, err
	}
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETLINK, Flags: netlink.Request},
		Data:   b,
	})
	if err != nil {
		return Link{}, fmt.Errorf("get link %s: %w", what, err)
	}
	if len(msgs) != 1 {
		return Link{}, fmt.Errorf("get link %s: %d answers", what, len(msgs))
	}
	return parse(msgs[0])
}

// List reads every device in the conn's namespace.
func List(c *netlink.Conn) ([]Link, error) {
	return ListFiltered(c, Filter{})
}

// Filter selects devices in a dump; the kernel applies it, so a dump costs
// what it returns. The zero Filter selects every device.
type Filter struct {
	Master uint32 // only ports of this bridge; 0 = any
	Kind   string // only devices of this kind, e.g. "bridge"; "" = any
}

// ListFiltered reads the devices the filter selects, without statistics.
func ListFiltered(c *netlink.Conn, f Filter) ([]Link, error) {
	msgs, err := nl.Dump(c, unix.RTM_GETLINK, listMsgData(f))
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	links := make([]Link, 0, len(msgs))
	for _, m := range msgs {
		l, err := parse(m)
		if err != nil {
			return nil, err
		}
		links = append(links, l)
	}
	return links, nil
}

// listMsgData encodes the body of ListFiltered's dump request.
func listMsgData(f Filter) []byte {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(unix.IFLA_EXT_MASK, 1<<3) // RTEXT_FILTER_SKIP_STATS
	if f.Master != 0 {
		ae.Uint32(unix.IFLA_MASTER, f.Master)
	}
	if f.Kind != "" {
		ae.Nested(unix.IFLA_LINKINFO, func(ae *netlink.AttributeEncoder) error {
			ae.String(unix.IFLA_INFO_KIND, f.Kind)
			return nil
		})
	}
	b, _ := ae.Encode()
	return append(make([]byte, unix.SizeofIfInfomsg), b...)
}

// SetAliasMsg builds an RTM_NEWLINK that sets a device's alias (IFLA_IFALIAS);
// "" clears it.
func SetAliasMsg(index uint32, alias string) netlink.Message {
	a, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.IFLA_IFALIAS, Data: []byte(alias)}})
	return netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK, Flags: nl.Change},
		Data: append(linkmsg.IfInfo(unix.AF_UNSPEC, index, 0, 0), a...)}
}

// parse decodes an RTM_NEWLINK message.
func parse(m netlink.Message) (Link, error) {
	var lm rtnetlink.LinkMessage
	if err := lm.UnmarshalBinary(m.Data); err != nil {
		return Link{}, fmt.Errorf("decode link: %w", err)
	}
	a := lm.Attributes
	if a == nil {
		return Link{}, errors.New("decode link: no attributes")
	}
	l := Link{Index: lm.Index, Name: a.Name, MTU: int(a.MTU), MAC: a.Address,
		Up: lm.Flags&unix.IFF_UP != 0, Peer: a.Type}
	if a.Info != nil {
		l.Kind = a.Info.Kind
		if br, ok := a.Info.Data.(*driver.Bridge); ok && br.StpState != nil {
			l.STP = *br.StpState != driver.BridgeStpStateDisabled
		}
		if bp, ok := a.Info.SlaveData.(*driver.BridgePort); ok && bp.State != nil {
			l.PortState = uint8(*bp.State)
		}
	}
	if a.NetDevGroup != nil {
		l.Group = *a.NetDevGroup
	}
	if a.Alias != nil {
		l.Alias = *a.Alias
	}
	if a.Master != nil {
		l.Master = *a.Master
	}
	return l, nil
}

// Delete removes a device by index. Deleting one end of a veth pair removes
// both. A device that is already gone is not an error.
func Delete(c *netlink.Conn, index uint32) error {
	_, err := nl.Exec(c, DeleteMsg(index))
	if errors.Is(err, unix.ENODEV) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete link %d: %w", index, err)
	}
	return nil
}

// DeleteMsg builds an RTM_DELLINK for one device.
func DeleteMsg(index uint32) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: unix.RTM_DELLINK, Flags: nl.Change},
		Data:   linkmsg.IfInfo(unix.AF_UNSPEC, index, 0, 0),
	}
}

// DeleteGroup removes every device of a link group in the conn's namespace
// in one request: far faster than one delete per device, since the kernel
// then waits for RCU once. An empty group is not an error. Group 0 (the
// default group) is refused.
func DeleteGroup(c *netlink.Conn, group uint32) error {
	if group == 0 {
		return errors.New("delete link group 0: refused, it holds every ungrouped device")
	}
	_, err := nl.Exec(c, netlink.Message{
		Header: netlink.Header{Type: unix.RTM_DELLINK, Flags: nl.Change},
		Data:   append(linkmsg.IfInfo(unix.AF_UNSPEC, 0, 0, 0), groupAttr(group)...),
	})
	if errors.Is(err, unix.ENODEV) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete link group %#x: %w", group, err)
	}
	return nil
}

// UpMsg builds an RTM_NEWLINK that sets a device administratively up.
func UpMsg(index uint32) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: unix.RTM_NEWLINK, Flags: nl.Change},
		Data:   linkmsg.IfInfo(unix.AF_UNSPEC, index, unix.IFF_UP, unix.IFF_UP),
	}
}

// SetMsg builds an RTM_NEWLINK that changes an existing device: up (if
// up), its link group (if group != 0) and its alias (if alias != "").
// The kernel applies an alias only to existing devices, not on create.
func SetMsg(index uint32, up bool, group uint32, alias string) netlink.Message {
	var flags uint32
	if up {
		flags = unix.IFF_UP
	}
	b := linkmsg.IfInfo(unix.AF_UNSPEC, index, flags, flags)
	var attrs []netlink.Attribute
	if alias != "" {
		attrs = append(attrs, netlink.Attribute{Type: unix.IFLA_IFALIAS, Data: nlenc.Bytes(alias)})
	}
	if group != 0 {
		attrs = append(attrs, netlink.Attribute{Type: unix.IFLA_GROUP, Data: nlenc.Uint32Bytes(group)})
	}
	if len(attrs) > 0 {
		a, _ := netlink.MarshalAttributes(attrs)
		b = append(b, a...)
	}
	return netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK, Flags: nl.Change}, Data: b}
}

// groupAttr encodes IFLA_GROUP, which rtnetlink v2 can decode but not encode.
func groupAttr(group uint32) []byte {
	b, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.IFLA_GROUP, Data: nlenc.Uint32Bytes(group)}})
	return b
}
