package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/route"
)

// netConf is the plugin's configuration: the reference bridge plugin's
// fields under their names, then nlbridge's own.
type netConf struct {
	types.PluginConf

	// The reference bridge plugin's fields.
	Bridge                    string `json:"bridge"`
	IsGateway                 bool   `json:"isGateway"`
	IsDefaultGateway          bool   `json:"isDefaultGateway"`
	ForceAddress              bool   `json:"forceAddress"`
	IPMasq                    bool   `json:"ipMasq"`
	MTU                       int    `json:"mtu"`
	HairpinMode               bool   `json:"hairpinMode"`
	PromiscMode               bool   `json:"promiscMode"`
	PortIsolation             bool   `json:"portIsolation"`
	MacSpoofChk               bool   `json:"macspoofchk"`
	DisableContainerInterface bool   `json:"disableContainerInterface"`
	Vlan                      int    `json:"vlan"`
	VlanTrunk                 []any  `json:"vlanTrunk"`
	EnableDad                 bool   `json:"enabledad"`

	// nlbridge's own options.
	GatewayMode     string `json:"gatewayMode"`     // IPv4: nat, nat-unprotected, routed, isolated; "" = from isGateway/ipMasq
	GatewayModeIPv6 string `json:"gatewayModeIPv6"` // likewise for IPv6; "" = as gatewayMode
	Internal        bool   `json:"internal"`        // no default route, nothing forwarded in or out
	HostIPv4        string `json:"hostIPv4"`        // SNAT outbound IPv4 to this address instead of masquerade
	HostIPv6        string `json:"hostIPv6"`        // likewise for IPv6
	DefaultHostIP   string `json:"defaultHostIP"`   // host address for port mappings without hostIP
	Announcements   *int   `json:"announcements"`   // gratuitous ARP / unsolicited NA after ADD: 0 or 1 (default 1)

	IPAM ipamConf `json:"ipam"`

	RuntimeConfig runtimeConfig `json:"runtimeConfig"`
	Args          struct {
		CNI struct {
			IPs []string `json:"ips"`
		} `json:"cni"`
	} `json:"args"`
}

// ipamConf is the ipam section; for type host-local its ranges are read
// and allocated by the plugin itself.
type ipamConf struct {
	Type   string         `json:"type"`
	Ranges [][]rangeConf  `json:"ranges"`
	Routes []*types.Route `json:"routes"`
	// Legacy single-range form of host-local.
	rangeConf
	ResolvConf string `json:"resolvConf"`
}

// rangeConf is one host-local range.
type rangeConf struct {
	Subnet     string `json:"subnet"`
	RangeStart string `json:"rangeStart"`
	RangeEnd   string `json:"rangeEnd"`
	Gateway    string `json:"gateway"`
}

// pool is the addresses of one family the plugin may hand out.
type pool struct {
	subnet  netip.Prefix // masked
	gateway netip.Addr   // the bridge's address
	ranges  [][2]netip.Addr
}

// prefix is the network's gateway prefix (library NetworkConfig form).
func (p *pool) prefix() netip.Prefix {
	if p == nil {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(p.gateway, p.subnet.Bits())
}

// contains reports whether a is in one of the pool's ranges.
func (p *pool) contains(a netip.Addr) bool {
	for _, r := range p.ranges {
		if a.Compare(r[0]) >= 0 && a.Compare(r[1]) <= 0 {
			return true
		}
	}
	return false
}

// whole reports whether the ranges cover the whole subnet, so the library's
// own lowest-free allocation gives the same answer.
func (p *pool) whole() bool {
	return len(p.ranges) == 1 && p.ranges[0] == defaultRange(p.subnet)
}

// plan is a parsed, validated configuration: everything ADD needs.
type plan struct {
	conf     *netConf
	hostLoc  bool // ipam is host-local: the plugin allocates
	v4, v6   *pool
	defRoute [2]bool       // default route configured, per family (0 = IPv4)
	routes   []route.Route // other routes, added in the sandbox after attach
	net      bridge.NetworkConfig
	announce int
}

// announcement chooses how ADD announces the new addresses. An IPv4-only
// attachment leaves it to the kernel (arp_notify: a gratuitous ARP when
// the interface comes up), which costs nothing; with IPv6 the library
// sends one gratuitous ARP and unsolicited NA, and the plugin's exit waits
// for its AF_PACKET socket's release (an RCU grace period).
func (p *plan) announcement() (*bridge.Advertise, []string) {
	switch {
	case p.announce == 0:
		return &bridge.Advertise{}, nil
	case p.v6 == nil && p.net.IPv6 == (netip.Prefix{}):
		return &bridge.Advertise{}, []string{"net.ipv4.conf.IFNAME.arp_notify=1"}
	}
	return &bridge.Advertise{Count: 1}, nil
}

// configError is bad network configuration (CNI code 7) or a field the
// plugin cannot honour (code 2).
func configError(field string, value any, why string) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig,
		fmt.Sprintf("invalid network config: %s %v: %s", field, value, why), "")
}

