package bridge_test

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/internal/testenv"
	"github.com/nlbridge/bridge/nsutil"
)

// The network the state tests share with their child processes.
var stateNet = bridge.NetworkConfig{Name: "nlbs0", IPv4: netip.MustParsePrefix("172.30.7.1/24")}

// openDriver opens a driver on host and closes it at the end of the test.
func openDriver(t *testing.T, host *nsutil.NS) *bridge.Driver {
	t.Helper()
	d, err := bridge.Open(ctx, bridge.Options{NetNS: host.Path()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestLiveChild is the body of the child processes that the state tests
// re-execute the test binary as (NLB_CHILD names the role); run directly
// it does nothing.
func TestLiveChild(t *testing.T) {
	role := os.Getenv("NLB_CHILD")
	if role == "" {
		t.Skip("runs only as a child process of the state tests")
	}
	if role == "flock" { // take the host's lock as another driver would, until killed
		holdFlock(t, os.Getenv("NLB_HOST"))
	}
	d, err := bridge.Open(ctx, bridge.Options{NetNS: os.Getenv("NLB_HOST")})
	if err != nil {
		t.Fatal(err)
	}
	n, err := d.CreateNetwork(ctx, stateNet)
	if err != nil {
		t.Fatal(err)
	}
	sandboxes := strings.Split(os.Getenv("NLB_SANDBOXES"), ",")
	switch role {
	case "hold": // attach one endpoint with a port, then wait to be killed
		if _, err := n.Attach(ctx, bridge.EndpointConfig{ID: "held", NetNS: sandboxes[0],
			Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 18081, ContainerPort: 80}}}); err != nil {
			t.Fatal(err)
		}
		fmt.Println("ready")
		select {}
	case "attach": // attach one endpoint per sandbox, then exit
		for _, sb := range sandboxes {
			if _, err := n.Attach(ctx, bridge.EndpointConfig{ID: filepath.Base(sb), NetNS: sb}); err != nil {
				t.Fatal(err)
			}
		}
		d.Close()
		fmt.Println("ready")
	case "churn": // attach and detach (and now and then delete and create the network) at random until killed
		fmt.Println("ready")
		for {
			if rand.IntN(20) == 0 {
				if err := n.Delete(ctx); err != nil {
					t.Fatal(err)
				}
				if n, err = d.CreateNetwork(ctx, stateNet); err != nil {
					t.Fatal(err)
				}
			}
			sb := sandboxes[rand.IntN(len(sandboxes))]
			if e, ok := n.Endpoint(filepath.Base(sb)); ok {
				if err := e.Detach(ctx); err != nil {
					t.Fatal(err)
				}
				continue
			}
			_, err := n.Attach(ctx, bridge.EndpointConfig{ID: filepath.Base(sb), NetNS: sb, IfName: "eth0",
				Advertise: &bridge.Advertise{}, Ports: []bridge.PortMapping{{Proto: bridge.TCP, ContainerPort: 80}}})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

// child re-executes the test binary in a role and waits until it prints
// "ready". The child is killed at the end of the test if still running.
func child(t *testing.T, role string, host *nsutil.NS, sandboxes ...*nsutil.NS) *exec.Cmd {
	t.Helper()
	var paths []string
	for _, sb := range sandboxes {
		paths = append(paths, sb.Path())
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLiveChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "NLB_CHILD="+role, "NLB_HOST="+host.Path(), "NLB_SANDBOXES="+strings.Join(paths, ","))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
				break
			}
		}
		ready <- false
		for sc.Scan() {
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("child %s exited before it was ready", role)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("child %s not ready after 30 s", role)
	}
	return cmd
}

func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
}

// stateEnv is a host namespace with lo up, an outside namespace routed to
// it, and a check at the end that the host holds only lo and the uplink.
func stateEnv(t *testing.T) (host, out *nsutil.NS) {
	t.Helper()
	host = testenv.NetNS(t, "host")
	testenv.IP(t, host, "link", "set", "lo", "up")
	out = testenv.Outside(t, host)
	return host, out
}

// hostLinks lists the host's links other than lo and the uplink.
func hostLinks(t *testing.T, host *nsutil.NS) []string {
	var out []string
	for _, l := range testenv.Links(t, host) {
		if l != "lo" && l != "up0" {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

func reaches(from *nsutil.NS, ap netip.AddrPort) error {
	_, err := testenv.Dial(from, ap, 2*time.Second)
	return err
}

func TestLiveRestart(t *testing.T) {
	host, out := stateEnv(t)
	sb, sb2 := testenv.NetNS(t, "sb"), testenv.NetNS(t, "sb2")
	d1, err := bridge.Open(ctx, bridge.Options{NetNS: host.Path()})
	if err != nil {
		t.Fatal(err)
	}
	n1, err := d1.CreateNetwork(ctx, stateNet)
	if err != nil {
		t.Fatal(err)
	}
	e1, err := n1.Attach(ctx, bridge.EndpointConfig{ID: "web", NetNS: sb.Path(),
		Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 18080, ContainerPort: 80}}})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Listen(t, sb, netip.AddrPortFrom(e1.IPv4().Addr(), 80))
	published := netip.AddrPortFrom(testenv.UplinkIPv4, 18080)
	if err := reaches(out, published); err != nil {
		t.Fatalf("before restart: %v", err)
	}
	ruleset := testenv.Nft(t, host, "list", "table", "inet", "nlbridge")
	d1.Close()
	if err := reaches(out, published); err != nil {
		t.Fatalf("with no driver: %v", err)
	}

	// The port keeps answering while the next driver opens.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var during []error
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := reaches(out, published); err != nil {
				during = append(during, err)
			}
		}
	})
	d2 := openDriver(t, host)
	close(stop)
	wg.Wait()
	if len(during) > 0 {
		t.Errorf("port failed during Open: %v", during)
	}
	if err := reaches(out, published); err != nil {
		t.Errorf("after restart: %v", err)
	}
	if got := testenv.Nft(t, host, "list", "table", "inet", "nlbridge"); got != ruleset {
		t.Errorf("ruleset changed by Open:\n%s\nwant:\n%s", got, ruleset)
	}

	// Recovered as it was.
	if nets := d2.Networks(); len(nets) != 1 || nets[0].Config() != n1.Config() {
		t.Fatalf("Networks() = %v, want %s with %+v", nets, stateNet.Name, n1.Config())
	}
	n2, _ := d2.Network(stateNet.Name)
	again, err := d2.CreateNetwork(ctx, stateNet)
	if err != nil || again != n2 {
		t.Errorf("CreateNetwork(same config) after restart = %v, %v; want the recovered network", again, err)
	}
	e2, ok := n2.Endpoint("web")
	if !ok {
		t.Fatalf("endpoint web not recovered: %v", n2.Endpoints())
	}
	if e2.IPv4() != e1.IPv4() || e2.MAC().String() != e1.MAC().String() || e2.IfName() != e1.IfName() ||
		e2.HostIfName() != e1.HostIfName() || e2.NetNS() != e1.NetNS() || !slices.Equal(e2.Ports(), e1.Ports()) {
		t.Errorf("recovered %s %s %s %s %s %v, want %s %s %s %s %s %v",
			e2.IPv4(), e2.MAC(), e2.IfName(), e2.HostIfName(), e2.NetNS(), e2.Ports(),
			e1.IPv4(), e1.MAC(), e1.IfName(), e1.HostIfName(), e1.NetNS(), e1.Ports())
	}
	// The host port is held again.
	var l net.Listener
	host.Do(func() (err error) { l, err = net.Listen("tcp4", "0.0.0.0:18080"); return err })
	if l != nil {
		l.Close()
		t.Error("host port 18080 is not held after restart")
	}
	// The same ID is refused; a new endpoint gets a fresh address and MAC.
	if _, err := n2.Attach(ctx, bridge.EndpointConfig{ID: "web", NetNS: sb2.Path()}); !isKind(err, bridge.ErrExists, "ID") {
		t.Errorf("attach with a used ID: %v, want ErrExists on ID", err)
	}
	e3, err := n2.Attach(ctx, bridge.EndpointConfig{NetNS: sb2.Path(), Advertise: &bridge.Advertise{}})
	if err != nil {
		t.Fatal(err)
	}
	if e3.IPv4() == e1.IPv4() || e3.MAC().String() == e1.MAC().String() {
		t.Errorf("new endpoint took the recovered one's address or MAC: %s %s", e3.IPv4(), e3.MAC())
	}
	// The recovered endpoint detaches, leaving nothing.
	for _, e := range []*bridge.Endpoint{e2, e3} {
		if err := e.Detach(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := reaches(out, published); err == nil {
		t.Error("port still answers after detach")
	}
	if m := testenv.Nft(t, host, "list", "map", "inet", "nlbridge", "portsany4"); strings.Contains(m, "18080") {
		t.Errorf("element left after detach:\n%s", m)
	}
	if err := d2.Reclaim(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.OnlyLoopback(t, sb)
	if err := n2.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.NoElements(t, host, "nlbridge")
	if l := hostLinks(t, host); len(l) != 0 {
		t.Errorf("host links left: %v", l)
	}
}

func isKind(err, kind error, field string) bool {
	var e *bridge.Error
	return errors.As(err, &e) && e.Field == field && errors.Is(err, kind)
}

// complete checks what the issue calls complete for every endpoint the
// driver lists, and that nothing else of the network exists: no other host
// ends, no interfaces in other sandboxes, no other port elements.
func complete(t *testing.T, d *bridge.Driver, host *nsutil.NS, sandboxes []*nsutil.NS) []*bridge.Endpoint {
	t.Helper()
	var eps []*bridge.Endpoint
	if n, ok := d.Network(stateNet.Name); ok {
		eps = n.Endpoints()
	} else if bridges := testenv.IP(t, host, "-o", "link", "show", "type", "bridge"); strings.Contains(bridges, stateNet.Name) {
		t.Fatalf("bridge %s exists but is not recovered:\n%s", stateNet.Name, bridges)
	}
	want := []string{stateNet.Name}
	ports := testenv.Nft(t, host, "list", "map", "inet", "nlbridge", "portsany4")
	for _, e := range eps {
		want = append(want, e.HostIfName())
		hl := testenv.IP(t, host, "-o", "link", "show", e.HostIfName())
		if !strings.Contains(hl, "master "+stateNet.Name) || !strings.Contains(hl, ",UP") {
			t.Errorf("endpoint %s: host end not up on the bridge: %s", e.ID(), hl)
		}
		sb, _ := nsutil.Open(e.NetNS())
		if sb == nil {
			t.Errorf("endpoint %s: sandbox %s gone", e.ID(), e.NetNS())
			continue
		}
		sl := testenv.IP(t, sb, "-o", "addr", "show", "dev", e.IfName())
		if !strings.Contains(sl, "inet "+e.IPv4().String()) || !strings.Contains(testenv.IP(t, sb, "-o", "link", "show", e.IfName()), ",UP") {
			t.Errorf("endpoint %s: sandbox interface not up with %s:\n%s", e.ID(), e.IPv4(), sl)
		}
		sb.Close()
		if c := strings.Count(ports, ": "+e.IPv4().Addr().String()+" . 80"); c != len(e.Ports()) {
			t.Errorf("endpoint %s: %d port elements, want %d (%v)\n%s", e.ID(), c, len(e.Ports()), e.Ports(), ports)
		}
	}
	total := 0
	for _, e := range eps {
		total += len(e.Ports())
	}
	if c := strings.Count(ports, " . 80"); c != total {
		t.Errorf("%d port elements for %d published ports:\n%s", c, total, ports)
	}
	if len(eps) == 0 {
		if _, ok := d.Network(stateNet.Name); !ok {
			want = nil
			if tables := testenv.Nft(t, host, "list", "set", "inet", "nlbridge", "bridges"); strings.Contains(tables, stateNet.Name) {
				t.Errorf("elements of a deleted network left:\n%s", tables)
			}
		}
	}
	slices.Sort(want)
	if got := hostLinks(t, host); !slices.Equal(got, want) {
		t.Errorf("host links %v, want %v", got, want)
	}
	for _, sb := range sandboxes {
		has := slices.ContainsFunc(eps, func(e *bridge.Endpoint) bool { return e.NetNS() == sb.Path() })
		links := testenv.Links(t, sb)
		if has && !slices.Equal(links, []string{"eth0", "lo"}) && !slices.Equal(links, []string{"lo", "eth0"}) ||
			!has && !slices.Equal(links, []string{"lo"}) {
			t.Errorf("sandbox %s (endpoint: %v) has links %v", sb.Path(), has, links)
		}
	}
	return eps
}

func TestLiveKilledOwner(t *testing.T) {
	host, out := stateEnv(t)
	sb := testenv.NetNS(t, "sb")
	testenv.Listen(t, sb, netip.AddrPortFrom(netip.MustParseAddr("172.30.7.2"), 80))
	kill(t, child(t, "hold", host, sb))

	published := netip.AddrPortFrom(testenv.UplinkIPv4, 18081)
	if err := reaches(out, published); err != nil {
		t.Fatalf("published port of the killed owner: %v", err)
	}
	d := openDriver(t, host)
	eps := complete(t, d, host, []*nsutil.NS{sb})
	if len(eps) != 1 || eps[0].ID() != "held" || eps[0].IPv4().Addr() != netip.MustParseAddr("172.30.7.2") {
		t.Fatalf("recovered %v, want endpoint held at 172.30.7.2", eps)
	}
	if err := d.GC(ctx, func(*bridge.Endpoint) bool { return false }); err != nil {
		t.Fatal(err)
	}
	if err := reaches(out, published); err == nil {
		t.Error("port still answers after GC")
	}
	complete(t, d, host, []*nsutil.NS{sb})
	n, _ := d.Network(stateNet.Name)
	if err := n.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.NoElements(t, host, "nlbridge")
	testenv.OnlyLoopback(t, sb)
}

func TestLiveCrashLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("30 child processes")
	}
	host, _ := stateEnv(t)
	var sandboxes []*nsutil.NS
	for range 4 {
		sandboxes = append(sandboxes, testenv.NetNS(t, "sb"))
	}
	kills, seen := 30, 0
	for i := range kills {
		c := child(t, "churn", host, sandboxes...)
		time.Sleep(time.Duration(rand.IntN(60)) * time.Millisecond)
		kill(t, c)
		d, err := bridge.Open(ctx, bridge.Options{NetNS: host.Path()})
		if err != nil {
			t.Fatalf("kill %d: %v", i, err)
		}
		if err := d.GC(ctx, nil); err != nil {
			t.Fatalf("kill %d: gc: %v", i, err)
		}
		seen += len(complete(t, d, host, sandboxes))
		d.Close()
		if t.Failed() {
			t.Fatalf("after kill %d", i)
		}
	}
	if seen == 0 {
		t.Fatal("no kill left a complete endpoint: the children did not get to attach")
	}
	t.Logf("%d kills, %d complete endpoints recovered in all", kills, seen)
	d := openDriver(t, host)
	if err := d.GC(ctx, func(*bridge.Endpoint) bool { return false }); err != nil {
		t.Fatal(err)
	}
	complete(t, d, host, sandboxes)
	if n, ok := d.Network(stateNet.Name); ok {
		if err := n.Delete(ctx); err != nil {
			t.Fatal(err)
		}
	}
	testenv.NoElements(t, host, "nlbridge")
}

