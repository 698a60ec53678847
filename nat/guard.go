package nat

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The guard is a bridge-family table of the same name as the inet table. Its
// prerouting hook sees every frame that enters a bridge from a port, before
// the bridge forwards or delivers it. Frames from our endpoints' ports (the
// host ends of the veth pairs, by name) lose Router Advertisements and
// Redirects; on spoof-checked ports every frame must carry the endpoint's
// MAC, and ARP, IPv4 and IPv6 (with the NDP fields) its addresses. Each
// endpoint is a few set elements keyed by port name, so the elements can go
// in before the device exists and an attach costs the same however many
// endpoints there are.

// Guard set names.
const (
	setEndpoints = "endpoints" // ifname: every endpoint port (RA guard)
	setGuarded   = "guarded"   // ifname: ports with the spoof check
	setMACs      = "macs"      // ifname . ether_addr
	setAddrs4    = "addrs4"    // ifname . ipv4_addr
	setAddrs6    = "addrs6"    // ifname . ipv6_addr: its address and its EUI-64 link-local one
	setNoIPv6    = "noipv6"    // ifname: ports of IPv4-only networks, which carry no IPv6 at all
)

// Guard is one endpoint's entry in the guard: its port gets the RA guard
// and, unless AllowSpoofing, the source checks.
type Guard struct {
	Port          string           // host end of the veth pair: the bridge port
	AllowSpoofing bool             // RA guard only
	MAC           net.HardwareAddr // the endpoint's MAC
	IPv4, IPv6    netip.Addr       // its addresses; zero = none of that family
	NoIPv6        bool             // its network is IPv4-only: no IPv6 frame in or out of the port
}

// linkLocal is the EUI-64 link-local address of mac, which the kernel gives
// an interface by default (addr_gen_mode eui64): the one link-local source
// a spoof-checked endpoint may use.
func linkLocal(mac net.HardwareAddr) netip.Addr {
	var a [16]byte
	a[0], a[1] = 0xfe, 0x80
	if len(mac) == 6 {
		a[8], a[9], a[10], a[11], a[12] = mac[0]^2, mac[1], mac[2], 0xff, 0xfe
		a[13], a[14], a[15] = mac[3], mac[4], mac[5]
	}
	return netip.AddrFrom16(a)
}

// elements applies op to the guard's elements.
func (g Guard) elements(op func(string, ...nftables.SetElement)) {
	port := ifname(g.Port)
	key := func(b []byte) []byte { return cat32(port, b) }
	op(setEndpoints, nftables.SetElement{Key: port})
	if g.NoIPv6 {
		op(setNoIPv6, nftables.SetElement{Key: port})
	}
	if g.AllowSpoofing {
		return
	}
	op(setGuarded, nftables.SetElement{Key: port})
	op(setMACs, nftables.SetElement{Key: key(g.MAC)})
	if g.IPv4.IsValid() {
		op(setAddrs4, nftables.SetElement{Key: key(g.IPv4.AsSlice())})
	}
	six := []nftables.SetElement{{Key: key(linkLocal(g.MAC).AsSlice())}}
	if g.IPv6.IsValid() {
		six = append(six, nftables.SetElement{Key: key(g.IPv6.AsSlice())})
	}
	op(setAddrs6, six...)
}

// guardSets declares the guard's sets.
func guardSets(t *nftables.Table) []*nftables.Set {
	concat := func(ts ...nftables.SetDatatype) nftables.SetDatatype {
		c, err := nftables.ConcatSetType(ts...)
		if err != nil {
			panic(err) // fixed, valid type lists
		}
		return c
	}
	host := binaryutil.NativeEndian
	return []*nftables.Set{
		{Table: t, Name: setEndpoints, KeyType: nftables.TypeIFName, KeyByteOrder: host},
		{Table: t, Name: setGuarded, KeyType: nftables.TypeIFName, KeyByteOrder: host},
		{Table: t, Name: setMACs, Concatenation: true, KeyType: concat(nftables.TypeIFName, nftables.TypeEtherAddr)},
		{Table: t, Name: setAddrs4, Concatenation: true, KeyType: concat(nftables.TypeIFName, nftables.TypeIPAddr)},
		{Table: t, Name: setAddrs6, Concatenation: true, KeyType: concat(nftables.TypeIFName, nftables.TypeIP6Addr)},
		{Table: t, Name: setNoIPv6, KeyType: nftables.TypeIFName, KeyByteOrder: host},
	}
}

