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
// On its own: Open (or FromConn, on conns of one's own) gives the
// Firewall of a table; Rebuild builds it from a list of networks, ports
// and guards, Apply changes it in one batch, Check compares it with what
// Rebuild would make; FlushConntrack removes an address's conntrack
// entries. A *Firewall is safe for concurrent use.
package nat

import (
	"errors"
	"fmt"
	"sync"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// DefaultTable is the table name used when none is given.
const DefaultTable = "nlbridge"

// Firewall owns one inet and one bridge table in one network namespace.
type Firewall struct {
	mu   sync.Mutex // one batch at a time: the conn buffers messages until Flush
	c    *nftables.Conn
	raw  *netlink.Conn // NETLINK_NETFILTER, for Check's dumps that google/nftables lacks
	t    *nftables.Table
	bt   *nftables.Table // the guard: bridge family, same name (guard.go)
	sets map[string]*nftables.Set
}

// Open returns the firewall of the table in the namespace of fd, using a
// lasting netlink socket. It changes nothing: Check tells whether the table
// is as this package builds it, Rebuild builds it.
func Open(fd int, table string) (*Firewall, error) {
	c, err := nftables.New(nftables.WithNetNSFd(fd), nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	raw, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: fd})
	if err != nil {
		c.CloseLasting()
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return newFirewall(c, raw, table), nil
}

// FromConn returns the firewall of the named table ("" = DefaultTable) on
// c, an nftables conn, and raw, a NETLINK_NETFILTER conn of the same
// namespace (in tests, nftables.WithTestDial and nltest.Dial), without
// touching the kernel; Close closes both.
func FromConn(c *nftables.Conn, raw *netlink.Conn, table string) *Firewall {
	return newFirewall(c, raw, table)
}

func newFirewall(c *nftables.Conn, raw *netlink.Conn, table string) *Firewall {
	if table == "" {
		table = DefaultTable
	}
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
	bt := &nftables.Table{Name: table, Family: nftables.TableFamilyBridge}
	f := &Firewall{c: c, raw: raw, t: t, bt: bt, sets: map[string]*nftables.Set{}}
	for _, s := range append(sets(t), guardSets(bt)...) {
		f.sets[s.Name] = s
	}
	return f
}

// Rebuild replaces the tables, atomically, by ones with the fixed sets,
// chains and rules and the elements of the networks, ports and guards
// given: one batch, so no packet ever sees a table without them.
func (f *Firewall) Rebuild(nets []Network, ports []Port, guards []Guard) error {
	f.mu.Lock()
	defer f.mu.Unlock()
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
func (f *Firewall) Close() error { return errors.Join(f.c.CloseLasting(), f.raw.Close()) }

// Remove deletes the tables and everything in them.
func (f *Firewall) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
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
func (f *Firewall) run(what string, fn func(b batch)) error {
	err := f.runOnce(what, fn)
	return err
}

// runIgnoringMissing is run for removals: what is already gone (ENOENT,
// also when the table is gone) does not count. It sends all (nil = every
// one of each) as one batch; if the kernel refuses it, each removal is
// retried on its own, so the others still go.
func (f *Firewall) runIgnoringMissing(what string, all func(b batch), each []func(b batch)) error {
	if all == nil {
		all = func(b batch) {
			for _, fn := range each {
				fn(b)
			}
		}
	}
	err := f.runOnce(what, all)
	if !errors.Is(err, unix.ENOENT) {
		return err
	}
	var errs []error
	for _, fn := range each {
		if err := f.runOnce(what, fn); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (f *Firewall) runOnce(what string, fn func(b batch)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(batch{f})
	if err := f.c.Flush(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
