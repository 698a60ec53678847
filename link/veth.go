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
	Alias     string           // IFLA_IFALIAS of the host end; "" = none
}

// CreateVeth creates the pair in one sendmsg: the create request (host end
// down, on its bridge, in its group; the peer in its namespace with its
// name, MAC and MTU) and one request that brings the host end up as a bare
// bridge port (see HostEndMsg). It returns the host end; its Peer field is
// the peer's index in the peer's namespace.
func CreateVeth(c *netlink.Conn, s VethSpec) (Link, error) {
	m, err := createVethMsg(s)
	if err != nil {
		return Link{}, err
	}
	return createEcho(c, "veth "+s.Name, m, HostEndMsg(s.Name, s.Isolated, s.Alias))
}

// HostEndMsg builds an RTM_NEWLINK that brings up the device named name as
// a bridge port with no IPv6 addressing (addrgenmode none: no link-local
// address, so no DAD, router solicitations or MLD, whose deferred work
// would contend for the RTNL lock), if isolated bridge-port isolation, and
// the alias, if not "". Port flags cannot ride in the create message (the
// kernel ignores IFLA_INFO_SLAVE_DATA there), nor can the inet6 settings
// (EAFNOSUPPORT) or an alias (ignored).
func HostEndMsg(name string, isolated bool, alias string) netlink.Message {
	a := &rtnetlink.LinkAttributes{Name: name}
	if alias != "" {
		a.Alias = &alias
	}
	if isolated {
		on := driver.BridgeEnableEnabled
		a.Info = &rtnetlink.LinkInfo{SlaveKind: "bridge", SlaveData: &driver.BridgePort{Isolated: &on}}
	}
	b, _ := (&rtnetlink.LinkMessage{Flags: unix.IFF_UP, Change: unix.IFF_UP, Attributes: a}).MarshalBinary()
	return netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK, Flags: nl.Change}, Data: append(b, addrGenModeNone()...)}
}

// AddrGenModeNoneMsg builds an RTM_NEWLINK that sets the device's IPv6
// address generation mode to none: no link-local or SLAAC-derived address
// of its own when it comes up. Send it while the device is down; it cannot
// ride in a veth create message (the kernel refuses IFLA_AF_SPEC there
// with EAFNOSUPPORT, also for the peer), and a kernel without IPv6 refuses
// it with EAFNOSUPPORT.
func AddrGenModeNoneMsg(index uint32) netlink.Message {
	return netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK, Flags: nl.Change},
		Data: append(ifinfo(unix.AF_UNSPEC, index, 0, 0), addrGenModeNone()...)}
}

// addrGenModeNone encodes IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_ADDR_GEN_MODE: none } }.
func addrGenModeNone() []byte {
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
