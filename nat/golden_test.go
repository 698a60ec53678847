package nat

import (
	"context"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/nlbridge/bridge/internal/fakenft"
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
				parts[i] = fakenft.ExprString(e)
			}
			fmt.Fprintf(b, "    %s\n", strings.Join(parts, "; "))
		}
	}
}
