package bridge_test

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/bridgetest"
	"golang.org/x/sys/unix"
)

// Deadlines reach the sockets: a kernel call that hangs ends at the ctx's
// deadline with an *Error wrapping context.DeadlineExceeded, and the
// operation leaves nothing behind.

// cutShort runs op with a deadline while the kernel holds up the next
// request matching flt; the request stays held until op returns, and is
// then refused, so what the driver undid is all there is. A deadline that
// passed before op reached the request is tried again, twice as long.
func (f *fake) cutShort(flt bridgetest.Fault, op func(ctx context.Context) error) error {
	f.t.Helper()
	for d := 20 * time.Millisecond; ; d *= 2 {
		var armed atomic.Bool
		armed.Store(true)
		hit, release := make(chan struct{}), make(chan struct{})
		held := flt
		held.Errno = unix.EINTR
		held.Match = func(m netlink.Message) bool { return armed.Load() && (flt.Match == nil || flt.Match(m)) }
		held.Hook = func() { close(hit); <-release }
		f.k.FailNext(held)
		ctx, cancel := context.WithTimeout(context.Background(), d)
		err := op(ctx)
		cancel()
		armed.Store(false)
		close(release)
		select {
		case <-hit:
			return err
		default:
		}
		if d > 10*time.Second {
			f.t.Fatalf("the operation never reached the held request: %v", err)
		}
	}
}

// isDeadline fails unless err is an *Error wrapping the ctx's deadline
// and the socket's.
func isDeadline(t *testing.T, err error) {
	t.Helper()
	isErr(t, err, context.DeadlineExceeded, os.ErrDeadlineExceeded)
}

func TestFakeDeadlineAttach(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net, IPv6: v6net})
	box := f.sandbox("c1")
	before := f.settled()
	cfg := bridge.EndpointConfig{NetNS: box, ID: "c1", Advertise: &bridge.Advertise{},
		Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}}
	err := f.cutShort(bridgetest.Fault{Type: unix.RTM_NEWADDR, NetNS: box}, func(ctx context.Context) error {
		_, err := n.Attach(ctx, cfg)
		return err
	})
	isDeadline(t, err)
	same(t, "after the attach", noResidue(f.settled()), noResidue(before))
	if eps := n.Endpoints(); len(eps) != 0 {
		t.Errorf("endpoints %v", eps)
	}
	f.attach(n, cfg) // the ID, the address and the host port are free again
}

func TestFakeDeadlineCreateNetwork(t *testing.T) {
	f := newFake(t, bridge.Options{})
	before := f.k.Dump()
	cfg := bridge.NetworkConfig{Name: "br0", IPv4: v4net}
	err := f.cutShort(bridgetest.Fault{Type: unix.RTM_NEWADDR, NetNS: bridgetest.HostNS}, func(ctx context.Context) error {
		_, err := f.d.CreateNetwork(ctx, cfg)
		return err
	})
	isDeadline(t, err)
	same(t, "after the create", noResidue(f.k.Dump()), noResidue(before))
	if _, ok := f.d.Network("br0"); ok {
		t.Error("the network is listed")
	}
	f.network(cfg)
}

// A detach cut short leaves the endpoint attached, to be detached again.
func TestFakeDeadlineDetach(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	box := f.sandbox("c1")
	before := f.settled()
	e := f.attach(n, bridge.EndpointConfig{NetNS: box, ID: "c1",
		Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}})
	attached := f.k.Dump()
	err := f.cutShort(bridgetest.Fault{Type: unix.RTM_NEWLINK, NetNS: bridgetest.HostNS}, e.Detach)
	isDeadline(t, err)
	same(t, "after the detach", f.k.Dump(), attached)
	if got, ok := n.Endpoint("c1"); !ok || got != e {
		t.Fatalf("endpoint c1: %v, %v", got, ok)
	}
	if err := e.Detach(f.ctx); err != nil {
		t.Fatal(err)
	}
	same(t, "after detaching again", noResidue(f.settled()), noResidue(before))
}

