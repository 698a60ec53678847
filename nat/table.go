package nat

import (
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Set names. Per-network state is keyed by bridge name, so every set is
// an exact-match hash: adding a network or a port is a few element
// updates whatever is already there.
const (
	setBridges = "bridges"    // ifname: every bridge of ours
	setSame    = "samebridge" // ifname . ifname: (br . br) per bridge
)

// famSets are the per-family sets, named <base>4 / <base>6.
const (
	setInternal = "internal" // ifname: no forwarding in or out
	setProtect  = "protect"  // ifname: NAT mode, routed access from outside dropped
	setRouted   = "routed"   // ifname: routed mode, only published ports and ICMP in
	setMasq     = "masq"     // ifname: masquerade what enters from these bridges
	mapSNAT     = "snat"     // ifname : addr, SNAT what enters from these bridges
	mapPorts    = "ports"    // addr . proto . port : addr . port, DNAT per host address
	mapPortsAny = "portsany" // proto . port : addr . port, DNAT on any host address
	setRPorts   = "rports"   // addr . proto . port: published ports in routed mode
)

func fam(base string, v6 bool) string {
	if v6 {
		return base + "6"
	}
	return base + "4"
}

// sets declares every set and map of the table.
func sets(t *nftables.Table) []*nftables.Set {
	concat := func(ts ...nftables.SetDatatype) nftables.SetDatatype {
		c, err := nftables.ConcatSetType(ts...)
		if err != nil {
			panic(err) // fixed, valid type lists
		}
		return c
	}
	host := binaryutil.NativeEndian // strings are host order; nft(8) prints them right then
	ss := []*nftables.Set{
		{Table: t, Name: setBridges, KeyType: nftables.TypeIFName, KeyByteOrder: host},
		{Table: t, Name: setSame, KeyType: concat(nftables.TypeIFName, nftables.TypeIFName), Concatenation: true},
	}
	for _, v6 := range []bool{false, true} {
		addr := nftables.TypeIPAddr
		if v6 {
			addr = nftables.TypeIP6Addr
		}
		for _, name := range []string{setInternal, setProtect, setRouted, setMasq} {
			ss = append(ss, &nftables.Set{Table: t, Name: fam(name, v6), KeyType: nftables.TypeIFName, KeyByteOrder: host})
		}
		ss = append(ss,
			&nftables.Set{Table: t, Name: fam(mapSNAT, v6), IsMap: true, KeyType: nftables.TypeIFName, KeyByteOrder: host, DataType: addr},
			&nftables.Set{Table: t, Name: fam(mapPorts, v6), IsMap: true, Concatenation: true,
				KeyType:  concat(addr, nftables.TypeInetProto, nftables.TypeInetService),
				DataType: concat(addr, nftables.TypeInetService)},
			&nftables.Set{Table: t, Name: fam(mapPortsAny, v6), IsMap: true, Concatenation: true,
				KeyType:  concat(nftables.TypeInetProto, nftables.TypeInetService),
				DataType: concat(addr, nftables.TypeInetService)},
			&nftables.Set{Table: t, Name: fam(setRPorts, v6), Concatenation: true,
				KeyType: concat(addr, nftables.TypeInetProto, nftables.TypeInetService)},
		)
	}
	return ss
}

// chain is a chain and its rules.
type chain struct {
	c     *nftables.Chain
	rules [][]expr.Any
}

// chains declares the chains and their rules.
func chains(t *nftables.Table) []chain {
	hook := func(name string, typ nftables.ChainType, h *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		accept := nftables.ChainPolicyAccept
		return &nftables.Chain{Table: t, Name: name, Type: typ, Hooknum: h, Priority: prio, Policy: &accept}
	}
	dnat := &nftables.Chain{Table: t, Name: "dnat"}
	var dnatRules, post, fwd [][]expr.Any
	fwd = append(fwd,
		cat(ctEstablished(), verdict(expr.VerdictAccept)),
		cat(ctDNAT(), verdict(expr.VerdictAccept)), // published ports, also across bridges
		cat(iifOifIn(setSame), verdict(expr.VerdictAccept)),
		cat(ifnameIn(expr.MetaKeyIIFNAME, setBridges), ifnameIn(expr.MetaKeyOIFNAME, setBridges), verdict(expr.VerdictDrop)),
	)
	for _, v6 := range []bool{false, true} {
		p, icmp := byte(unix.NFPROTO_IPV4), byte(unix.IPPROTO_ICMP)
		if v6 {
			p, icmp = unix.NFPROTO_IPV6, unix.IPPROTO_ICMPV6
		}
		key, _ := addrProtoPort(v6)
		dnatRules = append(dnatRules,
			cat(nfproto(p), daddrLocal(), key, dnatFromMap(fam(mapPorts, v6), v6)),
			cat(nfproto(p), daddrLocal(), protoPort(r32), dnatFromMap(fam(mapPortsAny, v6), v6)),
		)
		// Hairpin: a published port reached from its own bridge goes back
		// out of it; masquerade so the reply returns through the host.
		// Routed, the packet has the bridge as input and output. With
		// br_netfilter, the kernel bridges it to the new destination
		// instead (its postrouting has no input device), possibly back
		// to the sandbox that sent it (the port's hairpin mode), which
		// would drop a packet from its own address; not from the host
		// itself, whose connections keep their source.
		post = append(post,
			cat(nfproto(p), ctDNAT(), iifOifIn(setSame), []expr.Any{&expr.Masq{}}),
			cat(nfproto(p), ctDNAT(), noIif(), ifnameIn(expr.MetaKeyOIFNAME, setBridges), saddrNotLocal(), []expr.Any{&expr.Masq{}}))
		if !v6 { // 127.0.0.1 -> published port (route_localnet on the bridge)
			off, n := addrOffset(false, false)
			post = append(post, cat(nfproto(p), ctDNAT(), ifnameIn(expr.MetaKeyOIFNAME, setBridges), []expr.Any{
				&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
				&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: []byte{255, 0, 0, 0}, Xor: make([]byte, 4)},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{127, 0, 0, 0}},
				&expr.Masq{}}))
		}
		post = append(post,
			cat(nfproto(p), iifOifIn(setSame), verdict(expr.VerdictReturn)),
			cat(nfproto(p), []expr.Any{
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
				&expr.Lookup{SourceRegister: reg1, SetName: fam(mapSNAT, v6), DestRegister: reg1, IsDestRegSet: true},
				&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(p), RegAddrMin: reg1}}),
			cat(nfproto(p), ifnameIn(expr.MetaKeyIIFNAME, fam(setMasq, v6)), []expr.Any{&expr.Masq{}}),
		)
		rkey, _ := addrProtoPort(v6)
		fwd = append(fwd,
			cat(nfproto(p), ifnameIn(expr.MetaKeyIIFNAME, fam(setInternal, v6)), verdict(expr.VerdictDrop)),
			cat(nfproto(p), ifnameIn(expr.MetaKeyOIFNAME, fam(setInternal, v6)), verdict(expr.VerdictDrop)),
			cat(nfproto(p), ifnameIn(expr.MetaKeyOIFNAME, fam(setRouted, v6)), rkey,
				[]expr.Any{&expr.Lookup{SourceRegister: reg1, SetName: fam(setRPorts, v6)}}, verdict(expr.VerdictAccept)),
			cat(nfproto(p), ifnameIn(expr.MetaKeyOIFNAME, fam(setRouted, v6)), []expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{icmp}}}, verdict(expr.VerdictAccept)),
			cat(nfproto(p), ifnameIn(expr.MetaKeyOIFNAME, fam(setRouted, v6)), verdict(expr.VerdictDrop)),
			cat(nfproto(p), ifnameIn(expr.MetaKeyOIFNAME, fam(setProtect, v6)), verdict(expr.VerdictDrop)),
		)
	}
	jump := [][]expr.Any{{&expr.Verdict{Kind: expr.VerdictJump, Chain: "dnat"}}}
	return []chain{
		{dnat, dnatRules},
		loopbackChain(t),
		{hook("prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest),
			append([][]expr.Any{noLoopbackDNAT()}, jump...)},
		{hook("output", nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest), jump},
		{hook("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource), post},
		{hook("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter), fwd},
	}
}
