package link

import (
	"fmt"
	"net"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"github.com/nlbridge/bridge/internal/linkmsg"
	"github.com/nlbridge/bridge/internal/nl"
	"golang.org/x/sys/unix"
)

// BridgeSpec describes a bridge to create.
type BridgeSpec struct {
	Name  string
	MTU   int              // 0 = kernel default
	MAC   net.HardwareAddr // pinned so it does not follow the ports; nil = kernel's choice
	Group uint32           // 0 = default group
	// Alias is set by a second message in the same sendmsg: the kernel
	// ignores IFLA_IFALIAS in a create. One sendmsg runs to its end in the
	// kernel, so a process killed meanwhile leaves no bridge without it.
	Alias string
}

// CreateBridge creates an administratively up bridge in one request and
// returns it as the kernel echoed it back.
func CreateBridge(c *netlink.Conn, s BridgeSpec) (Link, error) {
	m, err := createBridgeMsg(s)
	if err != nil {
		return Link{}, err
	}
	if s.Alias == "" {
		return createEcho(c, "bridge "+s.Name, m)
	}
	return createEcho(c, "bridge "+s.Name, m, setAliasByNameMsg(s.Name, s.Alias))
}

// setAliasByNameMsg sets the alias of the device with this name, which may
// be created by an earlier message of the same sendmsg.
func setAliasByNameMsg(name, alias string) netlink.Message {
	a, _ := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.IFLA_IFNAME, Data: nlenc.Bytes(name)},
		{Type: unix.IFLA_IFALIAS, Data: []byte(alias)},
	})
	return netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK, Flags: nl.Change},
		Data: append(linkmsg.IfInfo(unix.AF_UNSPEC, 0, 0, 0), a...)}
}

// createBridgeMsg builds the RTM_NEWLINK of CreateBridge.
func createBridgeMsg(s BridgeSpec) (netlink.Message, error) {
	a := &rtnetlink.LinkAttributes{Name: s.Name, MTU: uint32(s.MTU), Address: s.MAC,
		Info: &rtnetlink.LinkInfo{Kind: "bridge"}}
	return newLinkMsg(a, s.Group, true)
}

// newLinkMsg builds an RTM_NEWLINK (create, exclusive, echo), up or down.
func newLinkMsg(a *rtnetlink.LinkAttributes, group uint32, up bool) (netlink.Message, error) {
	var flags uint32
	if up {
		flags = unix.IFF_UP
	}
	b, err := (&rtnetlink.LinkMessage{Flags: flags, Change: flags, Attributes: a}).MarshalBinary()
	if err != nil {
		return netlink.Message{}, err
	}
	if group != 0 {
		b = append(b, groupAttr(group)...)
	}
	return netlink.Message{
		Header: netlink.Header{Type: unix.RTM_NEWLINK, Flags: nl.Create | netlink.Echo},
		Data:   b,
	}, nil
}

// createEcho sends a create request flagged Echo (and follow-ups, in the
// same sendmsg) and decodes the echo. If a follow-up fails after the device
// was created, it returns the device too, so the caller can remove it.
func createEcho(c *netlink.Conn, what string, msgs ...netlink.Message) (Link, error) {
	replies, err := nl.Exec(c, msgs...)
	var l Link
	for _, r := range replies {
		if r.Header.Type == unix.RTM_NEWLINK {
			var perr error
			if l, perr = parse(r); perr != nil && err == nil {
				err = perr
			}
			break
		}
	}
	switch {
	case err != nil:
		return l, fmt.Errorf("create %s: %w", what, err)
	case l.Index == 0:
		return l, fmt.Errorf("create %s: kernel sent no echo (needs Linux 6.3+)", what)
	}
	return l, nil
}
