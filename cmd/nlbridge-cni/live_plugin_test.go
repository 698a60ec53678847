package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/nlbridge/bridge/internal/testenv"
	"github.com/nlbridge/bridge/nsutil"
)

// plugEnv is a host namespace and one network for direct plugin calls.
type plugEnv struct {
	t        *testing.T
	host     *nsutil.NS
	name, br string
	entry    string
	gw       netip.Addr
	subnet   netip.Prefix
	version  string
}

func newPlugEnv(t *testing.T, subnet string, extra string) *plugEnv {
	pluginPath(t)
	e := &plugEnv{t: t, host: testenv.NetNS(t, "cnih"), name: "nlbt-" + randHex(3), br: "nlbt" + randHex(3),
		subnet: netip.MustParsePrefix(subnet), version: "1.0.0"}
	e.gw = e.subnet.Addr().Next()
	e.entry = nlbridgeConf(e.br, subnet, extra)
	inNSOutput(t, e.host, "ip", "link", "set", "lo", "up")
	return e
}

func (e *plugEnv) conf(extra map[string]any) []byte {
	return pluginConf(e.t, e.version, e.name, e.entry, extra)
}

func (e *plugEnv) add(id string, sb *nsutil.NS, args string, extra map[string]any) ([]byte, error) {
	e.t.Helper()
	return call{cmd: "ADD", containerID: id, netns: sb.Path(), args: args, conf: e.conf(extra)}.run(e.t, e.host)
}

func (e *plugEnv) del(id, netns string, extra map[string]any) error {
	e.t.Helper()
	_, err := call{cmd: "DEL", containerID: id, netns: netns, conf: e.conf(extra)}.run(e.t, e.host)
	return err
}

// cniCode reads the error code a failed call printed.
func cniCode(t testing.TB, out []byte) (uint, string) {
	t.Helper()
	var te types.Error
	if err := json.Unmarshal(out, &te); err != nil {
		t.Fatalf("error output %q: %v", out, err)
	}
	return te.Code, te.Msg
}