func TestFakeDeadlineDelete(t *testing.T) {
	f := newFake(t, bridge.Options{})
	before := f.k.Dump()
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	made := f.k.Dump()
	err := f.cutShort(bridgetest.Fault{Type: unix.RTM_DELLINK, NetNS: bridgetest.HostNS}, n.Delete)
	isDeadline(t, err)
	same(t, "after the delete", f.k.Dump(), made)
	if err := n.Delete(f.ctx); err != nil {
		t.Fatal(err)
	}
	same(t, "after deleting again", noResidue(f.k.Dump()), noResidue(before))
}

func TestFakeDeadlineOpenReclaim(t *testing.T) {
	f := newFake(t, bridge.Options{})
	err := f.cutShort(bridgetest.Fault{Type: unix.RTM_DELLINK, NetNS: bridgetest.HostNS}, f.d.Reclaim)
	isDeadline(t, err)
	err = f.cutShort(bridgetest.Fault{Type: unix.RTM_DELLINK, NetNS: bridgetest.HostNS}, func(ctx context.Context) error {
		d, err := bridge.Open(ctx, bridge.Options{Kernel: f.k, Logger: discardLog()})
		if err == nil {
			d.Close()
		}
		return err
	})
	isDeadline(t, err)
	if err := f.d.Reclaim(f.ctx); err != nil { // the pool's conn is usable again
		t.Fatal(err)
	}
}

func TestFakeDeadlineGC(t *testing.T) {
	f := newFake(t, bridge.Options{})
	f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	dumpLinks := func(m netlink.Message) bool { return m.Header.Flags&netlink.Dump == netlink.Dump }
	err := f.cutShort(bridgetest.Fault{Type: unix.RTM_GETLINK, NetNS: bridgetest.HostNS, Match: dumpLinks},
		func(ctx context.Context) error { return f.d.GC(ctx, nil) })
	isDeadline(t, err)
	if err := f.d.GC(f.ctx, nil); err != nil {
		t.Fatal(err)
	}
}

// A cancel ends a blocked call too: the conn's deadline is set to now.
func TestFakeCancelBlockedAttach(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	box := f.sandbox("c1")
	before := f.settled()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	f.k.FailNext(bridgetest.Fault{Type: unix.RTM_NEWADDR, NetNS: box, Errno: unix.EINTR, Hook: func() { cancel(); <-release }})
	_, err := n.Attach(ctx, bridge.EndpointConfig{NetNS: box, Advertise: &bridge.Advertise{}})
	close(release)
	isErr(t, err, context.Canceled, os.ErrDeadlineExceeded)
	same(t, "after the attach", noResidue(f.settled()), noResidue(before))
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a cancel reported as a deadline: %v", err)
	}
}

// The conntrack conn gets the deadline too: an attach that reuses an
// address flushes its entries, and a flush that hangs ends the attach.
// The conn is replaced, so the next attach goes through.
func TestFakeDeadlineConntrack(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	cfg := bridge.EndpointConfig{NetNS: f.sandbox("c1"), ID: "c1", Advertise: &bridge.Advertise{}}
	if err := f.attach(n, cfg).Detach(f.ctx); err != nil {
		t.Fatal(err)
	}
	before := f.settled()
	err := f.cutShort(bridgetest.Fault{Type: ctDelete, NetNS: bridgetest.HostNS}, func(ctx context.Context) error {
		_, err := n.Attach(ctx, cfg) // the detached endpoint's address again
		return err
	})
	isDeadline(t, err)
	same(t, "after the attach", noResidue(f.settled()), noResidue(before))
	f.attach(n, cfg)
}

