package bridge_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/bridgetest"
	"github.com/nlbridge/bridge/link"
	"golang.org/x/sys/unix"
)

// Unit tests of the Driver on bridgetest's in-memory kernel: the
// production code, no root, no namespaces.

var (
	v4net = netip.MustParsePrefix("172.18.0.1/16")
	v6net = netip.MustParsePrefix("fd18::1/64")
)

// fake is a kernel with a driver open on it.
type fake struct {
	t   *testing.T
	ctx context.Context
	k   *bridgetest.Kernel
	d   *bridge.Driver
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newFake opens a driver on a new kernel; the driver closes with the test.
func newFake(t *testing.T, opts bridge.Options) *fake {
	t.Helper()
	f := &fake{t: t, ctx: context.Background(), k: bridgetest.New()}
	f.d = f.open(opts)
	return f
}

// open opens another driver on the kernel (a restart, or another process).
func (f *fake) open(opts bridge.Options) *bridge.Driver {
	f.t.Helper()
	opts.Kernel = f.k
	if opts.Logger == nil {
		opts.Logger = discardLog()
	}
	d, err := bridge.Open(f.ctx, opts)
	if err != nil {
		f.t.Fatalf("open: %v", err)
	}
	f.t.Cleanup(func() { d.Close() })
	return d
}

// sandbox creates a namespace /run/netns/<name>.
func (f *fake) sandbox(name string) string {
	f.t.Helper()
	path := "/run/netns/" + name
	if err := f.k.AddNS(path); err != nil {
		f.t.Fatal(err)
	}
	return path
}

func (f *fake) network(cfg bridge.NetworkConfig) *bridge.Network {
	f.t.Helper()
	n, err := f.d.CreateNetwork(f.ctx, cfg)
	if err != nil {
		f.t.Fatalf("create network %s: %v", cfg.Name, err)
	}
	return n
}

func (f *fake) attach(n *bridge.Network, cfg bridge.EndpointConfig) *bridge.Endpoint {
	f.t.Helper()
	if cfg.Advertise == nil {
		cfg.Advertise = &bridge.Advertise{} // no background announcements unless asked for
	}
	e, err := n.Attach(f.ctx, cfg)
	if err != nil {
		f.t.Fatalf("attach %s: %v", cfg.NetNS, err)
	}
	return e
}

// settled is the kernel's state once retired devices are deleted.
func (f *fake) settled() string {
	f.t.Helper()
	if err := f.d.Reclaim(f.ctx); err != nil {
		f.t.Fatal(err)
	}
	return f.k.Dump()
}

// has fails unless the dump of the namespace has every line (each a
// substring of one line).
func has(t *testing.T, dump string, lines ...string) {
	t.Helper()
	for _, want := range lines {
		if !strings.Contains(dump, want) {
			t.Errorf("no %q in:\n%s", want, dump)
		}
	}
}

// lacks fails if the dump has any of the strings.
func lacks(t *testing.T, dump string, lines ...string) {
	t.Helper()
	for _, bad := range lines {
		if strings.Contains(dump, bad) {
			t.Errorf("%q in:\n%s", bad, dump)
		}
	}
}

// isErr fails unless err is each of wants (errors.Is).
func isErr(t *testing.T, err error, wants ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", wants)
	}
	if _, ok := err.(*bridge.Error); !ok {
		t.Errorf("%v: a %T, not a *bridge.Error", err, err)
	}
	for _, w := range wants {
		if !errors.Is(err, w) {
			t.Errorf("%v: not %v", err, w)
		}
	}
}

// field fails unless err is a *bridge.Error naming that field.
func field(t *testing.T, err error, name string) {
	t.Helper()
	var be *bridge.Error
	if !errors.As(err, &be) || be.Field != name {
		t.Errorf("%v: want an error naming field %s", err, name)
	}
}

// links lists the names of the links in the namespace at path.
func (f *fake) links(path string) []string {
	f.t.Helper()
	c, err := f.k.Dial(path, unix.NETLINK_ROUTE)
	if err != nil {
		f.t.Fatal(err)
	}
	defer c.Close()
	ls, err := link.List(c)
	if err != nil {
		f.t.Fatal(err)
	}
	var names []string
	for _, l := range ls {
		names = append(names, l.Name)
	}
	return names
}

// aliasIs matches an RTM_NEWLINK request setting an alias with prefix.
func aliasIs(prefix string) func(netlink.Message) bool {
	return func(m netlink.Message) bool {
		var lm rtnetlink.LinkMessage
		if lm.UnmarshalBinary(m.Data) != nil || lm.Attributes == nil || lm.Attributes.Alias == nil {
			return false
		}
		return strings.HasPrefix(*lm.Attributes.Alias, prefix)
	}
}

// eventually polls cond until it holds, failing after 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// same fails if got and want differ, showing the lines only in one.
func same(t *testing.T, what, got, want string) {
	t.Helper()
	if got == want {
		return
	}
	count := map[string]int{}
	for _, l := range strings.Split(want, "\n") {
		count[l]++
	}
	var extra []string
	for _, l := range strings.Split(got, "\n") {
		if count[l] > 0 {
			count[l]--
			continue
		}
		extra = append(extra, "+ "+l)
	}
	for _, l := range strings.Split(want, "\n") {
		if count[l] > 0 {
			count[l]--
			extra = append(extra, "- "+l)
		}
	}
	if len(extra) == 0 {
		extra = []string{"(same lines, other order)"}
	}
	t.Errorf("%s: the kernel state differs (+ got, - want):\n%s", what, strings.Join(extra, "\n"))
}

// faultType refuses the next request of the type with EPERM.
func faultType(typ uint16) bridgetest.Fault { return bridgetest.Fault{Type: typ} }

// faultAlias refuses the next request that sets a complete record (an
// alias with the prefix and no owner) with EPERM.
func faultAlias(prefix string) bridgetest.Fault {
	match := aliasIs(prefix)
	return bridgetest.Fault{Type: unix.RTM_NEWLINK, Match: func(m netlink.Message) bool {
		var lm rtnetlink.LinkMessage
		return match(m) && lm.UnmarshalBinary(m.Data) == nil && !strings.Contains(*lm.Attributes.Alias, "owner=")
	}}
}

// contextCancelled is a context that is already done.
func contextCancelled() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx, cancel
}

// syncBuffer is a log destination safe for the driver's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
