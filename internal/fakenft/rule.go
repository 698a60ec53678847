package fakenft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// ruleString prints a rule's expressions as nft(8) lists them, for the
// forms nlbridge's tables use: loads into registers and what consumes
// them (comparisons, set lookups, map lookups feeding NAT), verdicts. An
// expression it has no form for is printed in the register form
// (ExprString), so the output never hides one.
func ruleString(family nftables.TableFamily, exprs []expr.Any) string {
	r := &render{family: family, regs: map[uint32]*load{}}
	for i, e := range exprs {
		r.next = nil
		if i+1 < len(exprs) {
			r.next = exprs[i+1]
		}
		r.add(e)
	}
	var out []string
	for i, p := range r.parts {
		if p.nfproto && r.impliesFamily(i) || p.l4icmp && r.icmpTypeAfter(i) || p.ether6 && r.icmpTypeAfter(i) {
			continue // nft leaves out dependencies that a later match implies
		}
		out = append(out, p.text)
	}
	return strings.Join(out, " ")
}

// load is what a register holds.
type load struct {
	name string // as nft names the field: "meta l4proto", "ip daddr", "@nh,48,8"
	kind string // how to print a value of it: "nfproto", "l4proto", "ether", "ifname", "addr", "port", "ctstate", "ctstatus", "fibtype", "ifindex", "icmpv6", "mac", "raw"
	size int    // bytes
	mask []byte // from a bitwise
	slot uint32 // first 32-bit register
}

type part struct {
	text    string
	nfproto bool // "meta nfproto ipvX"
	l4icmp  bool // "meta l4proto ipv6-icmp"
	ether6  bool // "meta protocol ip6"
	family  bool // implies the network family (an ip/ip6 field, an icmp protocol)
	icmp6   bool // "icmpv6 type ..."
}

type render struct {
	family nftables.TableFamily
	regs   map[uint32]*load // by first 32-bit slot
	parts  []part
	netfam byte // the nfproto compared so far (inet): 2, 10 or 0
	l4     byte // the l4proto compared so far
	next   expr.Any
}

// slot maps a register to its first 32-bit register (NFT_REG_1..4 are
// 128 bits wide, over NFT_REG32_00..15 = 8..23).
func slot(reg uint32) uint32 {
	if reg >= 1 && reg <= 4 {
		return 8 + 4*(reg-1)
	}
	return reg
}

func (r *render) set(reg uint32, l *load) {
	l.slot = slot(reg)
	r.regs[l.slot] = l
}

