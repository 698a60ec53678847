package nat_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nlbridge/bridge/internal/testenv"
	"github.com/nlbridge/bridge/nat"
	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

func TestLiveRejectedBatchChangesNothing(t *testing.T) {
	ns := testenv.NetNS(t, "nat")
	f := openTable(t, ns)
	a := nat.Port{Proto: unix.IPPROTO_TCP, HostIP: netip.IPv4Unspecified(), HostPort: 8080, Addr: netip.MustParseAddr("10.0.0.2"), Port: 80}
	if err := f.AddPorts(ctx, a); err != nil {
		t.Fatal(err)
	}
	b := a
	b.HostPort = 8081
	clash := a
	clash.Addr = netip.MustParseAddr("10.0.0.3") // same key, other value: EEXIST
	if err := f.AddPorts(ctx, b, clash); err == nil {
		t.Fatal("a clashing element was accepted")
	}
	out := testenv.Nft(t, ns, "list", "map", "inet", "nlbt", "portsany4")
	if strings.Contains(out, "8081") || !strings.Contains(out, "tcp . 8080 : 10.0.0.2 . 80") {
		t.Errorf("rejected batch changed the map:\n%s", out)
	}
	if err := f.RemovePorts(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if out := testenv.Nft(t, ns, "list", "tables"); strings.Contains(out, "nlbt") {
		t.Errorf("table not removed: %s", out)
	}
}

// TestLiveThousandPortsInOneBatch publishes and withdraws 1,000 ports in
// one call each: with a message per element, the kernel's acks overflowed
// the socket (ENOBUFS) and the next batch waited forever for lost acks.
func TestLiveThousandPortsInOneBatch(t *testing.T) {
	ns := testenv.NetNS(t, "nat")
	f := openTable(t, ns)
	var ps []nat.Port
	for i := range 1000 {
		ps = append(ps, nat.Port{Proto: unix.IPPROTO_TCP, HostIP: netip.IPv4Unspecified(), HostPort: uint16(10000 + i),
			Addr: netip.MustParseAddr("10.0.0.2"), Port: 80})
	}
	done := make(chan error, 1)
	for _, step := range []struct {
		name string
		fn   func(context.Context, ...nat.Port) error
		want int
	}{{"publish", f.AddPorts, 1000}, {"unpublish", f.RemovePorts, 0}} {
		go func() { done <- step.fn(ctx, ps...) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s of 1,000 ports hangs", step.name)
		}
		out := testenv.Nft(t, ns, "list", "map", "inet", "nlbt", "portsany4")
		if got := strings.Count(out, ": 10.0.0.2 . 80"); got != step.want {
			t.Errorf("after %s: %d elements in portsany4, want %d", step.name, got, step.want)
		}
	}
}

// Check tells a table as Rebuild makes it from a missing or changed one,
// and Rebuild restores it with the elements given, atomically.
func TestLiveCheckAndRebuild(t *testing.T) {
	ns := testenv.NetNS(t, "nat")
	f, err := nat.Open(ns.FD(), "nlbt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	check := func(wantFound, wantIntact bool) {
		t.Helper()
		found, intact, err := f.Check(ctx)
		if err != nil || found != wantFound || intact != wantIntact {
			t.Fatalf("Check = found %v, intact %v, %v; want %v, %v", found, intact, err, wantFound, wantIntact)
		}
	}
	check(false, false)
	p := nat.Port{Proto: unix.IPPROTO_TCP, HostIP: netip.IPv4Unspecified(), HostPort: 8080, Addr: netip.MustParseAddr("10.0.0.2"), Port: 80}
	r := nat.Port{Proto: unix.IPPROTO_UDP, HostIP: netip.MustParseAddr("fd00::2"), HostPort: 53, Addr: netip.MustParseAddr("fd00::2"), Port: 53, Routed: true}
	nw := nat.Network{Bridge: "br0", Mode6: nat.Routed}
	if err := f.Rebuild(ctx, []nat.Network{nw}, []nat.Port{p}, nil); err != nil {
		t.Fatal(err)
	}
	check(true, true)
	if err := f.AddPorts(ctx, r); err != nil {
		t.Fatal(err)
	}
	ports, err := f.Ports(ctx)
	if err != nil || len(ports) != 2 || ports[0] != p || ports[1] != r {
		t.Errorf("Ports() = %v, %v; want [%v %v]", ports, err, p, r)
	}
	if b, err := f.Bridges(ctx); err != nil || len(b) != 1 || b[0] != "br0" {
		t.Errorf("Bridges() = %v, %v", b, err)
	}
	for _, change := range [][]string{
		{"insert", "rule", "inet", "nlbt", "prerouting", "return"},
		{"flush", "chain", "inet", "nlbt", "forward"},
		{"add", "chain", "inet", "nlbt", "extra"},
	} {
		if err := f.Rebuild(ctx, []nat.Network{nw}, []nat.Port{p}, nil); err != nil {
			t.Fatal(err)
		}
		testenv.Nft(t, ns, change...)
		check(true, false)
	}
	testenv.Nft(t, ns, "delete", "table", "inet", "nlbt")
	check(false, false)
	if err := f.Rebuild(ctx, []nat.Network{nw}, []nat.Port{p}, nil); err != nil {
		t.Fatal(err)
	}
	if out := testenv.Nft(t, ns, "list", "map", "inet", "nlbt", "portsany4"); !strings.Contains(out, "tcp . 8080 : 10.0.0.2 . 80") {
		t.Errorf("rebuilt table lacks the port:\n%s", out)
	}
	// Removing what is gone is not an error.
	if err := f.RemovePorts(ctx, p, r); err != nil {
		t.Errorf("RemovePorts with one missing: %v", err)
	}
	if ports, _ := f.Ports(ctx); len(ports) != 0 {
		t.Errorf("ports left: %v", ports)
	}
	if err := f.RemoveBridge(ctx, "br0"); err != nil {
		t.Errorf("RemoveBridge: %v", err)
	}
	if b, _ := f.Bridges(ctx); len(b) != 0 {
		t.Errorf("bridges left: %v", b)
	}
	if err := f.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.RemovePorts(ctx, p); err != nil {
		t.Errorf("RemovePorts without a table: %v", err)
	}
}

// openTable builds the table nlbt in ns and closes its socket at the end.
func openTable(t *testing.T, ns *nsutil.NS) *nat.Firewall {
	t.Helper()
	f, err := nat.Open(ns.FD(), "nlbt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Rebuild(ctx, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	return f
}

func conntrack(t *testing.T, ns *nsutil.NS, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", filepath.Base(ns.Path()), "conntrack"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("conntrack %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestLiveFlushConntrack(t *testing.T) {
	if _, err := exec.LookPath("conntrack"); err != nil {
		t.Skip("conntrack(8) not installed (make deps installs it)")
	}
	ns := testenv.NetNS(t, "ct")
	openTable(t, ns) // its ct rules turn conntrack on in ns
	x := "10.0.0.2"
	for _, e := range [][]string{
		{"-s", x, "-d", "192.0.2.9", "--sport", "1000", "--dport", "53"}, // x's own flow
		{"-s", "192.0.2.9", "-d", x, "--sport", "1001", "--dport", "80"}, // routed to x
		{"-s", "192.0.2.9", "-d", "192.0.2.1", "--sport", "1002", "--dport", "8080", "--reply-src", x, "--reply-dst", "192.0.2.9", "--reply-port-src", "80", "--reply-port-dst", "1002"}, // DNAT'ed to x
		{"-s", "10.0.0.3", "-d", "192.0.2.9", "--sport", "1003", "--dport", "53"},                                                                                                        // someone else
	} {
		conntrack(t, ns, append([]string{"-I", "-p", "udp", "-t", "100"}, e...)...)
	}
	c, err := ns.Dial(unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Inbound only: flows to x go, x's own flow stays.
	if err := nat.FlushConntrack(c, false, netip.MustParseAddr(x)); err != nil {
		t.Fatal(err)
	}
	out := conntrack(t, ns, "-L")
	if !strings.Contains(out, "src="+x+" dst=192.0.2.9 sport=1000") || strings.Contains(out, "sport=1001") || strings.Contains(out, "sport=1002") {
		t.Errorf("after an inbound flush of %s:\n%s", x, out)
	}
	if err := nat.FlushConntrack(c, true, netip.MustParseAddr(x)); err != nil {
		t.Fatal(err)
	}
	out = conntrack(t, ns, "-L")
	if strings.Contains(out, x) || !strings.Contains(out, "src=10.0.0.3") {
		t.Errorf("after flushing %s:\n%s", x, out)
	}
	if err := nat.FlushConntrack(c, true, netip.MustParseAddr(x)); err != nil {
		t.Errorf("flushing again (nothing left): %v", err)
	}
}

// The ctx reaches the real nf_tables socket (the one WithSockOptions
// hands over): a call with a cancelled ctx fails with the ctx's error
// without reaching the kernel, and the next call goes through on the new
// socket the firewall dials.
func TestLiveCancelledCallReachesTheSocket(t *testing.T) {
	ns := testenv.NetNS(t, "nat")
	f := openTable(t, ns)
	p := nat.Port{Proto: unix.IPPROTO_TCP, HostIP: netip.IPv4Unspecified(), HostPort: 8080, Addr: netip.MustParseAddr("10.0.0.2"), Port: 80}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := f.AddPorts(cancelled, p); !errors.Is(err, context.Canceled) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("publish with a cancelled ctx: %v", err)
	}
	if out := testenv.Nft(t, ns, "list", "map", "inet", "nlbt", "portsany4"); strings.Contains(out, "8080") {
		t.Errorf("the cancelled batch was sent:\n%s", out)
	}
	if err := f.AddPorts(ctx, p); err != nil {
		t.Fatal(err)
	}
	if got, err := f.Ports(ctx); err != nil || len(got) != 1 || got[0] != p {
		t.Fatalf("ports %v, %v; want %v", got, err, p)
	}
}