func TestLiveTwoProcesses(t *testing.T) {
	host, _ := stateEnv(t)
	var a, b []*nsutil.NS
	for range 12 {
		a = append(a, testenv.NetNS(t, "a"))
		b = append(b, testenv.NetNS(t, "b"))
	}
	var wg sync.WaitGroup
	wg.Go(func() { child(t, "attach", host, a...).Wait() })
	wg.Go(func() { child(t, "attach", host, b...).Wait() })
	wg.Wait()
	d := openDriver(t, host)
	eps := complete(t, d, host, append(a, b...))
	if len(eps) != 24 {
		t.Fatalf("%d endpoints, want 24", len(eps))
	}
	addrs, macs := map[netip.Addr]bool{}, map[string]bool{}
	for _, e := range eps {
		addrs[e.IPv4().Addr()], macs[e.MAC().String()] = true, true
	}
	if len(addrs) != 24 || len(macs) != 24 {
		t.Errorf("%d distinct addresses and %d MACs for 24 endpoints", len(addrs), len(macs))
	}
	for _, sb := range append(a, b...) {
		if err := testenv.Ping(sb, stateNet.IPv4.Addr(), 2*time.Second); err != nil {
			t.Errorf("%s: %v", sb.Path(), err)
		}
	}
	n, _ := d.Network(stateNet.Name)
	if err := n.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLiveFirewallHeals(t *testing.T) {
	host, out := stateEnv(t)
	d := openDriver(t, host)
	n1 := createNetwork(t, d, stateNet)
	n2 := createNetwork(t, d, bridge.NetworkConfig{Name: "nlbs1", IPv4: netip.MustParsePrefix("172.30.8.1/24")})
	sb, other, gone := testenv.NetNS(t, "sb"), testenv.NetNS(t, "other"), testenv.NetNS(t, "gone")
	e := attach(t, n1, bridge.EndpointConfig{NetNS: sb.Path(), Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 18082, ContainerPort: 80}}})
	eo := attach(t, n2, bridge.EndpointConfig{NetNS: other.Path()})
	eg, err := n1.Attach(ctx, bridge.EndpointConfig{NetNS: gone.Path(), Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 18083, ContainerPort: 80}}})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Listen(t, sb, netip.AddrPortFrom(e.IPv4().Addr(), 80))
	testenv.Listen(t, gone, netip.AddrPortFrom(eg.IPv4().Addr(), 80))
	published, publishedGone := netip.AddrPortFrom(testenv.UplinkIPv4, 18082), netip.AddrPortFrom(testenv.UplinkIPv4, 18083)
	isolatedAP := netip.AddrPortFrom(eo.IPv4().Addr(), 81)
	testenv.Listen(t, other, isolatedAP)

	// healed polls until the port, NAT and isolation work again, within
	// a second.
	outPort := uint16(9100)
	healed := func(what string) {
		t.Helper()
		outPort++
		deadline := time.Now().Add(time.Second)
		for {
			_, err := testenv.Dial(out, published, 100*time.Millisecond)
			_, leak := testenv.Dial(sb, isolatedAP, 100*time.Millisecond)
			if err == nil && leak != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s: not healed within 1 s: published port: %v; other network reached: %v", what, err, leak == nil)
			}
		}
		if got := peerOf(t, sb, out, netip.AddrPortFrom(testenv.OutsideIPv4, outPort)); got != testenv.UplinkIPv4 {
			t.Errorf("after %s: outside saw %s, want the masqueraded %s", what, got, testenv.UplinkIPv4)
		}
	}
	healed("attach")
	for _, change := range [][]string{
		{"flush", "ruleset"},
		{"delete", "table", "inet", "nlbridge"},
		{"insert", "rule", "inet", "nlbridge", "prerouting", "return"},
	} {
		testenv.Nft(t, host, change...)
		healed(strings.Join(change, " "))
	}
	// Detach after a flush works, and a detached endpoint's port does not
	// come back with the next repair.
	testenv.Nft(t, host, "flush", "ruleset")
	if err := eg.Detach(ctx); err != nil {
		t.Fatalf("detach with the table gone: %v", err)
	}
	healed("flush, then detach")
	if err := reaches(out, publishedGone); err == nil {
		t.Error("the detached endpoint's port came back")
	}
	if m := testenv.Nft(t, host, "list", "map", "inet", "nlbridge", "portsany4"); strings.Contains(m, "18083") {
		t.Errorf("the detached endpoint's element came back:\n%s", m)
	}
	// Other tables are not touched.
	testenv.Nft(t, host, "add", "table", "inet", "theirs")
	testenv.Nft(t, host, "add", "chain", "inet", "theirs", "c")
	testenv.Nft(t, host, "flush", "chain", "inet", "nlbridge", "forward")
	healed("flush chain forward")
	if !strings.Contains(testenv.Nft(t, host, "list", "tables"), "theirs") {
		t.Error("another table was removed")
	}
	testenv.Nft(t, host, "delete", "table", "inet", "theirs")
}

