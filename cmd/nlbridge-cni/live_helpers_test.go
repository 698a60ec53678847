package main

// Helpers of the live tests: a CNI_PATH with the plugin built from this
// package and the reference plugins of the Debian package, commands run
// inside a throwaway "host" namespace (nsenter --net, never ip netns exec:
// see shared/CLIENTS.md), and checks that nothing was left behind.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/nlbridge/bridge/internal/testenv"
	"github.com/nlbridge/bridge/nsutil"
)

// refPlugins is where Debian's containernetworking-plugins live.
const refPlugins = "/usr/lib/cni"

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// pluginPath returns a CNI_PATH holding nlbridge (built once per test
// binary) and the reference plugins.
func pluginPath(t testing.TB) string {
	t.Helper()
	testenv.Root(t)
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "nlbridge-cni-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, "nlbridge"), ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		ents, _ := os.ReadDir(refPlugins)
		for _, e := range ents {
			os.Symlink(filepath.Join(refPlugins, e.Name()), filepath.Join(binDir, e.Name()))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// needRef skips unless the reference plugins named are installed.
func needRef(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(refPlugins, n)); err != nil {
			t.Skipf("reference CNI plugin %s not installed (Debian package containernetworking-plugins; `make test` installs it)", n)
		}
	}
}

// need skips unless the tool is on PATH (or at the path given).
func need(t testing.TB, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Skipf("%s not found: `make test` installs it (%v)", tool, err)
	}
	return p
}