// Offsets in the headers the guard reads.
const (
	ethSrc, ethType = 6, 12
	arpSHA, arpSPA  = 8, 14
	ip4Src          = 12
	ip6Plen, ip6Nxt = 4, 6
	ip6Src          = 8
	ndTarget        = 8  // NS/NA target address in the ICMPv6 message
	ndOpt           = 24 // first option of an NS/NA
	rsOpt           = 8  // first option of an RS
)

// ICMPv6 types the guard reads.
const (
	icmp6MLD2Report = 143
	icmp6RS         = 133
	icmp6RA         = 134
	icmp6NS         = 135
	icmp6NA         = 136
	icmp6Redirect   = 137
)

// guardChains declares the guard's chains and rules. A packet that passes
// every check of its protocol falls off the end of its chain and goes on
// (the hook's policy is accept).
func guardChains(t *nftables.Table) []chain {
	accept := nftables.ChainPolicyAccept
	base := &nftables.Chain{Table: t, Name: "prerouting", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-300), Policy: &accept}
	reg := func(name string) *nftables.Chain { return &nftables.Chain{Table: t, Name: name} }
	to := func(k expr.VerdictKind, c string) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k, Chain: c}} }
	drop, acc := verdict(expr.VerdictDrop), verdict(expr.VerdictAccept)
	nh, th := expr.PayloadBaseNetworkHeader, expr.PayloadBaseTransportHeader
	icmp6 := cat(metaEq(expr.MetaKeyL4PROTO, unix.IPPROTO_ICMPV6))
	icmp6Type := func(typ byte) []expr.Any { return cat(icmp6, payloadEq(th, 0, typ)) }
	plen := func(n uint16) []expr.Any { return payloadEq(nh, ip6Plen, byte(n>>8), byte(n)) }
	// An option of the given type, length 1 (8 bytes: a MAC), carrying the
	// port's MAC, at off in the ICMPv6 message.
	ownLLOpt := func(typ byte, off uint32) []expr.Any {
		return cat(payloadEq(th, off, typ, 1), portKeyIn(th, off+2, 6, setMACs, false))
	}
	hook := func(name string, h *nftables.ChainHook) *nftables.Chain {
		return &nftables.Chain{Table: t, Name: name, Type: nftables.ChainTypeFilter,
			Hooknum: h, Priority: nftables.ChainPriorityRef(-300), Policy: &accept}
	}
	ip6 := metaEq(expr.MetaKeyPROTOCOL, 0x86, 0xdd)
	return []chain{
		// The ports of an IPv4-only network carry no IPv6 frame, in or out
		// (also none from the host): their sandbox interfaces have IPv6 on
		// without addresses (addrgenmode none), and nothing may reach them
		// that could give them one or use them. (By port: this kernel has
		// no meta ibrname/obrname, CONFIG_NFT_BRIDGE_META.)
		{hook("forward", nftables.ChainHookForward), [][]expr.Any{
			cat(ifnameIn(expr.MetaKeyOIFNAME, setNoIPv6), ip6, drop),
		}},
		{hook("output", nftables.ChainHookOutput), [][]expr.Any{
			cat(ifnameIn(expr.MetaKeyOIFNAME, setNoIPv6), ip6, drop),
		}},
		{base, [][]expr.Any{
			cat(ifnameIn(expr.MetaKeyIIFNAME, setNoIPv6), ip6, drop),
			cat(ifnameIn(expr.MetaKeyIIFNAME, setEndpoints), to(expr.VerdictJump, "raguard")),
			cat(ifnameIn(expr.MetaKeyIIFNAME, setGuarded), to(expr.VerdictJump, "spoof")),
		}},
		// Router Advertisements and Redirects, whatever extension headers
		// come first (the kernel drops fragmented ND messages, RFC 6980).
		{reg("raguard"), [][]expr.Any{
			cat(metaEq(expr.MetaKeyPROTOCOL, 0x86, 0xdd), icmp6Type(icmp6RA), drop),
			cat(metaEq(expr.MetaKeyPROTOCOL, 0x86, 0xdd), icmp6Type(icmp6Redirect), drop),
		}},
		// The Ethernet source is the port's MAC; only ARP, IPv4 and IPv6
		// (untagged) get through.
		{reg("spoof"), [][]expr.Any{
			cat(portKeyIn(expr.PayloadBaseLLHeader, ethSrc, 6, setMACs, true), drop),
			cat(payloadEq(expr.PayloadBaseLLHeader, ethType, 0x08, 0x06), to(expr.VerdictGoto, "arp")),
			cat(payloadEq(expr.PayloadBaseLLHeader, ethType, 0x08, 0x00), to(expr.VerdictGoto, "ip4")),
			cat(payloadEq(expr.PayloadBaseLLHeader, ethType, 0x86, 0xdd), to(expr.VerdictGoto, "ip6")),
			drop,
		}},
		// Ethernet/IPv4 ARP; sender MAC the port's; sender IP its address,
		// or 0.0.0.0 for a probe (RFC 5227).
		{reg("arp"), [][]expr.Any{
			cat(payloadNeq(nh, 0, 0, 1, 0x08, 0x00, 6, 4), drop),
			cat(portKeyIn(nh, arpSHA, 6, setMACs, true), drop),
			cat(payloadEq(nh, arpSPA, 0, 0, 0, 0), acc),
			cat(portKeyIn(nh, arpSPA, 4, setAddrs4, true), drop),
		}},
		// IPv4 from its address, or from 0.0.0.0 to a DHCP server.
		{reg("ip4"), [][]expr.Any{
			cat(portKeyIn(nh, ip4Src, 4, setAddrs4, false), acc),
			cat(payloadEq(nh, ip4Src, 0, 0, 0, 0), metaEq(expr.MetaKeyL4PROTO, unix.IPPROTO_UDP), payloadEq(th, 2, 0, 67), acc),
			drop,
		}},
		// IPv6 from its address or its link-local one (then NDP is
		// checked), or from :: for DAD and MLD.
		{reg("ip6"), [][]expr.Any{
			cat(portKeyIn(nh, ip6Src, 16, setAddrs6, false), to(expr.VerdictGoto, "nd")),
			cat(payloadEq(nh, ip6Src, make([]byte, 16)...), to(expr.VerdictGoto, "unspec")),
			drop,
		}},
		// ND messages (types 133-137) come without extension headers; an
		// RS or NS carries the port's MAC as its source link-layer option,
		// an NA one of the port's addresses as target and its MAC as target
		// link-layer option. Either option may be left out; no other is
		// allowed. Anything else (also non-first fragments, whose type is
		// unknown) falls through.
		{reg("nd"), [][]expr.Any{
			cat(icmp6, ndType(), payloadNeq(nh, ip6Nxt, unix.IPPROTO_ICMPV6), drop),
			cat(icmp6Type(icmp6RS), plen(8), acc),
			cat(icmp6Type(icmp6RS), plen(16), ownLLOpt(1, rsOpt), acc),
			cat(icmp6Type(icmp6RS), drop),
			cat(icmp6Type(icmp6NS), plen(24), acc),
			cat(icmp6Type(icmp6NS), plen(32), ownLLOpt(1, ndOpt), acc),
			cat(icmp6Type(icmp6NS), drop),
			cat(icmp6Type(icmp6NA), portKeyIn(th, ndTarget, 16, setAddrs6, true), drop),
			cat(icmp6Type(icmp6NA), plen(24), acc),
			cat(icmp6Type(icmp6NA), plen(32), ownLLOpt(2, ndOpt), acc),
			cat(icmp6Type(icmp6NA), drop),
		}},
		// From ::, only MLDv2 reports and DAD (an NS without options, or
		// with only the nonce option of RFC 7527).
		{reg("unspec"), [][]expr.Any{
			cat(icmp6Type(icmp6MLD2Report), acc),
			cat(payloadEq(nh, ip6Nxt, unix.IPPROTO_ICMPV6), icmp6Type(icmp6NS), plen(24), acc),
			cat(payloadEq(nh, ip6Nxt, unix.IPPROTO_ICMPV6), icmp6Type(icmp6NS), plen(32), payloadEq(th, ndOpt, 14, 1), acc),
			drop,
		}},
	}
}

