package fakenft

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
)

// Dump prints the ruleset as `nft list ruleset` does (tables, sets and
// maps with their elements, chains with their hooks and rules), each line
// after indent. Rules are in nft's syntax for the expressions nlbridge
// uses; any other expression is printed in brackets in register form. It
// reads the state through google/nftables' own decoders, as the driver
// does.
func (s *State) Dump(indent string) string {
	c, err := nftables.New(nftables.WithTestDial(s.answer))
	if err != nil {
		return indent + "# " + err.Error() + "\n"
	}
	var b strings.Builder
	p := func(depth int, format string, args ...any) {
		b.WriteString(indent + strings.Repeat("\t", depth))
		fmt.Fprintf(&b, format, args...)
		b.WriteString("\n")
	}
	blocks := 0 // of the table so far: a blank line between blocks
	block := func() {
		if blocks > 0 {
			b.WriteString("\n")
		}
		blocks++
	}
	tables, err := c.ListTables()
	if err != nil {
		p(0, "# list tables: %v", err)
	}
	for _, t := range tables {
		p(0, "table %s %s {", family(t.Family), t.Name)
		blocks = 0
		sets, err := c.GetSets(t)
		if err != nil {
			p(1, "# sets: %v", err)
		}
		for _, st := range sets {
			kind, typ := "set", st.KeyType.Name
			if st.IsMap {
				kind, typ = "map", typ+" : "+st.DataType.Name
			}
			block()
			p(1, "%s %s {", kind, st.Name)
			p(2, "type %s", typ)
			if st.Interval {
				p(2, "flags interval")
			}
			els, err := c.GetSetElements(st)
			if err != nil {
				p(2, "# elements: %v", err)
			}
			if len(els) > 0 {
				var list strings.Builder
				for i, e := range els {
					if i > 0 {
						list.WriteString(delim(st, i, indent))
					}
					list.WriteString(element(st, e))
				}
				p(2, "elements = { %s }", list.String())
			}
			p(1, "}")
		}
		chains, err := c.ListChainsOfTableFamily(t.Family)
		if err != nil {
			p(1, "# chains: %v", err)
		}
		for _, ch := range chains {
			if ch.Table.Name != t.Name {
				continue
			}
			block()
			p(1, "chain %s {", ch.Name)
			if ch.Hooknum != nil {
				policy := "accept"
				if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
					policy = "drop"
				}
				prio := int32(0)
				if ch.Priority != nil {
					prio = int32(*ch.Priority)
				}
				p(2, "type %s hook %s priority %s; policy %s;", ch.Type, hook(*ch.Hooknum), priority(t.Family, *ch.Hooknum, prio), policy)
			}
			rules, err := c.GetRules(t, ch)
			if err != nil {
				p(2, "# rules: %v", err)
			}
			for _, r := range rules {
				line := ruleString(t.Family, r.Exprs)
				if comment, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
					line += fmt.Sprintf(" comment %q", comment)
				}
				p(2, "%s", line)
			}
			p(1, "}")
		}
		p(0, "}")
	}
	return b.String()
}

// answer serves google/nftables' requests from the state, one answer
// per receive.
func (s *State) answer(reqs []netlink.Message) ([]netlink.Message, error) {
	if reqs == nil {
		if len(s.queue) == 0 {
			return nil, nil
		}
		m := s.queue[0]
		s.queue = s.queue[1:]
		return []netlink.Message{m}, nil
	}
	for _, m := range reqs {
		parts, errno := s.Get(m)
		if errno != 0 {
			s.queue = append(s.queue, netlink.Message{Header: netlink.Header{Type: netlink.Error, Sequence: m.Header.Sequence, PID: m.Header.PID},
				Data: nlenc.Int32Bytes(-int32(errno))})
			continue
		}
		for _, p := range parts {
			p.Header.Flags |= netlink.Multi
			p.Header.Sequence, p.Header.PID = m.Header.Sequence, m.Header.PID
			s.queue = append(s.queue, p)
		}
		s.queue = append(s.queue, netlink.Message{Header: netlink.Header{Type: netlink.Done, Flags: netlink.Multi,
			Sequence: m.Header.Sequence, PID: m.Header.PID}, Data: make([]byte, 4)})
	}
	return s.answer(nil)
}

func family(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyBridge:
		return "bridge"
	}
	return fmt.Sprintf("family%d", f)
}

func hook(h nftables.ChainHook) string {
	names := []string{"prerouting", "input", "forward", "output", "postrouting"}
	if int(h) < len(names) {
		return names[h]
	}
	return fmt.Sprint(h)
}

// delim goes before element i as nft puts it: addresses two to a line,
// numbers on one line, anything else (names, concatenations) one per line.
func delim(st *nftables.Set, i int, indent string) string {
	newline := ",\n" + indent + "\t\t\t     "
	switch st.KeyType.Name {
	case nftables.TypeIPAddr.Name, nftables.TypeIP6Addr.Name:
		if i%2 == 0 {
			return newline
		}
		return ", "
	case nftables.TypeInetService.Name, nftables.TypeInetProto.Name:
		return ", "
	}
	return newline
}

// element prints an element by the set's key and data types.
func element(st *nftables.Set, e nftables.SetElement) string {
	s := value(st.KeyType, e.Key)
	if len(e.KeyEnd) > 0 {
		s += "-" + value(st.KeyType, e.KeyEnd)
	}
	if st.IsMap {
		if e.VerdictData != nil {
			s += " : " + ExprString(e.VerdictData)
		} else {
			s += " : " + value(st.DataType, e.Val)
		}
	}
	return s
}