func TestMain(m *testing.M) {
	if req := os.Getenv(libcniGCEnv); req != "" {
		os.Exit(libcniGC(req))
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// libcniGCEnv makes the test binary a libcni client that runs one
// GCNetworkList, as a runtime does (cnitool's gc passes no valid
// attachments): the value is a gcRequest in JSON.
const libcniGCEnv = "NLBRIDGE_TEST_LIBCNI_GC"

type gcRequest struct {
	Dir, Name, Path string
	Valid           []types.GCAttachment
}

func libcniGC(req string) int {
	var r gcRequest
	if err := json.Unmarshal([]byte(req), &r); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	list, err := libcni.LoadNetworkConf(r.Dir, r.Name)
	if err == nil {
		err = libcni.NewCNIConfig(filepath.SplitList(r.Path), nil).
			GCNetworkList(context.Background(), list, &libcni.GCArgs{ValidAttachments: r.Valid})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// runLibcniGC runs libcni's GCNetworkList inside host, keeping valid.
func runLibcniGC(t testing.TB, host *nsutil.NS, dir, name string, valid ...types.GCAttachment) {
	t.Helper()
	req, _ := json.Marshal(gcRequest{Dir: dir, Name: name, Path: pluginPath(t), Valid: valid})
	if out, err := inNS(host, []string{libcniGCEnv + "=" + string(req)}, os.Args[0]).CombinedOutput(); err != nil {
		t.Fatalf("libcni GCNetworkList: %v\n%s", err, out)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// inNS builds a command that runs inside ns. It is killed after
// cmdTimeout: a hung plugin fails the test instead of wedging it.
func inNS(ns *nsutil.NS, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.Command("timeout", append([]string{"-s", "KILL", cmdTimeout, "nsenter", "--net=" + ns.Path(), "--", name}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// cmdTimeout bounds each client or plugin command of the live tests.
const cmdTimeout = "60"

// daemonInNS builds a long-running command (a daemon) inside ns.
func daemonInNS(ns *nsutil.NS, name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + ns.Path(), "--", name}, args...)...)
}

// call is one direct exec of the plugin, as a runtime makes it.
type call struct {
	cmd, containerID, netns, ifName, args string
	conf                                  []byte
}

// run execs the plugin inside host and returns stdout; a non-zero exit
// gives an error with the CNI error JSON.
func (c call) run(t testing.TB, host *nsutil.NS) ([]byte, error) {
	t.Helper()
	if c.ifName == "" {
		c.ifName = "eth0"
	}
	cmd := inNS(host, []string{"CNI_COMMAND=" + c.cmd, "CNI_CONTAINERID=" + c.containerID, "CNI_NETNS=" + c.netns,
		"CNI_IFNAME=" + c.ifName, "CNI_ARGS=" + c.args, "CNI_PATH=" + pluginPath(t)}, filepath.Join(pluginPath(t), "nlbridge"))
	cmd.Stdin = bytes.NewReader(c.conf)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %v: %s %s", c.cmd, c.containerID, err, out, stderr.Bytes())
	}
	return out, nil
}

// parseResult reads a 1.x result printed by the plugin or cnitool.
func parseResult(t testing.TB, out []byte) *current.Result {
	t.Helper()
	var r current.Result
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("result %s: %v", out, err)
	}
	return &r
}

// resultAddr returns the container address of a family from a result.
func resultAddr(t testing.TB, r *current.Result, v6 bool) netip.Prefix {
	t.Helper()
	for _, ip := range r.IPs {
		a, _ := netip.AddrFromSlice(ip.Address.IP)
		a = a.Unmap()
		if a.Is6() == v6 {
			ones, _ := ip.Address.Mask.Size()
			return netip.PrefixFrom(a, ones)
		}
	}
	t.Fatalf("result has no IPv6=%v address: %+v", v6, r.IPs)
	return netip.Prefix{}
}

// confList writes a conflist named name (network name too) into a fresh
// directory and returns the directory.
func confList(t testing.TB, version, name string, plugins ...string) string {
	t.Helper()
	dir := t.TempDir()
	body := fmt.Sprintf(`{"cniVersion": %q, "name": %q, "plugins": [%s]}`, version, name, strings.Join(plugins, ","))
	if err := os.WriteFile(filepath.Join(dir, name+".conflist"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// nlbridgeConf is the plugin's entry of a conflist: NAT, IPv4 and IPv6.
func nlbridgeConf(bridge, subnet4 string, extra string) string {
	return fmt.Sprintf(`{"type": "nlbridge", "bridge": %q, "isGateway": true, "ipMasq": true, %s
		"ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]},
		"capabilities": {"portMappings": true, "mac": true, "ips": true}}`, bridge, extra, subnet4)
}

// pluginConf is what a runtime sends a plugin: the conflist entry with
// cniVersion and name, plus extra keys.
func pluginConf(t testing.TB, version, name, entry string, extra map[string]any) []byte {
	t.Helper()
	m := map[string]any{}
	if err := json.Unmarshal([]byte(entry), &m); err != nil {
		t.Fatalf("conf %s: %v", entry, err)
	}
	m["cniVersion"], m["name"] = version, name
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return b
}

// onlyBridge fails unless host holds nothing of the network's attachments:
// its devices are lo and the bridges named, and the firewall table has no
// elements. It polls briefly: nothing is expected to be pending when DEL
// has returned, so a failure here is real.
func onlyBridge(t testing.TB, host *nsutil.NS, bridges ...string) {
	t.Helper()
	want := append([]string{"lo"}, bridges...)
	var got []string
	deadline := time.Now().Add(2 * time.Second)
	for {
		got = testenv.Links(t, host)
		if sameSet(got, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !sameSet(got, want) {
		t.Errorf("host devices %v, want %v", got, want)
	}
	if out := testenv.Nft(t, host, "list", "ruleset"); strings.Contains(out, "elements = {") && hasPortElements(out) {
		t.Errorf("firewall still has port elements:\n%s", out)
	}
}

// hasPortElements reports whether a ruleset listing has elements in a
// port map (network elements of a live bridge are expected).
func hasPortElements(out string) bool {
	in := false
	for _, line := range strings.Split(out, "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "map ") || strings.HasPrefix(l, "set ") {
			in = strings.Contains(l, "port")
		}
		if in && strings.HasPrefix(l, "elements") {
			return true
		}
	}
	return false
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, x := range a {
		m[x]++
	}
	for _, x := range b {
		m[x]--
	}
	for _, v := range m {
		if v != 0 {
			return false
		}
	}
	return true
}

// noConntrack fails if host has conntrack entries of the addresses.
func noConntrack(t testing.TB, host *nsutil.NS, addrs ...netip.Addr) {
	t.Helper()
	out := inNSOutput(t, host, "conntrack", "-L")
	for _, a := range addrs {
		if a.IsValid() && strings.Contains(out, "="+a.String()+" ") {
			t.Errorf("conntrack entries of %s left:\n%s", a, out)
		}
	}
}

func inNSOutput(t testing.TB, ns *nsutil.NS, name string, args ...string) string {
	t.Helper()
	out, err := inNS(ns, nil, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}
