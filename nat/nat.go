// Package nat is the firewall of bridge networks over nf_tables netlink:
// masquerade and SNAT, published ports (DNAT, also from the host itself and
// hairpin), isolation between networks, internal networks, and the NAT and
// routed gateway modes, the loopback and RA guards and anti-spoofing (see
// Guard), plus conntrack cleanup. Everything lives in one inet table and
// one bridge-family table of the same name that the Firewall owns; each
// change is one atomic batch.
//
// The rules are fixed and created once; networks, ports and endpoints are
// set and map elements keyed by bridge name, by address, protocol and
// port, or by bridge-port name, so adding one costs the same however many
// exist.
//
// On its own: Open gives the Firewall of a table in a namespace, and New
// the same on conns of one's own (a test's, or another kernel's, as the
// bridge driver's on its bridgetest fake); Rebuild builds it from a list
// of networks, ports and guards, Apply changes it in one batch, Check
// compares it with what Rebuild would make; FlushConntrack removes an
// address's conntrack entries on a conn of the caller's. Every Firewall
// method takes a ctx, whose deadline (or cancel) reaches the netlink
// socket. A *Firewall is safe for concurrent use.
package nat

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/internal/nl"
	"golang.org/x/sys/unix"
)

// DefaultTable is the table name used when none is given.
const DefaultTable = "nlbridge"

// Firewall owns one inet and one bridge table in one network namespace.
type Firewall struct {
	mu   sync.Mutex // one call at a time: the conn buffers messages until Flush, and the socket has one deadline
	dial func() (*nftables.Conn, *netlink.Conn, error)
	c    *nftables.Conn
	sock *netlink.Conn // the socket c sends on: deadlines, and Check's dumps that google/nftables lacks
	t    *nftables.Table
	bt   *nftables.Table // the guard: bridge family, same name (guard.go)
	sets map[string]*nftables.Set
}

// Open returns the firewall of the table ("" = DefaultTable) in the
// namespace of fd, on a lasting netlink socket of its own. It changes
// nothing: Check tells whether the table is as this package builds it,
// Rebuild builds it.
func Open(fd int, table string) (*Firewall, error) {
	return New(table, func() (c *nftables.Conn, sock *netlink.Conn, err error) {
		c, err = nftables.New(nftables.WithNetNSFd(fd), nftables.AsLasting(),
			nftables.WithSockOptions(func(nc *netlink.Conn) error { sock = nc; return nil }))
		return c, sock, err
	})
}

// New is Open on conns that dial opens, for tests (nftables.WithTestDial)
// and other kernels: c, an nftables conn, and sock, the NETLINK_NETFILTER
// socket that c sends on (see nftables.WithSockOptions), or one that
// reaches the same kernel. Calls set their ctx's deadline on sock, and
// Check dumps rules on it. A call that its ctx cut short may leave
// answers queued on the socket, so the next call dials anew. New dials
// once; it touches nothing else. Close closes the conns.
func New(table string, dial func() (c *nftables.Conn, sock *netlink.Conn, err error)) (*Firewall, error) {
	c, sock, err := dial()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	if table == "" {
		table = DefaultTable
	}
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
	bt := &nftables.Table{Name: table, Family: nftables.TableFamilyBridge}
	f := &Firewall{dial: dial, c: c, sock: sock, t: t, bt: bt, sets: map[string]*nftables.Set{}}
	for _, s := range append(sets(t), guardSets(bt)...) {
		f.sets[s.Name] = s
	}
	return f, nil
}

// use takes the conns for one call and puts ctx's deadline on the
// socket. The returned func ends the call: a call that failed once ctx
// was done counts as cut short (google/nftables' reads keep only the text
// of the socket's error). It then wraps the ctx's error into *err and
// replaces the conns, as the kernel may still answer on the old socket.
func (f *Firewall) use(ctx context.Context) (done func(err *error)) {
	f.mu.Lock()
	stop := nl.Watch(ctx, f.sock)
	return func(err *error) {
		stop()
		if cause := nl.Done(ctx); *err != nil && cause != nil {
			if !errors.Is(*err, cause) {
				*err = fmt.Errorf("%w: %w", cause, *err)
			}
			if c, sock, derr := f.dial(); derr == nil {
				f.c.CloseLasting()
				f.sock.Close()
				f.c, f.sock = c, sock
			}
		}
		f.mu.Unlock()
	}
}

