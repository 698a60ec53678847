package main

import (
	"crypto/sha512"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/nlbridge/bridge/internal/testenv"
	"github.com/nlbridge/bridge/nsutil"
)

// cnitool runs cnitool v1.3.0 (libcni) inside host.
type cnitool struct {
	t         *testing.T
	host      *nsutil.NS
	dir, name string
	bin       string
	extraEnv  []string
}

func newCnitool(t *testing.T, host *nsutil.NS, dir, name string) *cnitool {
	c := &cnitool{t: t, host: host, dir: dir, name: name, bin: need(t, "cnitool")}
	// libcni caches results in /var/lib/cni; drop this network's entries.
	t.Cleanup(func() {
		m, _ := filepath.Glob("/var/lib/cni/results/" + name + "-*")
		for _, f := range m {
			os.Remove(f)
		}
	})
	return c
}

func (c *cnitool) run(verb string, netns string, env ...string) (string, error) {
	c.t.Helper()
	args := []string{verb, c.name}
	if netns != "" {
		args = append(args, netns)
	} else {
		args = append(args, "/dev/null")
	}
	cmd := inNS(c.host, append([]string{"NETCONFPATH=" + c.dir, "CNI_PATH=" + pluginPath(c.t)}, env...), c.bin, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("cnitool %s %s: %v: %s", verb, netns, err, out)
	}
	return string(out), nil
}

func (c *cnitool) must(verb, netns string, env ...string) string {
	c.t.Helper()
	out, err := c.run(verb, netns, env...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// cnitoolID is the container ID cnitool derives from a netns path.
func cnitoolID(netns string) string {
	s := sha512.Sum512([]byte(netns))
	return fmt.Sprintf("cnitool-%x", s[:10])
}

// ruleset is the host's nftables ruleset as nft prints it.
func ruleset(t testing.TB, host *nsutil.NS) string {
	t.Helper()
	return testenv.Nft(t, host, "list", "ruleset")
}

// TestCnitool drives the plugin with cnitool v1.3.0 and a 1.1.0 conflist:
// status, add with a published port (reached from the host namespace),
// check, GC keeping a live attachment and removing a stale one and one
// whose sandbox died, del twice, and gc.
func TestCnitool(t *testing.T) {
	pluginPath(t)
	host := testenv.NetNS(t, "cnih")
	inNSOutput(t, host, "ip", "link", "set", "lo", "up")
	name, br := "nlbt-"+randHex(3), "nlbt"+randHex(3)
	conf := nlbridgeConf(br, "10.77.0.0/24", "")
	dir := confList(t, "1.1.0", name, conf)
	ct := newCnitool(t, host, dir, name)
	gw := netip.MustParseAddr("10.77.0.1")

	ct.must("status", "")

	// A first ADD and DEL make the network; its ruleset is the baseline
	// that every later DEL must return to.
	sb0 := testenv.NetNS(t, "cnis")
	ct.must("add", sb0.Path())
	ct.must("del", sb0.Path())
	testenv.OnlyLoopback(t, sb0)
	onlyBridge(t, host, br)
	base := ruleset(t, host)

	sb1, sb2, sb3 := testenv.NetNS(t, "cnis"), testenv.NetNS(t, "cnis"), testenv.NetNS(t, "cnis")
	port := func(hp int) string {
		return fmt.Sprintf(`CAP_ARGS={"portMappings":[{"hostPort":%d,"containerPort":80,"protocol":"tcp"}]}`, hp)
	}
	r1 := parseResult(t, []byte(ct.must("add", sb1.Path(), port(18080))))
	a1 := resultAddr(t, r1, false)
	if !netip.MustParsePrefix("10.77.0.0/24").Contains(a1.Addr()) || len(r1.Interfaces) != 3 ||
		r1.Interfaces[0].Name != br || r1.Interfaces[2].Sandbox != sb1.Path() || *r1.IPs[0].Interface != 2 {
		t.Fatalf("result %+v", r1)
	}
	if err := testenv.Ping(sb1, gw, 2*time.Second); err != nil {
		t.Fatalf("sandbox -> gateway: %v", err)
	}
	testenv.Listen(t, sb1, netip.AddrPortFrom(netip.IPv4Unspecified(), 80))
	if _, err := testenv.Dial(host, netip.AddrPortFrom(gw, 18080), 2*time.Second); err != nil {
		t.Fatalf("host -> published port %s:18080: %v", gw, err)
	}
	if _, err := testenv.Dial(sb1, netip.AddrPortFrom(gw, 18080), 2*time.Second); err != nil {
		t.Fatalf("sandbox -> its own published port %s:18080 (hairpin): %v", gw, err)
	}
	ct.must("check", sb1.Path())

	r2 := parseResult(t, []byte(ct.must("add", sb2.Path())))
	r3 := parseResult(t, []byte(ct.must("add", sb3.Path(), port(18083))))
	a2, a3 := resultAddr(t, r2, false), resultAddr(t, r3, false)
	if a2 == a1 || a3 == a1 || a3 == a2 {
		t.Fatalf("addresses not distinct: %s %s %s", a1, a2, a3)
	}
	// sb3's sandbox dies without a DEL: its veth goes with it, its
	// published port and conntrack entries stay until GC.
	if err := nsutil.Delete(sb3.Path()); err != nil {
		t.Fatal(err)
	}

	// sb4 is attached by a direct plugin call, so libcni has no cache
	// entry for it: only the plugin's GC can find it.
	sb4 := testenv.NetNS(t, "cnis")
	if _, err := (call{cmd: "ADD", containerID: "uncached", netns: sb4.Path(),
		conf: pluginConf(t, "1.1.0", name, conf, nil)}).run(t, host); err != nil {
		t.Fatal(err)
	}
	// GC with sb1 valid, as a runtime calls libcni (cnitool's own gc
	// passes no valid attachments): libcni DELs sb2 and sb3 from its cache,
	// then the plugin's GC runs with sb1 listed and removes sb4.
	runLibcniGC(t, host, dir, name, types.GCAttachment{ContainerID: cnitoolID(sb1.Path()), IfName: "eth0"})
	testenv.OnlyLoopback(t, sb2)
	testenv.OnlyLoopback(t, sb4)
	if err := testenv.Ping(sb1, gw, 2*time.Second); err != nil {
		t.Fatalf("kept attachment lost the gateway after GC: %v", err)
	}
	if _, err := testenv.Dial(host, netip.AddrPortFrom(gw, 18080), 2*time.Second); err != nil {
		t.Fatalf("kept attachment's port after GC: %v", err)
	}
	if out := ruleset(t, host); strings.Contains(out, "18083") {
		t.Errorf("the dead sandbox's port 18083 survived GC:\n%s", out)
	}

	ct.must("del", sb1.Path())
	testenv.OnlyLoopback(t, sb1)
	ct.must("del", sb1.Path()) // idempotent
	ct.must("gc", "")          // nothing cached is left; the plugin's GC finds nothing to remove
	onlyBridge(t, host, br)
	if got := ruleset(t, host); got != base {
		t.Errorf("ruleset after every DEL differs from the empty network's:\n%s\nwant:\n%s", got, base)
	}
	noConntrack(t, host, a1.Addr(), a2.Addr(), a3.Addr())
}
