// Command nlbridge-demo builds a bridge network inside throwaway network
// namespaces, attaches sandboxes, proves they talk (ICMP and TCP, IPv4 and
// IPv6), publishes a port and reaches it, measures attach/detach churn,
// prints per-step timings and removes everything it made. It never touches the machine's own namespace. Run it
// as root: `make demo`.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/internal/nl"
	"github.com/nlbridge/bridge/internal/testenv"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

func main() {
	sandboxes := flag.Int("sandboxes", 3, "sandboxes to attach and connect")
	churn := flag.Int("churn", 100, "extra endpoints to attach and then detach, for timing")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "nlbridge-demo: needs root (it creates network namespaces)")
		os.Exit(2)
	}
	d := &demo{tag: "nlbdemo-" + randHex(3) + "-"}
	err := d.run(context.Background(), *sandboxes, *churn)
	if cerr := d.cleanup(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("OK: everything the demo made is gone")
}

type demo struct {
	tag string
	nss []*nsutil.NS
}

func (d *demo) netns(name string) (*nsutil.NS, error) {
	ns, err := nsutil.Create("", d.tag+name)
	if err == nil {
		d.nss = append(d.nss, ns)
	}
	return ns, err
}

// step runs fn and prints how long it took.
func step(name string, fn func() error) error {
	t0 := time.Now()
	err := fn()
	fmt.Printf("  %-52s %9.3f ms\n", name, float64(time.Since(t0).Microseconds())/1000)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func (d *demo) run(ctx context.Context, nSandboxes, churn int) error {
	host, err := d.netns("host")
	if err != nil {
		return err
	}
	fmt.Printf("host namespace %s, %d sandboxes, %d churn endpoints\n", host.Path(), nSandboxes, churn)
	var drv *bridge.Driver
	if err := step("open driver", func() (err error) {
		drv, err = bridge.Open(ctx, bridge.Options{NetNS: host.Path()})
		return err
	}); err != nil {
		return err
	}
	defer drv.Close()

	var nw *bridge.Network
	cfg := bridge.NetworkConfig{Name: "nlbdemo0", MTU: 1500,
		IPv4: netip.MustParsePrefix("172.30.0.1/16"), IPv6: netip.MustParsePrefix("fd30::1/64")}
	if err := step("create network nlbdemo0 (172.30.0.1/16, fd30::1/64)", func() (err error) {
		nw, err = drv.CreateNetwork(ctx, cfg)
		return err
	}); err != nil {
		return err
	}

	var eps []*bridge.Endpoint
	var sbs []*nsutil.NS
	for i := range nSandboxes {
		sb, err := d.netns(fmt.Sprintf("sb%d", i))
		if err != nil {
			return err
		}
		sbs = append(sbs, sb)
		if err := step("attach "+sb.Path(), func() error {
			ep, err := nw.Attach(ctx, bridge.EndpointConfig{NetNS: sb.Path(),
				Sysctls: []string{"net.ipv4.conf.IFNAME.arp_notify=1"}})
			if err == nil {
				eps = append(eps, ep)
				fmt.Printf("    %s %s %s %s <-> host %s\n", ep.IfName(), ep.MAC(), ep.IPv4(), ep.IPv6(), ep.HostIfName())
			}
			return err
		}); err != nil {
			return err
		}
	}

	fmt.Println("connectivity:")
	for i := range eps {
		for j, to := range eps {
			if i == j {
				continue
			}
			for _, dst := range []netip.Addr{to.IPv4().Addr(), to.IPv6().Addr()} {
				if err := step(fmt.Sprintf("ping sb%d -> sb%d %s", i, j, dst), func() error {
					return testenv.Ping(sbs[i], dst, 2*time.Second)
				}); err != nil {
					return err
				}
			}
		}
		if err := step(fmt.Sprintf("ping sb%d -> gateway %s", i, cfg.IPv4.Addr()), func() error {
			return testenv.Ping(sbs[i], cfg.IPv4.Addr(), 2*time.Second)
		}); err != nil {
			return err
		}
	}
	if err := d.publish(ctx, host, nw, cfg); err != nil {
		return err
	}
	if len(eps) > 1 {
		ap := netip.AddrPortFrom(eps[1].IPv6().Addr(), 8080)
		_, stop, err := testenv.Serve(sbs[1], ap)
		if err != nil {
			return err
		}
		err = step("tcp sb0 -> sb1 "+ap.String(), func() error {
			got, err := testenv.Dial(sbs[0], ap, 2*time.Second)
			if err == nil && !strings.HasPrefix(got, "hello") {
				err = fmt.Errorf("unexpected greeting %q", got)
			}
			return err
		})
		stop()
		if err != nil {
			return err
		}
	}

	if churn > 0 {
		if err := d.churn(ctx, nw, churn, "announcements off", &bridge.Advertise{}); err != nil {
			return err
		}
		if err := d.churn(ctx, nw, churn, "first GARP+NA before return", nil); err != nil {
			return err
		}
	}

	fmt.Println("teardown:")
	for i, ep := range eps {
		if err := step(fmt.Sprintf("detach sb%d", i), func() error { return ep.Detach(ctx) }); err != nil {
			return err
		}
	}
	if err := step("delete network", func() error { return nw.Delete(ctx) }); err != nil {
		return err
	}
	return onlyLoopback(host)
}

// publish attaches a sandbox running a TCP server on port 80, published
// as host port 8080, and reaches it from the host via 127.0.0.1 and the
// gateway address, and from a neighbour sandbox (hairpin through the host).
func (d *demo) publish(ctx context.Context, host *nsutil.NS, nw *bridge.Network, cfg bridge.NetworkConfig) error {
	fmt.Println("published port:")
	c, err := host.Dial(unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	_, err = nl.Exec(c, link.UpMsg(1)) // lo up in the demo's host namespace, as on any host
	c.Close()
	if err != nil {
		return err
	}
	web, err := d.netns("web")
	if err != nil {
		return err
	}
	nbr, err := d.netns("client")
	if err != nil {
		return err
	}
	var ep *bridge.Endpoint
	if err := step("attach "+web.Path()+" publishing tcp 8080->80", func() (err error) {
		ep, err = nw.Attach(ctx, bridge.EndpointConfig{NetNS: web.Path(),
			Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}})
		return err
	}); err != nil {
		return err
	}
	defer ep.Detach(ctx)
	client, err := nw.Attach(ctx, bridge.EndpointConfig{NetNS: nbr.Path()})
	if err != nil {
		return err
	}
	defer client.Detach(ctx)
	_, stop, err := testenv.Serve(web, netip.AddrPortFrom(ep.IPv4().Addr(), 80))
	if err != nil {
		return err
	}
	defer stop()
	for _, tc := range []struct {
		name string
		from *nsutil.NS
		dst  netip.Addr
	}{
		{"host -> 127.0.0.1:8080", host, netip.MustParseAddr("127.0.0.1")},
		{"host -> " + cfg.IPv4.Addr().String() + ":8080", host, cfg.IPv4.Addr()},
		{"neighbour sandbox -> " + cfg.IPv4.Addr().String() + ":8080 (hairpin)", nbr, cfg.IPv4.Addr()},
	} {
		if err := step(tc.name, func() error {
			got, err := testenv.Dial(tc.from, netip.AddrPortFrom(tc.dst, 8080), 2*time.Second)
			if err == nil && !strings.HasPrefix(got, "hello") {
				err = fmt.Errorf("unexpected greeting %q", got)
			}
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// churn attaches n endpoints (one sandbox each), then detaches them, and
// prints the median and p90 of each.
func (d *demo) churn(ctx context.Context, nw *bridge.Network, n int, mode string, adv *bridge.Advertise) error {
	var sbs []*nsutil.NS
	for i := range n {
		sb, err := d.netns(fmt.Sprintf("churn%d-%d", len(d.nss), i))
		if err != nil {
			return err
		}
		sbs = append(sbs, sb)
	}
	var att, det []time.Duration
	var eps []*bridge.Endpoint
	for _, sb := range sbs {
		t0 := time.Now()
		ep, err := nw.Attach(ctx, bridge.EndpointConfig{NetNS: sb.Path(), Advertise: adv})
		att = append(att, time.Since(t0))
		if err != nil {
			return err
		}
		eps = append(eps, ep)
	}
	for _, ep := range eps {
		t0 := time.Now()
		if err := ep.Detach(ctx); err != nil {
			return err
		}
		det = append(det, time.Since(t0))
	}
	fmt.Printf("churn over %d endpoints (one sandbox each), %s:\n", n, mode)
	fmt.Printf("  %-52s median %7.3f ms  p90 %7.3f ms\n", "attach", ms(pct(att, 50)), ms(pct(att, 90)))
	fmt.Printf("  %-52s median %7.3f ms  p90 %7.3f ms\n", "detach", ms(pct(det, 50)), ms(pct(det, 90)))
	return nil
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// onlyLoopback checks that the host namespace holds nothing but lo.
func onlyLoopback(ns *nsutil.NS) error {
	c, err := ns.Dial(unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer c.Close()
	links, err := link.List(c)
	if err != nil {
		return err
	}
	for _, l := range links {
		if l.Name != "lo" {
			return fmt.Errorf("left behind in %s: %s", ns.Path(), l.Name)
		}
	}
	return nil
}

// cleanup removes every namespace the demo made.
func (d *demo) cleanup() error {
	var errs []error
	for _, ns := range d.nss {
		ns.Close()
		errs = append(errs, nsutil.Delete(ns.Path()))
	}
	ents, _ := os.ReadDir(nsutil.DefaultNetNSDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), d.tag) {
			errs = append(errs, fmt.Errorf("namespace left behind: %s", e.Name()))
		}
	}
	return errors.Join(errs...)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