// value prints b as the (possibly concatenated) type: each field padded
// to 4 bytes in a concatenation.
func value(t nftables.SetDatatype, b []byte) string {
	types := nftables.ConcatSetTypeElements(t)
	if len(types) == 1 {
		return field(types[0], b)
	}
	var parts []string
	for _, ft := range types {
		n := int((ft.Bytes + 3) / 4 * 4)
		if n > len(b) || ft.Bytes == 0 {
			return hex.EncodeToString(b)
		}
		parts = append(parts, field(ft, b[:ft.Bytes]))
		b = b[n:]
	}
	return strings.Join(parts, " . ")
}

func field(t nftables.SetDatatype, b []byte) string {
	switch t.Name {
	case nftables.TypeIFName.Name:
		return fmt.Sprintf("%q", string(bytes.TrimRight(b, "\x00")))
	case nftables.TypeIPAddr.Name, nftables.TypeIP6Addr.Name:
		if a, ok := netip.AddrFromSlice(b); ok {
			return a.String()
		}
	case nftables.TypeEtherAddr.Name:
		return net.HardwareAddr(b).String()
	case nftables.TypeInetProto.Name:
		if len(b) >= 1 {
			if name, ok := map[byte]string{1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}[b[0]]; ok {
				return name
			}
			return fmt.Sprint(b[0])
		}
	case nftables.TypeInetService.Name:
		if len(b) >= 2 {
			return fmt.Sprint(binary.BigEndian.Uint16(b))
		}
	}
	return hex.EncodeToString(b)
}

// ExprString prints one expression in the register form of nat's golden
// declarations (nat/testdata/table.exprs).
func ExprString(e expr.Any) string {
	switch e := e.(type) {
	case *expr.Meta:
		k := map[expr.MetaKey]string{expr.MetaKeyPROTOCOL: "protocol", expr.MetaKeyIIFNAME: "iifname",
			expr.MetaKeyOIFNAME: "oifname", expr.MetaKeyNFPROTO: "nfproto", expr.MetaKeyL4PROTO: "l4proto",
			expr.MetaKeyIIF: "iif"}[e.Key]
		if k == "" {
			k = fmt.Sprint("key", e.Key)
		}
		return fmt.Sprintf("r%d = meta %s", e.Register, k)
	case *expr.Ct:
		k := map[expr.CtKey]string{expr.CtKeySTATE: "state", expr.CtKeySTATUS: "status"}[e.Key]
		if k == "" {
			k = fmt.Sprint("key", e.Key)
		}
		return fmt.Sprintf("r%d = ct %s", e.Register, k)
	case *expr.Fib:
		if e.FlagDADDR && e.ResultADDRTYPE {
			return fmt.Sprintf("r%d = fib daddr type", e.Register)
		}
		if e.FlagSADDR && e.ResultADDRTYPE {
			return fmt.Sprintf("r%d = fib saddr type", e.Register)
		}
	case *expr.Masq:
		if *e == (expr.Masq{}) {
			return "masquerade"
		}
	case *expr.NAT:
		kind := map[expr.NATType]string{expr.NATTypeSourceNAT: "snat", expr.NATTypeDestNAT: "dnat"}[e.Type]
		s := fmt.Sprintf("%s family %d addr r%d", kind, e.Family, e.RegAddrMin)
		if e.RegProtoMin != 0 {
			s += fmt.Sprintf(" port r%d", e.RegProtoMin)
		}
		return s
	case *expr.Cmp:
		op := map[expr.CmpOp]string{expr.CmpOpEq: "==", expr.CmpOpNeq: "!=", expr.CmpOpLt: "<",
			expr.CmpOpLte: "<=", expr.CmpOpGt: ">", expr.CmpOpGte: ">="}[e.Op]
		return fmt.Sprintf("r%d %s %s", e.Register, op, hex.EncodeToString(e.Data))
	case *expr.Payload:
		base := map[expr.PayloadBase]string{expr.PayloadBaseLLHeader: "ll",
			expr.PayloadBaseNetworkHeader: "nh", expr.PayloadBaseTransportHeader: "th"}[e.Base]
		return fmt.Sprintf("r%d = payload %s[%d:%d]", e.DestRegister, base, e.Offset, e.Offset+e.Len)
	case *expr.Lookup:
		s := fmt.Sprintf("r%d in @%s", e.SourceRegister, e.SetName)
		if e.Invert {
			s = fmt.Sprintf("r%d not in @%s", e.SourceRegister, e.SetName)
		}
		if e.IsDestRegSet {
			s += fmt.Sprintf(" -> r%d", e.DestRegister)
		}
		return s
	case *expr.Bitwise:
		return fmt.Sprintf("r%d = r%d & %x ^ %x", e.DestRegister, e.SourceRegister, e.Mask, e.Xor)
	case *expr.Verdict:
		v := map[expr.VerdictKind]string{expr.VerdictAccept: "accept", expr.VerdictDrop: "drop", expr.VerdictReturn: "return",
			expr.VerdictJump: "jump", expr.VerdictGoto: "goto", expr.VerdictContinue: "continue"}[e.Kind]
		return strings.TrimSpace(v + " " + e.Chain)
	case *expr.Counter:
		return "counter"
	}
	return strings.TrimPrefix(fmt.Sprintf("%T%+v", e, e), "*expr.")
}