// nf_tables batches and reads get the deadline too: the nf_tables socket
// carries it (a held batch is cut short, then refused), and the firewall
// dials a new socket for the next call, so the operation goes through
// when tried again.
func TestFakeDeadlineNFTables(t *testing.T) {
	f := newFake(t, bridge.Options{})
	before := f.k.Dump()
	cfg := bridge.NetworkConfig{Name: "br0", IPv4: v4net}
	err := f.cutShort(bridgetest.Fault{Type: nftNewSetElem, NetNS: bridgetest.HostNS}, func(ctx context.Context) error {
		_, err := f.d.CreateNetwork(ctx, cfg)
		return err
	})
	isDeadline(t, err)
	same(t, "after the create", noResidue(f.k.Dump()), noResidue(before))
	if _, ok := f.d.Network("br0"); ok {
		t.Error("the network is listed")
	}
	f.network(cfg)

	nftGetSetElem := uint16(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM)
	err = f.cutShort(bridgetest.Fault{Type: nftGetSetElem, NetNS: bridgetest.HostNS},
		func(ctx context.Context) error { return f.d.GC(ctx, nil) })
	isErr(t, err, context.DeadlineExceeded) // google/nftables' reads keep only the socket error's text
	if err := f.d.GC(f.ctx, nil); err != nil {
		t.Fatal(err)
	}

	// Open rebuilds a flushed table in one batch, with the deadline.
	made := f.k.Dump()
	if err := f.k.FlushRuleset(""); err != nil {
		t.Fatal(err)
	}
	nftNewTable := uint16(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE)
	err = f.cutShort(bridgetest.Fault{Type: nftNewTable, NetNS: bridgetest.HostNS}, func(ctx context.Context) error {
		d, err := bridge.Open(ctx, bridge.Options{Kernel: f.k, Logger: discardLog()})
		if err == nil {
			d.Close()
		}
		return err
	})
	isDeadline(t, err)
	f.open(bridge.Options{})
	same(t, "after the open", f.k.Dump(), made)
}

// The kernel applies an nf_tables batch inside sendmsg, so one whose
// answer a cancel cut short may be in: CreateNetwork removes its elements
// too.
func TestFakeCancelAppliedBatch(t *testing.T) {
	f := newFake(t, bridge.Options{})
	before := f.k.Dump()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	f.k.FailNext(bridgetest.Fault{Type: nftNewSetElem, NetNS: bridgetest.HostNS, Hook: func() { cancel(); <-release }})
	_, err := f.d.CreateNetwork(ctx, bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	close(release)
	isErr(t, err, context.Canceled, os.ErrDeadlineExceeded)
	same(t, "after the create", noResidue(f.k.Dump()), noResidue(before))
}

// An attach's two firewall batches, the guard's (in the claim) and the
// ports' (in the commit), get its deadline; a batch that a cancel cut
// short after the kernel applied it is undone with the rest.
func TestFakeDeadlineAttachFirewall(t *testing.T) {
	for _, tc := range []struct{ name, set string }{{"guard", "endpoints"}, {"ports", "portsany4"}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, bridge.Options{})
			n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net, IPv6: v6net})
			box := f.sandbox("c1")
			before := f.settled()
			cfg := bridge.EndpointConfig{NetNS: box, ID: "c1", Advertise: &bridge.Advertise{},
				Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}}
			batch := bridgetest.Fault{Type: nftNewSetElem, NetNS: bridgetest.HostNS, Match: mentions(tc.set)}
			err := f.cutShort(batch, func(ctx context.Context) error {
				_, err := n.Attach(ctx, cfg)
				return err
			})
			isDeadline(t, err)
			same(t, "after the attach cut short", noResidue(f.settled()), noResidue(before))

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			release := make(chan struct{})
			applied := batch
			applied.Hook = func() { cancel(); <-release }
			f.k.FailNext(applied)
			_, err = n.Attach(ctx, cfg)
			close(release)
			isErr(t, err, context.Canceled)
			same(t, "after the attach cancelled", noResidue(f.settled()), noResidue(before))
			f.attach(n, cfg)
		})
	}
}

// The guard batch that replaces the guard of an endpoint whose sandbox
// refused IPv6 (remove the elements with the address, add those without),
// cut short before the kernel applied it: the rollback removes the old
// elements as well as the new ones.
func TestFakeDeadlineGuardReplace(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net, IPv6: v6net})
	box := f.sandbox("c1")
	before := f.settled()
	cfg := bridge.EndpointConfig{NetNS: box, ID: "c1", Advertise: &bridge.Advertise{},
		Sysctls: []string{"net.ipv6.conf.IFNAME.disable_ipv6=1"}}
	err := f.cutShort(bridgetest.Fault{Type: nftDelSetElem, NetNS: bridgetest.HostNS}, func(ctx context.Context) error {
		_, err := n.Attach(ctx, cfg)
		return err
	})
	isDeadline(t, err)
	same(t, "after the attach cut short", noResidue(f.settled()), noResidue(before))
	f.attach(n, cfg)
}