// loopbackChain drops packets to 127.0.0.0/8 that enter from our bridges,
// before conntrack and NAT. The bridges have route_localnet on (so that
// 127.0.0.1 on the host reaches published ports: the replies come back to
// 127.0.0.1 through the bridge), which would otherwise deliver such packets
// to the host's loopback services.
func loopbackChain(t *nftables.Table) chain {
	accept := nftables.ChainPolicyAccept
	c := &nftables.Chain{Table: t, Name: "raw", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw, Policy: &accept}
	return chain{c, [][]expr.Any{
		cat(nfproto(unix.NFPROTO_IPV4), ifnameIn(expr.MetaKeyIIFNAME, setBridges), daddrLoopback(), verdict(expr.VerdictDrop)),
	}}
}

// noLoopbackDNAT returns from prerouting DNAT for packets to 127.0.0.0/8:
// they come from the network (the host's own go through output), so a port
// published on 127.0.0.1 is not reached by an outside host that routes
// 127.0.0.1 via this one; unNATed, the kernel drops them as martians.
func noLoopbackDNAT() []expr.Any {
	return cat(nfproto(unix.NFPROTO_IPV4), daddrLoopback(), verdict(expr.VerdictReturn))
}

func daddrLoopback() []expr.Any {
	off, n := addrOffset(false, true)
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: []byte{255, 0, 0, 0}, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{127, 0, 0, 0}},
	}
}

