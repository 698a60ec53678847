package nat_test

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nlbridge/bridge/internal/testenv"
	"github.com/nlbridge/bridge/nat"
)

func TestLiveTableAndElements(t *testing.T) {
	ns := testenv.NetNS(t, "nat")
	f, err := nat.Open(ns.FD(), "nlbt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.AddNetwork(nat.Network{Bridge: "br0"}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(ns.Path()), "nft", "--debug=netlink", "list", "set", "inet", "nlbt", "bridges").CombinedOutput()
	t.Logf("%s %v", out, err)
}