// TestDelIdempotent: DEL succeeds as containerd's rmp sends it (no netns,
// no prevResult), for a sandbox that is gone, and for an ADD that never
// happened; each leaves nothing.
func TestDelIdempotent(t *testing.T) {
	e := newPlugEnv(t, "10.78.0.0/24", "")
	if err := e.del("never-added", "", nil); err != nil {
		t.Fatalf("DEL of an ADD that never happened: %v", err)
	}
	sb := testenv.NetNS(t, "cnis")
	out, err := e.add("c1", sb, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	a := resultAddr(t, parseResult(t, out), false)
	// containerd's stopp: netns and prevResult.
	var prev map[string]any
	json.Unmarshal(out, &prev)
	if err := e.del("c1", sb.Path(), map[string]any{"prevResult": prev}); err != nil {
		t.Fatal(err)
	}
	testenv.OnlyLoopback(t, sb)
	onlyBridge(t, e.host, e.br)
	// containerd's rmp: netns "" and no prevResult.
	if err := e.del("c1", "", nil); err != nil {
		t.Fatal(err)
	}

	// A sandbox that is gone before DEL.
	sb2 := testenv.NetNS(t, "cnis")
	if _, err := e.add("c2", sb2, "", map[string]any{"runtimeConfig": map[string]any{
		"portMappings": []map[string]any{{"hostPort": 18090, "containerPort": 80, "protocol": "tcp"}}}}); err != nil {
		t.Fatal(err)
	}
	path := sb2.Path()
	if err := nsutil.Delete(path); err != nil {
		t.Fatal(err)
	}
	if err := e.del("c2", path, nil); err != nil {
		t.Fatalf("DEL with the sandbox gone: %v", err)
	}
	if err := e.del("c2", "", nil); err != nil {
		t.Fatal(err)
	}
	onlyBridge(t, e.host, e.br)
	if out := ruleset(t, e.host); strings.Contains(out, "18090") {
		t.Errorf("port of the deleted attachment still published:\n%s", out)
	}
	noConntrack(t, e.host, a.Addr())
}

// TestAddErrors: ADD on an existing attachment is an error and leaves the
// attachment working; bad input gives the spec's codes and no residue.
func TestAddErrors(t *testing.T) {
	e := newPlugEnv(t, "10.79.0.0/24", "")
	sb := testenv.NetNS(t, "cnis")
	if _, err := e.add("c1", sb, "", nil); err != nil {
		t.Fatal(err)
	}
	out, err := e.add("c1", sb, "", nil)
	if err == nil {
		t.Fatal("second ADD of c1/eth0 succeeded")
	}
	if code, msg := cniCode(t, out); code != codeExists || !strings.Contains(msg, "c1/eth0") {
		t.Errorf("second ADD: code %d %q, want %d", code, msg, codeExists)
	}
	if err := testenv.Ping(sb, e.gw, 2*time.Second); err != nil {
		t.Errorf("first attachment broken by the refused ADD: %v", err)
	}

	sb2 := testenv.NetNS(t, "cnis")
	for _, tc := range []struct {
		args  string
		extra map[string]any
		code  uint
		what  string
	}{
		{"IP=10.79.0.2", nil, codeConflict, "10.79.0.2"}, // c1 has it
		{"IP=10.80.0.2", nil, types.ErrInvalidEnvironmentVariables, "10.80.0.2"},
		{"BOGUS=1", nil, types.ErrInvalidEnvironmentVariables, "BOGUS"},
		{"", map[string]any{"runtimeConfig": map[string]any{"mac": "nope"}}, types.ErrInvalidNetworkConfig, "mac"},
		{"", map[string]any{"disableContainerInterface": true}, types.ErrUnsupportedField, "disableContainerInterface"},
	} {
		out, err := e.add("c2", sb2, tc.args, tc.extra)
		if err == nil {
			t.Errorf("%s %v: ADD succeeded", tc.args, tc.extra)
			continue
		}
		if code, msg := cniCode(t, out); code != tc.code || !strings.Contains(msg, tc.what) {
			t.Errorf("%s %v: code %d %q, want %d naming %s", tc.args, tc.extra, code, msg, tc.code, tc.what)
		}
		testenv.OnlyLoopback(t, sb2)
	}
	// A port taken by c1 is a conflict, and the failed ADD leaves nothing.
	pm := map[string]any{"runtimeConfig": map[string]any{
		"portMappings": []map[string]any{{"hostPort": 18091, "containerPort": 80}}}}
	sb3 := testenv.NetNS(t, "cnis")
	if _, err := e.add("c3", sb3, "", pm); err != nil {
		t.Fatal(err)
	}
	out, err = e.add("c2", sb2, "", pm)
	if code, _ := cniCode(t, out); err == nil || code != codeConflict {
		t.Errorf("ADD publishing a taken port: %v code %d", err, code)
	}
	testenv.OnlyLoopback(t, sb2)
	for _, id := range []string{"c1", "c3"} {
		if err := e.del(id, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	onlyBridge(t, e.host, e.br)
}

// TestConcurrentAddDel: 20 ADD processes at once get 20 distinct
// addresses (from a range narrower than the subnet, which the plugin
// allocates itself); 20 DELs at once leave nothing.
func TestConcurrentAddDel(t *testing.T) {
	e := newPlugEnv(t, "10.81.0.0/16", "")
	e.entry = strings.Replace(e.entry, `"subnet": "10.81.0.0/16"`,
		`"subnet": "10.81.0.0/16", "rangeStart": "10.81.5.1", "rangeEnd": "10.81.5.40"`, 1)
	const n = 20
	sbs := make([]*nsutil.NS, n)
	for i := range sbs {
		sbs[i] = testenv.NetNS(t, "cnis")
	}
	addrs := make([]netip.Prefix, n)
	outs := make([][]byte, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { outs[i], errs[i] = e.add(fmt.Sprintf("c%d", i), sbs[i], "", nil) })
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	lo, hi := netip.MustParseAddr("10.81.5.1"), netip.MustParseAddr("10.81.5.40")
	for i := range addrs {
		if errs[i] != nil {
			t.Fatalf("ADD %d: %v", i, errs[i])
		}
		addrs[i] = resultAddr(t, parseResult(t, outs[i]), false)
		a := addrs[i]
		if j, dup := seen[a.Addr()]; dup {
			t.Errorf("ADD %d and %d both got %s", j, i, a)
		}
		seen[a.Addr()] = i
		if a.Addr().Less(lo) || hi.Less(a.Addr()) {
			t.Errorf("ADD %d got %s outside the range", i, a)
		}
	}
	for i := range n {
		if err := testenv.Ping(sbs[i], e.gw, 2*time.Second); err != nil {
			t.Errorf("sandbox %d (%s) -> gateway: %v", i, addrs[i], err)
		}
	}
	for i := range n {
		wg.Go(func() { errs[i] = e.del(fmt.Sprintf("c%d", i), sbs[i].Path(), nil) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("DEL %d: %v", i, errs[i])
		}
		testenv.OnlyLoopback(t, sbs[i])
	}
	onlyBridge(t, e.host, e.br)
}

// TestChaining: nlbridge followed by the reference portmap plugin (which
// publishes the port with iptables from our prevResult), and by the
// reference firewall plugin, through cnitool with a 1.0.0 conflist.
func TestChaining(t *testing.T) {
	pluginPath(t)
	needRef(t, "portmap", "firewall")
	need(t, "iptables")
	host := testenv.NetNS(t, "cnih")
	inNSOutput(t, host, "ip", "link", "set", "lo", "up")
	name, br := "nlbt-"+randHex(3), "nlbt"+randHex(3)
	entry := strings.Replace(nlbridgeConf(br, "10.82.0.0/24", ""), `"portMappings": true, `, "", 1)
	dir := confList(t, "1.0.0", name, entry,
		`{"type": "portmap", "capabilities": {"portMappings": true}}`,
		`{"type": "firewall", "backend": "iptables"}`)
	ct := newCnitool(t, host, dir, name)
	sb := testenv.NetNS(t, "cnis")
	r := parseResult(t, []byte(ct.must("add", sb.Path(),
		`CAP_ARGS={"portMappings":[{"hostPort":18092,"containerPort":80,"protocol":"tcp"}]}`)))
	a := resultAddr(t, r, false)
	if len(r.Interfaces) != 3 || r.Interfaces[2].Sandbox != sb.Path() {
		t.Fatalf("chained result lost our interfaces: %+v", r.Interfaces)
	}
	// portmap's DNAT, from our result's address, works.
	testenv.Listen(t, sb, netip.AddrPortFrom(netip.IPv4Unspecified(), 80))
	if _, err := testenv.Dial(host, netip.AddrPortFrom(netip.MustParseAddr("10.82.0.1"), 18092), 2*time.Second); err != nil {
		t.Errorf("port published by the chained portmap: %v", err)
	}
	if out := inNSOutput(t, host, "iptables-save"); !strings.Contains(out, a.Addr().String()) {
		t.Errorf("portmap/firewall rules do not name our address %s:\n%s", a.Addr(), out)
	}
	ct.must("check", sb.Path())
	ct.must("del", sb.Path())
	testenv.OnlyLoopback(t, sb)
	onlyBridge(t, host, br)
}

// TestDualStackCheck: host-local ranges of both families, result version
// 0.4.0; CHECK passes on the fresh attachment and fails once the kernel no
// longer matches prevResult.
func TestDualStackCheck(t *testing.T) {
	e := newPlugEnv(t, "10.85.0.0/24", "")
	e.entry = strings.Replace(e.entry, `[[{"subnet": "10.85.0.0/24"}]]`, `[[{"subnet": "10.85.0.0/24"}], [{"subnet": "fd00:85::/64"}]]`, 1)
	e.entry = strings.Replace(e.entry, `"routes": [{"dst": "0.0.0.0/0"}]`,
		`"routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.96.0.0/12"}, {"dst": "fd00:96::/48", "gw": "fd00:85::fe"}]`, 1)
	e.version = "0.4.0"
	sb := testenv.NetNS(t, "cnis")
	out, err := e.add("c1", sb, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var prev map[string]any
	if err := json.Unmarshal(out, &prev); err != nil || prev["cniVersion"] != "0.4.0" {
		t.Fatalf("result %s: %v", out, err)
	}
	r := parseResult(t, out)
	a4, a6 := resultAddr(t, r, false), resultAddr(t, r, true)
	if !netip.MustParsePrefix("fd00:85::/64").Contains(a6.Addr()) {
		t.Fatalf("IPv6 address %s", a6)
	}
	if err := testenv.Ping(sb, netip.MustParseAddr("fd00:85::1"), 2*time.Second); err != nil {
		t.Errorf("sandbox -> IPv6 gateway: %v", err)
	}
	check := func() error {
		_, err := call{cmd: "CHECK", containerID: "c1", netns: sb.Path(), conf: e.conf(map[string]any{"prevResult": prev})}.run(t, e.host)
		return err
	}
	if err := check(); err != nil {
		t.Fatalf("CHECK of a fresh attachment: %v", err)
	}
	for _, rt := range [][2]string{{"10.96.0.0/12", "10.85.0.1"}, {"fd00:96::/48", "fd00:85::fe"}} {
		fam := "-4"
		if strings.Contains(rt[0], ":") {
			fam = "-6"
		}
		if got := testenv.IP(t, sb, fam, "route", "show", rt[0]); !strings.Contains(got, "via "+rt[1]+" dev eth0") {
			t.Errorf("route %s in the sandbox: %q, want via %s dev eth0", rt[0], got, rt[1])
		}
		if !slices.ContainsFunc(r.Routes, func(x *types.Route) bool { return x.Dst.String() == rt[0] && x.GW.String() == rt[1] }) {
			t.Errorf("result routes %v lack %s via %s", r.Routes, rt[0], rt[1])
		}
	}
	testenv.IP(t, sb, "route", "del", "10.96.0.0/12")
	if err := check(); err == nil || !strings.Contains(err.Error(), "10.96.0.0/12") {
		t.Errorf("CHECK after the route was removed: %v, want a failure naming it", err)
	}
	testenv.IP(t, sb, "route", "add", "10.96.0.0/12", "via", "10.85.0.1", "dev", "eth0")
	testenv.IP(t, sb, "addr", "del", a4.String(), "dev", "eth0")
	if err := check(); err == nil || !strings.Contains(err.Error(), a4.String()) {
		t.Errorf("CHECK after the address was removed: %v, want a failure naming %s", err, a4)
	}
	if err := e.del("c1", sb.Path(), map[string]any{"prevResult": prev}); err != nil {
		t.Fatal(err)
	}
	testenv.OnlyLoopback(t, sb)
	onlyBridge(t, e.host, e.br)
}

// TestAnnounce: an IPv4-only ADD announces its address with a gratuitous
// ARP (the kernel's arp_notify) that reaches the bridge; with
// announcements 0 none is sent (checked once the sandbox's own ARP for the
// gateway, sent after ADD returned, has been captured).
func TestAnnounce(t *testing.T) {
	e := newPlugEnv(t, "10.86.0.0/24", "")
	sb0 := testenv.NetNS(t, "cnis")
	if _, err := e.add("c0", sb0, "", nil); err != nil { // makes the bridge
		t.Fatal(err)
	}
	// arpSeen reports whether frames hold an ARP request from a for target.
	arpSeen := func(frames []testenv.Frame, a, target netip.Addr) bool {
		for _, f := range frames {
			b := f.Data
			if len(b) >= 42 && b[12] == 0x08 && b[13] == 0x06 && b[21] == 1 &&
				netip.AddrFrom4([4]byte(b[28:32])) == a && netip.AddrFrom4([4]byte(b[38:42])) == target {
				return true
			}
		}
		return false
	}
	for _, tc := range []struct {
		extra map[string]any
		want  bool
	}{{nil, true}, {map[string]any{"announcements": 0}, false}} {
		capture := testenv.StartCapture(t, e.host, e.br)
		sb := testenv.NetNS(t, "cnis")
		id := "c" + randHex(2)
		out, err := e.add(id, sb, "", tc.extra)
		if err != nil {
			t.Fatal(err)
		}
		a := resultAddr(t, parseResult(t, out), false).Addr()
		if !tc.want {
			if err := testenv.Ping(sb, e.gw, 2*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		target := a // the gratuitous ARP; without one, the ARP for the gateway
		if !tc.want {
			target = e.gw
		}
		deadline := time.Now().Add(2 * time.Second)
		for !arpSeen(capture.Frames(), a, target) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		frames := capture.Stop()
		if !arpSeen(frames, a, target) {
			t.Fatalf("announcements %v: no ARP request from %s for %s on the bridge", tc.extra, a, target)
		}
		if got := arpSeen(frames, a, a); got != tc.want {
			t.Errorf("announcements %v: gratuitous ARP for %s seen = %v, want %v", tc.extra, a, got, tc.want)
		}
		if err := e.del(id, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.del("c0", "", nil); err != nil {
		t.Fatal(err)
	}
}

// TestPromiscMode: promiscMode (set by containerd's default conflist) puts
// the bridge in promiscuous mode; without it the bridge is not.
func TestPromiscMode(t *testing.T) {
	for _, on := range []bool{false, true} {
		e := newPlugEnv(t, "10.87.0.0/24", "")
		sb := testenv.NetNS(t, "cnis")
		if out, err := e.add("c0", sb, "", map[string]any{"promiscMode": on}); err != nil {
			t.Fatalf("promiscMode %v: %v: %s", on, err, out)
		}
		flags := inNSOutput(t, e.host, "ip", "-o", "link", "show", e.br)
		if strings.Contains(flags, "PROMISC") != on {
			t.Errorf("promiscMode %v: bridge flags %s", on, flags)
		}
		if err := e.del("c0", sb.Path(), map[string]any{"promiscMode": on}); err != nil {
			t.Fatal(err)
		}
	}
}

// bridgeIPv4 lists the IPv4 addresses of a bridge in host, as ip prints them.
func bridgeIPv4(t *testing.T, host *nsutil.NS, br string) []string {
	t.Helper()
	var got []string
	for _, line := range strings.Split(inNSOutput(t, host, "ip", "-4", "-o", "addr", "show", "dev", br), "\n") {
		if f := strings.Fields(line); len(f) > 3 {
			got = append(got, f[3])
		}
	}
	return got
}

// TestForceAddress: forceAddress replaces a foreign bridge's IPv4 address
// and renews an empty network of ours with another subnet; without it both
// are conflicts, and so is a subnet change under a live attachment.
func TestForceAddress(t *testing.T) {
	e := newPlugEnv(t, "10.84.0.0/24", "")
	inNSOutput(t, e.host, "ip", "link", "add", e.br, "type", "bridge")
	t.Cleanup(func() { inNS(e.host, nil, "ip", "link", "del", e.br).Run() })
	inNSOutput(t, e.host, "ip", "addr", "add", "10.9.9.1/24", "dev", e.br)
	inNSOutput(t, e.host, "ip", "link", "set", e.br, "up")
	sb := testenv.NetNS(t, "cnis")
	force := map[string]any{"forceAddress": true}

	out, err := e.add("c1", sb, "", nil)
	if code, msg := cniCode(t, out); err == nil || code != codeConflict || !strings.Contains(msg, "10.9.9.1/24") {
		t.Fatalf("ADD onto a bridge with another address: %v, code %d %q; want a conflict naming it", err, code, msg)
	}
	testenv.OnlyLoopback(t, sb)
	if got := bridgeIPv4(t, e.host, e.br); !slices.Equal(got, []string{"10.9.9.1/24"}) {
		t.Fatalf("the refused ADD changed the bridge: %v", got)
	}
	if _, err := e.add("c1", sb, "", force); err != nil {
		t.Fatal(err)
	}
	if got := bridgeIPv4(t, e.host, e.br); !slices.Equal(got, []string{"10.84.0.1/24"}) {
		t.Errorf("bridge addresses with forceAddress: %v, want only the gateway 10.84.0.1/24", got)
	}
	if err := testenv.Ping(sb, e.gw, 2*time.Second); err != nil {
		t.Fatalf("sandbox -> gateway: %v", err)
	}

	// Our network, another subnet: refused while c1 lives in the old one.
	moved := map[string]any{"forceAddress": true, "ipam": map[string]any{"type": "host-local",
		"ranges": [][]map[string]string{{{"subnet": "10.85.0.0/24"}}}}}
	sb2 := testenv.NetNS(t, "cnis")
	out, err = e.add("c2", sb2, "", moved)
	if code, msg := cniCode(t, out); err == nil || code != codeConflict || !strings.Contains(msg, "DEL them first") {
		t.Fatalf("subnet change under a live attachment: %v, code %d %q", err, code, msg)
	}
	testenv.OnlyLoopback(t, sb2)
	if err := e.del("c1", sb.Path(), force); err != nil {
		t.Fatal(err)
	}
	noForce := map[string]any{"ipam": moved["ipam"]}
	if out, err := e.add("c2", sb2, "", noForce); err == nil || !strings.Contains(string(out), "IPv4") {
		t.Fatalf("subnet change without forceAddress: %v %s; want a conflict naming IPv4", err, out)
	}
	r := parseResult(t, mustOut(t)(e.add("c2", sb2, "", moved)))
	if a := resultAddr(t, r, false); !netip.MustParsePrefix("10.85.0.0/24").Contains(a.Addr()) {
		t.Errorf("address %s after the subnet change", a)
	}
	if got := bridgeIPv4(t, e.host, e.br); !slices.Equal(got, []string{"10.85.0.1/24"}) {
		t.Errorf("bridge addresses after the subnet change: %v", got)
	}
	if err := testenv.Ping(sb2, netip.MustParseAddr("10.85.0.1"), 2*time.Second); err != nil {
		t.Fatalf("sandbox -> new gateway: %v", err)
	}
	if err := e.del("c2", sb2.Path(), moved); err != nil {
		t.Fatal(err)
	}
	testenv.OnlyLoopback(t, sb2)
}

// mustOut fails the test on a call's error and returns its output.
func mustOut(t *testing.T) func([]byte, error) []byte {
	return func(out []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
}