// portKeyIn matches "iifname . <len bytes at base+off> [!=] @set".
func portKeyIn(base expr.PayloadBase, off, n uint32, set string, invert bool) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
		&expr.Payload{DestRegister: r32 + 4, Base: base, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: reg1, SetName: set, Invert: invert},
	}
}

// ndType matches an ICMPv6 type 133-137 (RS, RA, NS, NA, Redirect).
func ndType() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpGte, Register: reg1, Data: []byte{icmp6RS}},
		&expr.Cmp{Op: expr.CmpOpLte, Register: reg1, Data: []byte{icmp6Redirect}},
	}
}

func payloadCmp(base expr.PayloadBase, off uint32, op expr.CmpOp, data ...byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: base, Offset: off, Len: uint32(len(data))},
		&expr.Cmp{Op: op, Register: reg1, Data: data},
	}
}

func payloadEq(base expr.PayloadBase, off uint32, data ...byte) []expr.Any {
	return payloadCmp(base, off, expr.CmpOpEq, data...)
}

func payloadNeq(base expr.PayloadBase, off uint32, data ...byte) []expr.Any {
	return payloadCmp(base, off, expr.CmpOpNeq, data...)
}

func metaEq(key expr.MetaKey, data ...byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: reg1}, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: data}}
}

// addGuard queues the guard table's sets, chains and rules (tagged for
// Check) on c, without flushing, and records the sets in sets. Every chain
// is declared before any rule, since rules jump between them.
func addGuard(c *nftables.Conn, t *nftables.Table, sets map[string]*nftables.Set) error {
	for _, s := range guardSets(t) {
		if err := c.AddSet(s, nil); err != nil {
			return err
		}
		sets[s.Name] = s
	}
	tcs := tagged(guardChains(t))
	for _, ch := range tcs {
		c.AddChain(ch.c)
	}
	for _, ch := range tcs {
		for i, r := range ch.rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch.c, Exprs: r, UserData: ch.tags[i]})
		}
	}
	return nil
}

// Change is a set of element updates sent as one batch: removals first,
// so a guard can be replaced by an updated one.
type Change struct {
	RemovePorts  []Port
	RemoveGuards []Guard
	AddGuards    []Guard
}

func (c Change) String() string {
	var s []string
	if len(c.RemovePorts) > 0 {
		s = append(s, portsOp("unpublish", c.RemovePorts))
	}
	for _, g := range []struct {
		op string
		gs []Guard
	}{{"remove guards", c.RemoveGuards}, {"add guards", c.AddGuards}} {
		switch {
		case len(g.gs) > 4:
			s = append(s, fmt.Sprintf("%s of %d ports %v...", g.op, len(g.gs), g.gs[:4]))
		case len(g.gs) > 0:
			s = append(s, fmt.Sprintf("%s %v", g.op, g.gs))
		}
	}
	return strings.Join(s, ", ")
}