func (r *render) add(e expr.Any) {
	switch e := e.(type) {
	case *expr.Meta:
		switch e.Key {
		case expr.MetaKeyNFPROTO:
			r.set(e.Register, &load{name: "meta nfproto", kind: "nfproto", size: 1})
		case expr.MetaKeyL4PROTO:
			r.set(e.Register, &load{name: "meta l4proto", kind: "l4proto", size: 1})
		case expr.MetaKeyPROTOCOL:
			r.set(e.Register, &load{name: "meta protocol", kind: "ether", size: 2})
		case expr.MetaKeyIIFNAME:
			r.set(e.Register, &load{name: "iifname", kind: "ifname", size: 16})
		case expr.MetaKeyOIFNAME:
			r.set(e.Register, &load{name: "oifname", kind: "ifname", size: 16})
		case expr.MetaKeyIIF:
			r.set(e.Register, &load{name: "iif", kind: "ifindex", size: 4})
		default:
			r.raw(e)
		}
	case *expr.Ct:
		switch e.Key {
		case expr.CtKeySTATE:
			r.set(e.Register, &load{name: "ct state", kind: "ctstate", size: 4})
		case expr.CtKeySTATUS:
			r.set(e.Register, &load{name: "ct status", kind: "ctstatus", size: 4})
		default:
			r.raw(e)
		}
	case *expr.Fib:
		switch {
		case e.FlagDADDR && e.ResultADDRTYPE:
			r.set(e.Register, &load{name: "fib daddr type", kind: "fibtype", size: 4})
		case e.FlagSADDR && e.ResultADDRTYPE:
			r.set(e.Register, &load{name: "fib saddr type", kind: "fibtype", size: 4})
		default:
			r.raw(e)
		}
	case *expr.Payload:
		r.set(e.DestRegister, r.payload(e))
	case *expr.Bitwise:
		src := r.regs[slot(e.SourceRegister)]
		if src == nil || !allZero(e.Xor) {
			r.raw(e)
			return
		}
		l := *src
		l.mask = e.Mask
		r.set(e.DestRegister, &l)
	case *expr.Cmp:
		r.cmp(e)
	case *expr.Lookup:
		key := r.key(e.SourceRegister)
		if key == "" {
			r.raw(e)
			return
		}
		if e.IsDestRegSet {
			r.set(e.DestRegister, &load{name: key + " map @" + e.SetName, kind: "raw", size: 16})
			return
		}
		op := ""
		if e.Invert {
			op = "!= "
		}
		r.parts = append(r.parts, part{text: key + " " + op + "@" + e.SetName})
	case *expr.NAT:
		kind := map[expr.NATType]string{expr.NATTypeSourceNAT: "snat", expr.NATTypeDestNAT: "dnat"}[e.Type]
		fam := map[uint32]string{2: "ip", 10: "ip6"}[e.Family]
		addr := r.regs[slot(e.RegAddrMin)]
		if kind == "" || fam == "" || addr == nil {
			r.raw(e)
			return
		}
		r.parts = append(r.parts, part{text: kind + " " + fam + " to " + addr.name})
	case *expr.Masq:
		if *e != (expr.Masq{}) {
			r.raw(e)
			return
		}
		r.parts = append(r.parts, part{text: "masquerade"})
	case *expr.Verdict:
		r.parts = append(r.parts, part{text: ExprString(e)})
	case *expr.Counter:
		r.parts = append(r.parts, part{text: "counter"})
	default:
		r.raw(e)
	}
}

func (r *render) raw(e expr.Any) { r.parts = append(r.parts, part{text: "[" + ExprString(e) + "]"}) }

// payload names a header field as nft does: known fields of the
// network (in an inet table, once the family is known) and transport
// headers, else @base,bitoffset,bitlength.
func (r *render) payload(e *expr.Payload) *load {
	off, n := e.Offset, e.Len
	raw := &load{kind: "raw", size: int(n)}
	switch e.Base {
	case expr.PayloadBaseLLHeader:
		switch {
		case off == 6 && n == 6:
			return &load{name: "ether saddr", kind: "mac", size: 6}
		case off == 12 && n == 2:
			return &load{name: "ether type", kind: "ether", size: 2}
		}
		raw.name = fmt.Sprintf("@ll,%d,%d", off*8, n*8)
	case expr.PayloadBaseNetworkHeader:
		if r.family == nftables.TableFamilyINet {
			switch {
			case r.netfam == 2 && n == 4 && (off == 12 || off == 16):
				return &load{name: map[uint32]string{12: "ip saddr", 16: "ip daddr"}[off], kind: "addr", size: 4}
			case r.netfam == 10 && n == 16 && (off == 8 || off == 24):
				return &load{name: map[uint32]string{8: "ip6 saddr", 24: "ip6 daddr"}[off], kind: "addr", size: 16}
			}
		}
		raw.name = fmt.Sprintf("@nh,%d,%d", off*8, n*8)
	case expr.PayloadBaseTransportHeader:
		switch {
		case off == 0 && n == 1 && r.l4 == 58:
			return &load{name: "icmpv6 type", kind: "icmpv6", size: 1}
		case (off == 0 || off == 2) && n == 2:
			proto := map[byte]string{6: "tcp", 17: "udp"}[r.l4]
			if proto == "" {
				proto = "th"
			}
			return &load{name: proto + map[uint32]string{0: " sport", 2: " dport"}[off], kind: "port", size: 2}
		}
		raw.name = fmt.Sprintf("@th,%d,%d", off*8, n*8)
	}
	return raw
}

