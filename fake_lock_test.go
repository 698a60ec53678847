package bridge_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/bridgetest"
	"golang.org/x/sys/unix"
)

// Waiting for the host lock honours ctx: a wait that the deadline cuts
// short fails with an *Error wrapping context.DeadlineExceeded and leaves
// nothing behind, whether the holder is another process or another
// operation of the same driver.

// holdHostLock takes the host lock as another process would, until the
// returned func is called.
func (f *fake) holdHostLock() (release func()) {
	f.t.Helper()
	ns, err := f.k.System().OpenNS("")
	if err != nil {
		f.t.Fatal(err)
	}
	defer ns.Close()
	l, err := f.k.System().Lock(context.Background(), ns.ID())
	if err != nil {
		f.t.Fatal(err)
	}
	return func() { l.Close() }
}

// waitCutShort runs op with a short deadline and checks that it fails with
// the deadline, while the lock is held, and leaves the kernel as it was.
func (f *fake) waitCutShort(what string, op func(ctx context.Context) error) {
	f.t.Helper()
	before := f.k.Dump()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	err := op(ctx)
	isErr(f.t, err, context.DeadlineExceeded)
	var be *bridge.Error
	if !errors.As(err, &be) {
		f.t.Errorf("%s: %T is no *bridge.Error", what, err)
	}
	same(f.t, "after "+what, f.k.Dump(), before)
}

func TestFakeLockWaitOtherProcess(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	box := f.sandbox("c1")
	cfg := bridge.EndpointConfig{NetNS: box, ID: "c1",
		Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}}
	release := f.holdHostLock()
	f.waitCutShort("the create", func(ctx context.Context) error {
		_, err := f.d.CreateNetwork(ctx, bridge.NetworkConfig{Name: "br1", IPv4: netip.MustParsePrefix("10.9.0.1/24")})
		return err
	})
	f.waitCutShort("the attach", func(ctx context.Context) error {
		_, err := n.Attach(ctx, cfg)
		return err
	})
	f.waitCutShort("the gc", func(ctx context.Context) error { return f.d.GC(ctx, nil) })
	f.waitCutShort("the delete", n.Delete)
	release()
	if eps := n.Endpoints(); len(eps) != 0 {
		t.Errorf("endpoints %v", eps)
	}
	// The cut-short waits took nothing: the lock, the ID, the address and
	// the host port are free.
	e := f.attach(n, cfg)
	if err := e.Detach(f.ctx); err != nil {
		t.Fatal(err)
	}
	f.network(bridge.NetworkConfig{Name: "br1", IPv4: netip.MustParsePrefix("10.9.0.1/24")})
}

// Another operation of the same driver holds the lock (held up inside the
// kernel): the wait for this process's holder ends with the ctx too.
func TestFakeLockWaitSameDriver(t *testing.T) {
	f := newFake(t, bridge.Options{})
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	box := f.sandbox("c1")
	hit, release := make(chan struct{}), make(chan struct{})
	f.k.FailNext(bridgetest.Fault{Type: unix.RTM_NEWLINK, NetNS: bridgetest.HostNS, Hook: func() { close(hit); <-release }})
	created := make(chan error, 1)
	go func() {
		_, err := f.d.CreateNetwork(context.Background(), bridge.NetworkConfig{Name: "br1", IPv4: netip.MustParsePrefix("10.9.0.1/24")})
		created <- err
	}()
	<-hit // br1's create holds the lock, its bridge not made yet
	f.waitCutShort("the attach", func(ctx context.Context) error {
		_, err := n.Attach(ctx, bridge.EndpointConfig{NetNS: box, ID: "c1"})
		return err
	})
	f.waitCutShort("the delete", n.Delete)
	close(release)
	if err := <-created; err != nil {
		t.Fatal(err)
	}
	f.attach(n, bridge.EndpointConfig{NetNS: box, ID: "c1"})
}