// Apply sends the change as one atomic batch, its elements grouped in one
// message per set (see bySet). A change that only removes ignores what is
// already gone, as RemovePorts does. An empty change sends nothing.
func (f *Firewall) Apply(ctx context.Context, c Change) error {
	if len(c.RemovePorts)+len(c.RemoveGuards)+len(c.AddGuards) == 0 {
		return nil
	}
	all := func(b batch) {
		grouped(b.del, func(op func(string, ...nftables.SetElement)) {
			bySet(c.RemovePorts, op)
			for _, g := range c.RemoveGuards {
				g.elements(op)
			}
		})
		grouped(b.add, func(op func(string, ...nftables.SetElement)) {
			for _, g := range c.AddGuards {
				g.elements(op)
			}
		})
	}
	if len(c.AddGuards) > 0 {
		return f.run(ctx, c.String(), all)
	}
	var each []func(b batch)
	for _, p := range c.RemovePorts {
		each = append(each, func(b batch) { p.element(b.del) })
	}
	for _, g := range c.RemoveGuards {
		g.elements(func(set string, els ...nftables.SetElement) {
			each = append(each, func(b batch) { b.del(set, els...) })
		})
	}
	return f.runIgnoringMissing(ctx, c.String(), all, each)
}

// grouped collects what fn applies and passes it on to op in one call per
// set, at most maxSetElems elements each, sets in the order first seen.
func grouped(op func(string, ...nftables.SetElement), fn func(op func(string, ...nftables.SetElement))) {
	sets := map[string][]nftables.SetElement{}
	var order []string
	fn(func(set string, els ...nftables.SetElement) {
		if _, ok := sets[set]; !ok {
			order = append(order, set)
		}
		sets[set] = append(sets[set], els...)
	})
	for _, set := range order {
		for els := sets[set]; len(els) > 0; {
			n := min(len(els), maxSetElems)
			op(set, els[:n]...)
			els = els[n:]
		}
	}
}

func (g Guard) String() string {
	if g.AllowSpoofing {
		return g.Port + " (RA guard)"
	}
	return fmt.Sprintf("%s %s %v %v", g.Port, g.MAC, g.IPv4, g.IPv6)
}

// elementsOf picks, from the guard sets' elements, those keyed by one of
// the ports (every guard key starts with the 16-byte port name).
func elementsOf(sets map[string][]nftables.SetElement, ports []string) map[string][]nftables.SetElement {
	gone := map[string]bool{}
	for _, p := range ports {
		gone[string(ifname(p))] = true
	}
	out := map[string][]nftables.SetElement{}
	for set, els := range sets {
		for _, el := range els {
			if len(el.Key) >= 16 && gone[string(el.Key[:16])] {
				out[set] = append(out[set], nftables.SetElement{Key: el.Key})
			}
		}
	}
	return out
}

// GuardPorts lists the ports that have guard elements, for garbage
// collection (elements of ports whose device is gone).
func (f *Firewall) GuardPorts(ctx context.Context) (_ []string, err error) {
	defer f.use(ctx)(&err)
	els, err := f.c.GetSetElements(f.sets[setEndpoints])
	if err != nil {
		return nil, err
	}
	var out []string
	for _, el := range els {
		out = append(out, strings.TrimRight(string(el.Key), "\x00"))
	}
	return out, nil
}

// RemoveGuardPorts removes every guard element of the ports, whatever
// addresses they hold, in one batch. Elements already gone do not count.
func (f *Firewall) RemoveGuardPorts(ctx context.Context, ports ...string) error {
	if len(ports) == 0 {
		return nil
	}
	have, err := f.guardElements(ctx)
	if err != nil {
		return err
	}
	dels := elementsOf(have, ports)
	var each []func(b batch)
	for set, els := range dels {
		for _, el := range els {
			each = append(each, func(b batch) { b.del(set, el) })
		}
	}
	all := func(b batch) {
		grouped(b.del, func(op func(string, ...nftables.SetElement)) {
			for set, els := range dels {
				op(set, els...)
			}
		})
	}
	return f.runIgnoringMissing(ctx, fmt.Sprintf("remove guards of %d ports", len(ports)), all, each)
}

// guardElements reads the elements of every guard set.
func (f *Firewall) guardElements(ctx context.Context) (_ map[string][]nftables.SetElement, err error) {
	defer f.use(ctx)(&err)
	have := map[string][]nftables.SetElement{}
	for _, s := range guardSets(f.bt) {
		els, err := f.c.GetSetElements(f.sets[s.Name])
		if err != nil {
			return nil, err
		}
		have[s.Name] = els
	}
	return have, nil
}
