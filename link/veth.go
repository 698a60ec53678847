package link

import (
	"net"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/internal/linkmsg"
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
	Alias     string           // IFLA_IFALIAS of the host end; "" = none
}

// CreateVeth creates the pair in one sendmsg: the create request (host end
// down, on its bridge, in its group; the peer in its namespace with its
// name, MAC and MTU) and one request that brings the host end up as a bare
// bridge port (see linkmsg.HostEnd). It returns the host end; its Peer field is
// the peer's index in the peer's namespace.
func CreateVeth(c *netlink.Conn, s VethSpec) (Link, error) {
	m, err := createVethMsg(s)
	if err != nil {
		return Link{}, err
	}
	return createEcho(c, "veth "+s.Name, m, linkmsg.HostEnd(s.Name, s.Master != 0, s.Isolated, s.Alias))
}

// AddrGenModeNoneMsg builds an RTM_NEWLINK that sets the device's IPv6
// address generation mode to none: no link-local or SLAAC-derived address
// of its own when it comes up. Send it while the device is down; it cannot
// ride in a veth create message (the kernel refuses IFLA_AF_SPEC there
// with EAFNOSUPPORT, also for the peer), and a kernel without IPv6 refuses
// it with EAFNOSUPPORT.
func AddrGenModeNoneMsg(index uint32) netlink.Message {
	return netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK, Flags: nl.Change},
		Data: append(linkmsg.IfInfo(unix.AF_UNSPEC, index, 0, 0), linkmsg.AddrGenModeNone()...)}
}

// createVethMsg builds the RTM_NEWLINK of CreateVeth. The peer cannot be
// set up here: veth_open would fail with ENOTCONN before the pair is linked.
func createVethMsg(s VethSpec) (netlink.Message, error) {
	peer := &rtnetlink.LinkMessage{Attributes: &rtnetlink.LinkAttributes{
		Name: s.PeerName, Address: s.PeerMAC, MTU: uint32(s.MTU),
		NetNS: rtnetlink.NetNSForFD(uint32(s.PeerNetNS)),
	}}
	a := &rtnetlink.LinkAttributes{Name: s.Name, MTU: uint32(s.MTU),
		Info: &rtnetlink.LinkInfo{Kind: "veth", Data: &driver.Veth{PeerInfo: peer}}}
	if s.Master != 0 {
		a.Master = &s.Master
	}
	return newLinkMsg(a, s.Group, false)
}