// key is the (concatenated) key a lookup reads from reg on.
func (r *render) key(reg uint32) string {
	var names []string
	for s := slot(reg); ; {
		l := r.regs[s]
		if l == nil {
			break
		}
		names = append(names, l.name)
		s += uint32((l.size + 3) / 4)
	}
	return strings.Join(names, " . ")
}

func (r *render) cmp(e *expr.Cmp) {
	l := r.regs[slot(e.Register)]
	if l == nil {
		r.raw(e)
		return
	}
	// A range: >= a followed by <= b on the same register.
	if next, ok := r.next.(*expr.Cmp); ok && e.Op == expr.CmpOpGte && next.Op == expr.CmpOpLte && next.Register == e.Register {
		num := *l
		if num.kind == "icmpv6" {
			num.kind = "number" // nft prints type ranges numerically
		}
		r.parts = append(r.parts, part{text: l.name + " " + cmpValue(&num, e.Data) + "-" + cmpValue(&num, next.Data), icmp6: l.kind == "icmpv6"})
		r.regs[slot(e.Register)] = &load{name: l.name, kind: "consumed", size: l.size}
		return
	}
	if l.kind == "consumed" {
		return // the second half of a range
	}
	op := map[expr.CmpOp]string{expr.CmpOpEq: "", expr.CmpOpNeq: "!= ", expr.CmpOpLt: "< ",
		expr.CmpOpLte: "<= ", expr.CmpOpGt: "> ", expr.CmpOpGte: ">= "}[e.Op]
	p := part{icmp6: l.kind == "icmpv6"}
	switch {
	case (l.kind == "ctstate" || l.kind == "ctstatus") && l.mask != nil && e.Op == expr.CmpOpNeq && allZero(e.Data):
		p.text = l.name + " " + ctBits(l.kind, binary.LittleEndian.Uint32(l.mask))
	case l.kind == "addr" && l.mask != nil && e.Op == expr.CmpOpEq:
		p.text = l.name + " " + prefix(e.Data, l.mask)
	default:
		p.text = l.name + " " + op + cmpValue(l, e.Data)
	}
	if e.Op == expr.CmpOpEq && len(e.Data) == 1 {
		switch l.kind {
		case "nfproto":
			r.netfam = e.Data[0]
			p.nfproto = true
		case "l4proto":
			r.l4 = e.Data[0]
			p.l4icmp = e.Data[0] == 58
			p.family = e.Data[0] == 1 || e.Data[0] == 58
			if e.Data[0] == 6 || e.Data[0] == 17 {
				p.l4icmp = true // elided before "tcp dport"/"udp dport" too
			}
		}
	}
	if l.kind == "ether" && e.Op == expr.CmpOpEq && bytes.Equal(e.Data, []byte{0x86, 0xdd}) && l.name == "meta protocol" {
		p.ether6 = true
	}
	if l.kind == "addr" {
		p.family = true
	}
	r.parts = append(r.parts, p)
}

// impliesFamily: a later part needs the network family anyway.
func (r *render) impliesFamily(i int) bool {
	for _, p := range r.parts[i+1:] {
		if p.family || strings.HasPrefix(p.text, "ip ") || strings.HasPrefix(p.text, "ip6 ") || strings.Contains(p.text, "ip daddr .") || strings.Contains(p.text, "ip6 daddr .") {
			return true
		}
	}
	return false
}

// icmpTypeAfter: a later part matches an icmpv6 type, or a tcp/udp port,
// which implies the protocol.
func (r *render) icmpTypeAfter(i int) bool {
	for _, p := range r.parts[i+1:] {
		if p.icmp6 || strings.HasPrefix(p.text, "tcp ") || strings.HasPrefix(p.text, "udp ") {
			return true
		}
	}
	return false
}