// Rebuild replaces the tables, atomically, by ones with the fixed sets,
// chains and rules and the elements of the networks, ports and guards
// given: one batch, so no packet ever sees a table without them.
func (f *Firewall) Rebuild(ctx context.Context, nets []Network, ports []Port, guards []Guard) (err error) {
	defer f.use(ctx)(&err)
	c, t := f.c, f.t
	// add + delete + add: clean tables whether or not they existed.
	for _, t := range []*nftables.Table{t, f.bt} {
		c.AddTable(t)
		c.DelTable(t)
		c.AddTable(t)
	}
	for _, s := range sets(t) {
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("declare set %s: %w", s.Name, err)
		}
		f.sets[s.Name] = s
	}
	for _, ch := range taggedChains(t) {
		c.AddChain(ch.c)
		for i, r := range ch.rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch.c, Exprs: r, UserData: ch.tags[i]})
		}
	}
	if err := addGuard(c, f.bt, f.sets); err != nil {
		return fmt.Errorf("declare guard: %w", err)
	}
	b := batch{f}
	for _, n := range nets {
		n.elements(b, b.add)
	}
	bySet(ports, b.add)
	grouped(b.add, func(op func(string, ...nftables.SetElement)) {
		for _, g := range guards {
			g.elements(op)
		}
	})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("create tables inet and bridge %s: %w", t.Name, err)
	}
	return nil
}

// Table is the table's name.
func (f *Firewall) Table() string { return f.t.Name }

// Close closes the netlink socket. The table stays, as iptables rules stay
// when a daemon stops; a later Open replaces it.
func (f *Firewall) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return errors.Join(f.c.CloseLasting(), f.sock.Close())
}

// Remove deletes the tables and everything in them.
func (f *Firewall) Remove(ctx context.Context) (err error) {
	defer f.use(ctx)(&err)
	f.c.DelTable(f.t)
	f.c.DelTable(f.bt)
	return f.c.Flush()
}

// batch collects element changes for one transaction.
type batch struct{ f *Firewall }

// add and del queue element changes. They fail only on encoding errors,
// which the fixed-size keys built in this package rule out.
func (b batch) add(set string, els ...nftables.SetElement) {
	if err := b.f.c.SetAddElements(b.f.sets[set], els); err != nil {
		panic(fmt.Sprintf("nat: encode elements of %s: %v", set, err))
	}
}

func (b batch) del(set string, els ...nftables.SetElement) {
	if err := b.f.c.SetDeleteElements(b.f.sets[set], els); err != nil {
		panic(fmt.Sprintf("nat: encode elements of %s: %v", set, err))
	}
}

// run builds the batch with fn and sends it as one atomic transaction: the
// kernel applies all of it or none.
func (f *Firewall) run(ctx context.Context, what string, fn func(b batch)) error {
	return f.runOnce(ctx, what, fn)
}

// runIgnoringMissing is run for removals: what is already gone (ENOENT,
// also when the table is gone) does not count. It sends all (nil = every
// one of each) as one batch; if the kernel refuses it, each removal is
// retried on its own, so the others still go.
func (f *Firewall) runIgnoringMissing(ctx context.Context, what string, all func(b batch), each []func(b batch)) error {
	if all == nil {
		all = func(b batch) {
			for _, fn := range each {
				fn(b)
			}
		}
	}
	err := f.runOnce(ctx, what, all)
	if !errors.Is(err, unix.ENOENT) {
		return err
	}
	var errs []error
	for _, fn := range each {
		if err := f.runOnce(ctx, what, fn); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (f *Firewall) runOnce(ctx context.Context, what string, fn func(b batch)) (err error) {
	defer f.use(ctx)(&err)
	fn(batch{f})
	if err := f.c.Flush(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
