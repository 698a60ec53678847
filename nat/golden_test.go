package nat

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/nlbridge/bridge/internal/testenv"
)

// The firewall is the security boundary, so what it declares is checked in:
// testdata/table.nft is the ruleset as nft(8) prints it from the kernel
// (live test), testdata/table.exprs the same declarations rendered from the
// code's expressions (unit test, no root). Any rule change shows in review
// as a diff of both; go test -update rewrites them.

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := "testdata/" + name
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update creates it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from what the code makes (go test -update rewrites it; review the diff):\n%s", path, got)
	}
}

func TestGoldenDeclarations(t *testing.T) {
	inet := &nftables.Table{Name: DefaultTable, Family: nftables.TableFamilyINet}
	br := &nftables.Table{Name: DefaultTable, Family: nftables.TableFamilyBridge}
	var b strings.Builder
	render(&b, "inet", sets(inet), chains(inet))
	render(&b, "bridge", guardSets(br), guardChains(br))
	golden(t, "table.exprs", b.String())
}

var handles = regexp.MustCompile(` # handle \d+`)

func TestLiveGoldenRuleset(t *testing.T) {
	ns := testenv.NetNS(t, "golden")
	f, err := Open(ns.FD(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Rebuild(context.Background(), nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	out := testenv.Nft(t, ns, "list", "ruleset")
	golden(t, "table.nft", handles.ReplaceAllString(out, ""))
}

// render writes sets and chains one line each, rules as their expressions.
func render(b *strings.Builder, family string, ss []*nftables.Set, cs []chain) {
	fmt.Fprintf(b, "table %s\n", family)
	for _, s := range ss {
		kind := "set"
		if s.IsMap {
			kind = "map"
		}
		fmt.Fprintf(b, "  %s %s: %s", kind, s.Name, s.KeyType.Name)
		if s.IsMap {
			fmt.Fprintf(b, " : %s", s.DataType.Name)
		}
		b.WriteString("\n")
	}
	for _, c := range cs {
		fmt.Fprintf(b, "  chain %s", c.c.Name)
		if c.c.Hooknum != nil {
			fmt.Fprintf(b, " (%s hook %d priority %d policy %d)", c.c.Type, *c.c.Hooknum, *c.c.Priority, *c.c.Policy)
		}
		b.WriteString("\n")
		for _, r := range c.rules {
			parts := make([]string, len(r))
			for i, e := range r {
				parts[i] = exprString(e)
			}
			fmt.Fprintf(b, "    %s\n", strings.Join(parts, "; "))
		}
	}
}

func exprString(e expr.Any) string {
	switch e := e.(type) {
	case *expr.Meta:
		k := map[expr.MetaKey]string{expr.MetaKeyPROTOCOL: "protocol", expr.MetaKeyIIFNAME: "iifname",
			expr.MetaKeyOIFNAME: "oifname", expr.MetaKeyNFPROTO: "nfproto", expr.MetaKeyL4PROTO: "l4proto",
			expr.MetaKeyIIF: "iif"}[e.Key]
		return fmt.Sprintf("r%d = meta %s", e.Register, k)
	case *expr.Ct:
		return fmt.Sprintf("r%d = ct %s", e.Register, map[expr.CtKey]string{expr.CtKeySTATE: "state", expr.CtKeySTATUS: "status"}[e.Key])
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
		return fmt.Sprintf("r%d %s %s", e.Register, map[expr.CmpOp]string{expr.CmpOpEq: "==", expr.CmpOpNeq: "!=",
			expr.CmpOpLt: "<", expr.CmpOpLte: "<=", expr.CmpOpGt: ">", expr.CmpOpGte: ">="}[e.Op], hex.EncodeToString(e.Data))
	case *expr.Payload:
		return fmt.Sprintf("r%d = payload %s[%d:%d]", e.DestRegister, map[expr.PayloadBase]string{expr.PayloadBaseLLHeader: "ll",
			expr.PayloadBaseNetworkHeader: "nh", expr.PayloadBaseTransportHeader: "th"}[e.Base], e.Offset, e.Offset+e.Len)
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
			expr.VerdictJump: "jump", expr.VerdictGoto: "goto"}[e.Kind]
		return strings.TrimSpace(v + " " + e.Chain)
	}
	return strings.TrimPrefix(fmt.Sprintf("%T%+v", e, e), "*expr.")
}