// cmpValue prints a compared value by the field's kind.
func cmpValue(l *load, b []byte) string {
	switch l.kind {
	case "nfproto":
		if name, ok := map[byte]string{2: "ipv4", 10: "ipv6"}[b[0]]; ok && len(b) == 1 {
			return name
		}
	case "l4proto":
		if name, ok := map[byte]string{1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}[b[0]]; ok && len(b) == 1 {
			return name
		}
	case "ether":
		if len(b) == 2 {
			if name, ok := map[uint16]string{0x0800: "ip", 0x86dd: "ip6", 0x0806: "arp"}[binary.BigEndian.Uint16(b)]; ok {
				return name
			}
		}
	case "ifname":
		return fmt.Sprintf("%q", string(bytes.TrimRight(b, "\x00")))
	case "addr":
		if a, ok := netip.AddrFromSlice(b); ok {
			return a.String()
		}
	case "port":
		if len(b) == 2 {
			return fmt.Sprint(binary.BigEndian.Uint16(b))
		}
	case "ifindex": // only 0 (no device) is ever compared; nft names others
		if len(b) == 4 {
			return fmt.Sprint(binary.LittleEndian.Uint32(b))
		}
	case "fibtype":
		if len(b) == 4 && binary.LittleEndian.Uint32(b) == 2 { // RTN_LOCAL
			return "local"
		}
	case "icmpv6":
		if name, ok := map[byte]string{133: "nd-router-solicit", 134: "nd-router-advert", 135: "nd-neighbor-solicit",
			136: "nd-neighbor-advert", 137: "nd-redirect", 143: "mld2-listener-report"}[b[0]]; ok && len(b) == 1 {
			return name
		}
		if len(b) == 1 {
			return fmt.Sprint(b[0])
		}
	case "mac":
		return net.HardwareAddr(b).String()
	case "number":
		return new(big.Int).SetBytes(b).String()
	}
	return "0x" + new(big.Int).SetBytes(b).Text(16)
}

// prefix prints addr/len for a value under a leading-ones mask.
func prefix(v, mask []byte) string {
	a, ok := netip.AddrFromSlice(v)
	if !ok {
		return "0x" + new(big.Int).SetBytes(v).Text(16)
	}
	bits := 0
	for _, m := range mask {
		for i := 7; i >= 0 && m&(1<<i) != 0; i-- {
			bits++
		}
		if m != 0xff {
			break
		}
	}
	return netip.PrefixFrom(a, bits).String()
}

func ctBits(kind string, mask uint32) string {
	names := map[uint32]string{1: "invalid", 2: "established", 4: "related", 8: "new", 64: "untracked"}
	if kind == "ctstatus" {
		names = map[uint32]string{1: "expected", 2: "seen-reply", 4: "assured", 8: "confirmed", 16: "snat", 32: "dnat", 512: "dying"}
	}
	var out []string
	for bit := uint32(1); bit != 0; bit <<= 1 {
		if mask&bit != 0 {
			name, ok := names[bit]
			if !ok {
				name = fmt.Sprintf("0x%x", bit)
			}
			out = append(out, name)
		}
	}
	return strings.Join(out, ",")
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// priority names a chain priority as nft does for the family and hook.
func priority(family nftables.TableFamily, hook nftables.ChainHook, prio int32) string {
	if family == nftables.TableFamilyBridge {
		if hook == 0 && prio == -300 {
			return "dstnat"
		}
		return fmt.Sprint(prio)
	}
	switch {
	case prio == -300:
		return "raw"
	case prio == -100 && hook == 0:
		return "dstnat"
	case prio == 0:
		return "filter"
	case prio == 100 && hook == 4:
		return "srcnat"
	}
	return fmt.Sprint(prio)
}
