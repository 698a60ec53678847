package fakenft_test

import (
	"context"
	"os"
	"regexp"
	"testing"

	"github.com/nlbridge/bridge/bridgetest"
	"github.com/nlbridge/bridge/nat"
)

// The fake prints the firewall's tables exactly as nft(8) lists them from
// the kernel: nat/testdata/table.nft is `nft list ruleset` of a live
// namespace after the same Rebuild (nat's live golden test).
func TestDumpIsNftsListing(t *testing.T) {
	k := bridgetest.New()
	ns, err := k.System().OpenNS("")
	if err != nil {
		t.Fatal(err)
	}
	fw, err := nat.New("", ns.NFTables)
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	if err := fw.Rebuild(context.Background(), nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("../../nat/testdata/table.nft")
	if err != nil {
		t.Fatal(err)
	}
	dump := k.DumpNS("")
	got := regexp.MustCompile(`(?s)^.*?(table inet)`).ReplaceAllString(dump, "$1")
	got = regexp.MustCompile(`(?m)^  `).ReplaceAllString(got, "")
	if got != string(want) {
		t.Errorf("the fake's ruleset differs from nft's:\n%s", diff(got, string(want)))
	}
}