func unsupported(field string, value any, why string) *types.Error {
	return types.NewError(types.ErrUnsupportedField,
		fmt.Sprintf("unsupported network config: %s %v: %s", field, value, why), "")
}

// parseConf reads the configuration from stdin data. Nothing in the kernel
// is consulted: a delegated ipam's result fills in the addresses later.
func parseConf(data []byte) (*plan, error) {
	c := &netConf{Bridge: "cni0"}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "cannot decode network config: "+err.Error(), "")
	}
	p := &plan{conf: c, announce: 1}
	switch {
	case c.DisableContainerInterface:
		return nil, unsupported("disableContainerInterface", true, "the container interface is always up (its addresses and routes need it)")
	case c.Vlan != 0 || len(c.VlanTrunk) > 0:
		return nil, unsupported("vlan", c.Vlan, "VLANs are not supported")
	case c.EnableDad:
		return nil, unsupported("enabledad", true, "addresses are added without DAD")
	case c.Announcements != nil && (*c.Announcements < 0 || *c.Announcements > 1):
		return nil, configError("announcements", *c.Announcements, "want 0 or 1")
	}
	if c.Announcements != nil {
		p.announce = *c.Announcements
	}
	p.net = bridge.NetworkConfig{Name: c.Bridge, MTU: c.MTU, Internal: c.Internal, DisableICC: c.PortIsolation}
	for _, a := range []struct {
		field, s string
		to       *netip.Addr
	}{{"hostIPv4", c.HostIPv4, &p.net.HostIPv4}, {"hostIPv6", c.HostIPv6, &p.net.HostIPv6},
		{"defaultHostIP", c.DefaultHostIP, &p.net.DefaultHostIP}} {
		if a.s == "" {
			continue
		}
		v, err := netip.ParseAddr(a.s)
		if err != nil {
			return nil, configError(a.field, quote(a.s), "want an IP address")
		}
		*a.to = v
	}
	if err := p.modes(); err != nil {
		return nil, err
	}
	if c.IsDefaultGateway {
		p.defRoute = [2]bool{true, true}
	}
	switch c.IPAM.Type {
	case "host-local":
		p.hostLoc = true
		if err := p.hostLocal(); err != nil {
			return nil, err
		}
	case "":
		return nil, configError("ipam.type", `""`, "an ipam section is required (host-local is built in)")
	}
	return p, nil
}

// parseForDel reads only what DEL needs: the bridge and the ipam type.
func parseForDel(data []byte) (*plan, error) {
	c := &netConf{Bridge: "cni0"}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "cannot decode network config: "+err.Error(), "")
	}
	return &plan{conf: c, hostLoc: c.IPAM.Type == "host-local" || c.IPAM.Type == "",
		net: bridge.NetworkConfig{Name: c.Bridge}}, nil
}

// modes sets the gateway modes from isGateway/ipMasq and the explicit
// gatewayMode options.
func (p *plan) modes() error {
	c := p.conf
	def := bridge.Routed
	if c.IPMasq {
		def = bridge.NAT
	}
	if !c.IsGateway && !c.IsDefaultGateway {
		def = bridge.Isolated
	}
	m4, err := parseMode("gatewayMode", c.GatewayMode, def)
	if err != nil {
		return err
	}
	m6, err := parseMode("gatewayModeIPv6", c.GatewayModeIPv6, m4)
	if err != nil {
		return err
	}
	p.net.GatewayModeIPv4, p.net.GatewayModeIPv6 = m4, m6
	return nil
}

