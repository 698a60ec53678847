package link

import (
	"net"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/internal/nl"
	"golang.org/x/sys/unix"
)

// VethSpec describes a veth pair whose host end joins a bridge and whose
// peer is created directly in another namespace under its final name.
type VethSpec struct {
	Name      string // host end
	Master    uint32 // bridge index for the host end; 0 = none
	Group     uint32 // link group of the host end; 0 = default
	MTU       int    // both ends; 0 = kernel default
	PeerName  string
	PeerMAC   net.HardwareAddr // nil = random
	PeerNetNS int              // fd of the peer's namespace; the peer stays down
	Isolated  bool             // bridge-port isolation: no traffic to other isolated ports
}

// CreateVeth creates the pair in one request: the host end up, on its
// bridge, in its group; the peer in its namespace with its name, MAC and
// MTU. It returns the host end; its Peer field is the peer's index in the
// peer's namespace.
//
// Port flags cannot ride in the create message (the kernel ignores
// IFLA_INFO_SLAVE_DATA there), so with Isolated a second message goes in
// the same sendmsg.
func CreateVeth(c *netlink.Conn, s VethSpec) (Link, error) {
	m, err := CreateVethMsg(s)
	if err != nil {
		return Link{}, err
	}
	msgs := []netlink.Message{m}
	if s.Isolated {
		msgs = append(msgs, PortIsolatedMsg(s.Name, true))
	}
	return createEcho(c, "veth "+s.Name, msgs...)
}

// PortIsolatedMsg builds an RTM_NEWLINK that sets bridge-port isolation on
// the port named name: isolated ports cannot reach each other, only
// non-isolated ports and the bridge itself.
func PortIsolatedMsg(name string, isolated bool) netlink.Message {
	v := driver.BridgeEnableDisabled
	if isolated {
		v = driver.BridgeEnableEnabled
	}
	b, _ := (&rtnetlink.LinkMessage{Attributes: &rtnetlink.LinkAttributes{Name: name,
		Info: &rtnetlink.LinkInfo{SlaveKind: "bridge", SlaveData: &driver.BridgePort{Isolated: &v}}}}).MarshalBinary()
	return netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK, Flags: nl.Change}, Data: b}
}

// CreateVethMsg builds the RTM_NEWLINK of CreateVeth. The peer cannot be
// set up here: veth_open would fail with ENOTCONN before the pair is linked.
func CreateVethMsg(s VethSpec) (netlink.Message, error) {
	peer := &rtnetlink.LinkMessage{Attributes: &rtnetlink.LinkAttributes{
		Name: s.PeerName, Address: s.PeerMAC, MTU: uint32(s.MTU),
		NetNS: rtnetlink.NetNSForFD(uint32(s.PeerNetNS)),
	}}
	a := &rtnetlink.LinkAttributes{Name: s.Name, MTU: uint32(s.MTU),
		Info: &rtnetlink.LinkInfo{Kind: "veth", Data: &driver.Veth{PeerInfo: peer}}}
	if s.Master != 0 {
		a.Master = &s.Master
	}
	return newLinkMsg(a, s.Group)
}