func TestLiveDeleteRacesDetach(t *testing.T) {
	d, _ := hostDriver(t)
	n, err := d.CreateNetwork(ctx, stateNet)
	if err != nil {
		t.Fatal(err)
	}
	var eps []*bridge.Endpoint
	for range 6 {
		sb := testenv.NetNS(t, "sb")
		e, err := n.Attach(ctx, bridge.EndpointConfig{NetNS: sb.Path(), Advertise: &bridge.Advertise{},
			Ports: []bridge.PortMapping{{Proto: bridge.TCP, ContainerPort: 80}}})
		if err != nil {
			t.Fatal(err)
		}
		eps = append(eps, e)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(eps)+1)
	for i, e := range eps {
		wg.Go(func() { errs[i] = e.Detach(ctx) })
	}
	wg.Go(func() { errs[len(eps)] = n.Delete(ctx) })
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
	if len(n.Endpoints()) != 0 {
		t.Errorf("endpoints left: %v", n.Endpoints())
	}
}

func TestLiveGCSandboxDied(t *testing.T) {
	host, out := stateEnv(t)
	d := openDriver(t, host)
	n := createNetwork(t, d, stateNet)
	keepNS := testenv.NetNS(t, "keep")
	keep := attach(t, n, bridge.EndpointConfig{ID: "keep", NetNS: keepNS.Path()})
	sb, err := nsutil.Create("", "nlbt-dies-"+fmt.Sprint(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	e, err := n.Attach(ctx, bridge.EndpointConfig{ID: "dies", NetNS: sb.Path(),
		Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 18084, ContainerPort: 80}}})
	if err != nil {
		t.Fatal(err)
	}
	ip := e.IPv4().Addr()
	sb.Close()
	if err := nsutil.Delete(sb.Path()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for slices.Contains(testenv.Links(t, host), e.HostIfName()) {
		if time.Now().After(deadline) {
			t.Fatal("veth outlived its sandbox")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := d.GC(ctx, func(e *bridge.Endpoint) bool { return true }); err != nil {
		t.Fatal(err)
	}
	if m := testenv.Nft(t, host, "list", "map", "inet", "nlbridge", "portsany4"); strings.Contains(m, ip.String()) {
		t.Errorf("GC left the dead sandbox's element:\n%s", m)
	}
	if got := n.Endpoints(); len(got) != 1 || got[0] != keep {
		t.Errorf("endpoints after GC: %v, want only keep", got)
	}
	_ = out
}

// After Close every operation fails with ErrClosed and changes nothing.
func TestLiveClosedDriver(t *testing.T) {
	d, host := hostDriver(t)
	n := createNetwork(t, d, stateNet)
	sb := testenv.NetNS(t, "sb")
	e := attach(t, n, bridge.EndpointConfig{NetNS: sb.Path()})
	d2, err := bridge.Open(ctx, bridge.Options{NetNS: host.Path()})
	if err != nil {
		t.Fatal(err)
	}
	n2, _ := d2.Network(stateNet.Name)
	e2, _ := n2.Endpoint(e.ID())
	d2.Close()
	_, errCreate := d2.CreateNetwork(ctx, bridge.NetworkConfig{Name: "nlbs9"})
	_, errAttach := n2.Attach(ctx, bridge.EndpointConfig{NetNS: sb.Path()})
	for what, err := range map[string]error{"CreateNetwork": errCreate, "Attach": errAttach,
		"Detach": e2.Detach(ctx), "Delete": n2.Delete(ctx), "GC": d2.GC(ctx, nil)} {
		if !errors.Is(err, bridge.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", what, err)
		}
	}
	// The first driver's network and endpoint are untouched.
	if got := n.Endpoints(); len(got) != 1 || got[0] != e {
		t.Errorf("endpoints = %v", got)
	}
	if err := testenv.Ping(sb, stateNet.IPv4.Addr(), 2*time.Second); err != nil {
		t.Error(err)
	}
}

// A host port published by an endpoint of another process (dead, so
// nothing holds its socket) on another network is taken: the claim checks
// the firewall, not just the networks this driver has read.
func TestLiveHostPortTakenAcrossProcesses(t *testing.T) {
	host, _ := stateEnv(t)
	sb, sb2 := testenv.NetNS(t, "sb"), testenv.NetNS(t, "sb2")
	kill(t, child(t, "hold", host, sb)) // tcp 18081 on nlbs0
	d := openDriver(t, host)
	n := createNetwork(t, d, bridge.NetworkConfig{Name: "nlbs1", IPv4: netip.MustParsePrefix("172.30.9.1/24")})
	for _, m := range []bridge.PortMapping{
		{Proto: bridge.TCP, HostPort: 18081, ContainerPort: 80},
		{Proto: bridge.TCP, HostIP: testenv.UplinkIPv4, HostPort: 18081, ContainerPort: 80},
	} {
		_, err := n.Attach(ctx, bridge.EndpointConfig{NetNS: sb2.Path(), Ports: []bridge.PortMapping{m}})
		if !isKind(err, bridge.ErrConflict, "Ports[0]") {
			t.Errorf("publish %v taken by the dead process: %v, want ErrConflict on Ports[0]", m, err)
		}
	}
	testenv.OnlyLoopback(t, sb2)
	// Another port, and the same one over UDP, are free.
	attach(t, n, bridge.EndpointConfig{NetNS: sb2.Path(), Ports: []bridge.PortMapping{
		{Proto: bridge.TCP, HostPort: 18085, ContainerPort: 80}, {Proto: bridge.UDP, HostPort: 18081, ContainerPort: 80}}})
	if err := d.GC(ctx, func(e *bridge.Endpoint) bool { return e.ID() != "held" }); err != nil {
		t.Fatal(err)
	}
	if n0, ok := d.Network(stateNet.Name); ok {
		t.Cleanup(func() { n0.Delete(ctx) })
	}
}