func parseMode(field, s string, def bridge.GatewayMode) (bridge.GatewayMode, error) {
	if s == "" {
		return def, nil
	}
	for _, m := range []bridge.GatewayMode{bridge.NAT, bridge.NATUnprotected, bridge.Routed, bridge.Isolated} {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, configError(field, s, "want nat, nat-unprotected, routed or isolated")
}

// hostLocal reads host-local ranges: at most one range set per family, the
// ranges of a set in one subnet, with one gateway.
func (p *plan) hostLocal() error {
	ipam := p.conf.IPAM
	sets := ipam.Ranges
	if ipam.Subnet != "" {
		sets = append([][]rangeConf{{ipam.rangeConf}}, sets...)
	}
	if len(sets) == 0 {
		return configError("ipam.ranges", "[]", "host-local needs a range (or subnet)")
	}
	for i, set := range sets {
		pl, err := parseSet(fmt.Sprintf("ipam.ranges[%d]", i), set)
		if err != nil {
			return err
		}
		slot := &p.v4
		if pl.subnet.Addr().Is6() {
			slot = &p.v6
		}
		if *slot != nil {
			return unsupported(fmt.Sprintf("ipam.ranges[%d]", i), pl.subnet, "one range set per address family only (the bridge has one subnet per family)")
		}
		*slot = pl
	}
	for i, r := range ipam.Routes {
		if r == nil {
			continue
		}
		if err := p.addRoute(fmt.Sprintf("ipam.routes[%d]", i), r); err != nil {
			return err
		}
	}
	p.net.IPv4, p.net.IPv6 = p.v4.prefix(), p.v6.prefix()
	return nil
}

// addRoute takes a route of the ipam config or result: a default route is
// the library's (via the bridge's gateway); any other goes into the
// sandbox after attach, via its gw or the gateway of its family.
func (p *plan) addRoute(field string, r *types.Route) error {
	ones, _ := r.Dst.Mask.Size()
	a, ok := netip.AddrFromSlice(r.Dst.IP)
	if !ok {
		return configError(field+".dst", r.Dst.String(), "want a CIDR")
	}
	dst := netip.PrefixFrom(a.Unmap(), ones)
	pl, fam := p.v4, 0
	if dst.Addr().Is6() {
		pl, fam = p.v6, 1
	}
	if ones == 0 {
		p.defRoute[fam] = true
		return nil
	}
	if pl == nil {
		return configError(field+".dst", dst, "the network has no subnet of that family")
	}
	gw := pl.gateway
	if r.GW != nil {
		g, ok := netip.AddrFromSlice(r.GW)
		if !ok || g.Unmap().Is4() != dst.Addr().Is4() || !pl.subnet.Contains(g.Unmap()) {
			return configError(field+".gw", r.GW.String(), "want an address in "+pl.subnet.String())
		}
		gw = g.Unmap()
	}
	p.routes = append(p.routes, route.Route{Dst: dst.Masked(), Gw: gw})
	return nil
}

// parseSet reads one range set.
func parseSet(field string, set []rangeConf) (*pool, error) {
	if len(set) == 0 {
		return nil, configError(field, "[]", "empty range set")
	}
	pl := &pool{}
	for j, r := range set {
		f := fmt.Sprintf("%s[%d]", field, j)
		sub, err := netip.ParsePrefix(r.Subnet)
		if err != nil {
			return nil, configError(f+".subnet", quote(r.Subnet), "want a CIDR subnet")
		}
		sub = sub.Masked()
		if j == 0 {
			pl.subnet = sub
		} else if sub != pl.subnet {
			return nil, unsupported(f+".subnet", sub, "all ranges of a set must share one subnet (here "+pl.subnet.String()+")")
		}
		def := defaultRange(sub)
		if !def[0].IsValid() || def[0].Compare(def[1]) > 0 {
			return nil, configError(f+".subnet", sub, "too small")
		}
		lo, err := parseIn(f+".rangeStart", r.RangeStart, sub, def[0])
		if err != nil {
			return nil, err
		}
		hi, err := parseIn(f+".rangeEnd", r.RangeEnd, sub, def[1])
		if err != nil {
			return nil, err
		}
		if lo.Compare(hi) > 0 {
			return nil, configError(f+".rangeEnd", hi, "below rangeStart "+lo.String())
		}
		pl.ranges = append(pl.ranges, [2]netip.Addr{lo, hi})
		if r.Gateway != "" {
			gw, err := parseIn(f+".gateway", r.Gateway, sub, netip.Addr{})
			if err != nil {
				return nil, err
			}
			if pl.gateway.IsValid() && gw != pl.gateway {
				return nil, unsupported(f+".gateway", gw, "one gateway per set (here "+pl.gateway.String()+")")
			}
			pl.gateway = gw
		}
	}
	if !pl.gateway.IsValid() {
		pl.gateway = pl.subnet.Addr().Next() // host-local's default: the subnet's first address
	}
	return pl, nil
}

// parseIn parses an address that must lie in subnet; "" gives def.
func parseIn(field, s string, subnet netip.Prefix, def netip.Addr) (netip.Addr, error) {
	if s == "" {
		return def, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return a, configError(field, quote(s), "want an IP address")
	}
	a = a.Unmap()
	if !subnet.Contains(a) {
		return a, configError(field, a, "outside the subnet "+subnet.String())
	}
	return a, nil
}

// defaultRange is host-local's default range of a subnet: from the first
// address after the network address to the last before the broadcast
// address (IPv4) or to the last address (IPv6).
func defaultRange(subnet netip.Prefix) [2]netip.Addr {
	last := lastAddr(subnet)
	if subnet.Addr().Is4() {
		last = last.Prev()
	}
	return [2]netip.Addr{subnet.Addr().Next(), last}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func quote(s string) string { return fmt.Sprintf("%q", s) }

// ifaceName returns the container interface name; CNI requires it.
func checkIfName(s string) error {
	if s == "" || len(s) > 15 || strings.ContainsAny(s, "/: \t\n") {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_IFNAME %q: not a valid interface name", s), "")
	}
	return nil
}
