package bridge

import (
	"context"
	"errors"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/nat"
	"golang.org/x/sys/unix"
)

// The firewall heals itself: a driver watches nf_tables events in its
// namespace and, after any change to tables, chains, rules or sets (a
// `nft flush ruleset`, a firewalld reload, a deleted table or an edited
// rule), checks its table and rebuilds it from the records in the kernel
// if it differs. When the watch fails, a periodic check takes over.

// healDelay gathers a burst of events into one check.
const healDelay = 20 * time.Millisecond

// healPeriod is the period of the check when events cannot be watched.
const healPeriod = 500 * time.Millisecond

// checkFirewall rebuilds the table if it is not as this package builds it,
// with the elements of every network and endpoint recorded in the kernel.
// Must hold the host lock, with the networks read.
func (d *Driver) checkFirewall(ctx context.Context, c *netlink.Conn) (wrote bool, err error) {
	if d.fw == nil {
		return false, nil
	}
	found, intact, cerr := d.fw.Check(ctx)
	if intact {
		return false, nil
	}
	nets, ports, guards, err := d.firewallState(c)
	if err != nil {
		return false, err
	}
	d.forgetPublished() // the rebuilt table holds only recorded ports
	if err := d.fw.Rebuild(ctx, nets, ports, guards); err != nil {
		return false, errors.Join(cerr, err)
	}
	if found || len(nets) > 0 {
		d.log.Info("nlbridge: firewall table restored", "table", d.fw.Table(), "networks", len(nets), "ports", len(ports))
	}
	return false, nil
}

// firewallState reads what the tables must hold from the records: every
// network's elements, every complete endpoint's ports, and the guard of
// every endpoint (also those still being attached: the guard goes in
// before the veth pair exists).
func (d *Driver) firewallState(c *netlink.Conn) ([]nat.Network, []nat.Port, []nat.Guard, error) {
	var nets []nat.Network
	var ports []nat.Port
	var guards []nat.Guard
	for _, n := range d.networkList() {
		n.mu.Lock()
		deleted := n.deleted
		n.mu.Unlock()
		if deleted { // a Delete took its elements out; it leaves the list after the lock
			continue
		}
		nets = append(nets, n.natNetwork())
		links, err := link.ListFiltered(c, link.Filter{Master: n.index})
		if err != nil {
			return nil, nil, nil, err
		}
		for _, l := range links {
			if !isEpRecord(l.Alias) {
				continue
			}
			rec, err := decodeEpRecord(l.Alias)
			if err != nil {
				continue
			}
			e := n.recovered(l, rec)
			guards = append(guards, e.guardRecord())
			if rec.Owner != (owner{}) {
				continue
			}
			for _, p := range e.ports {
				ports = append(ports, p.Port)
			}
		}
	}
	return nets, ports, guards, nil
}

// watchFirewall runs until the driver closes: it checks the table after
// nf_tables events, or periodically if events cannot be watched.
func (d *Driver) watchFirewall() {
	kick := make(chan struct{}, 1)
	watching := make(chan bool, 1)
	d.wg.Go(func() { d.watchEvents(kick, watching) })
	var tick <-chan time.Time
	for {
		select {
		case <-d.ctx.Done():
			return
		case ok := <-watching:
			if !ok && tick == nil {
				d.log.Warn("nlbridge: cannot watch nf_tables events; checking the firewall periodically")
				t := time.NewTicker(healPeriod)
				defer t.Stop()
				tick = t.C
			}
			continue
		case <-kick:
			select {
			case <-d.ctx.Done():
				return
			case <-time.After(healDelay):
			}
		case <-tick:
		}
		err := d.locked(d.ctx, nil, func(c *netlink.Conn) (bool, error) { return d.checkFirewall(d.ctx, c) })
		if err != nil && !errors.Is(err, ErrClosed) && d.ctx.Err() == nil {
			d.log.Error("nlbridge: firewall check", "err", err)
		}
	}
}

// watchEvents reads nf_tables events and kicks on changes to tables,
// chains, rules and sets (not elements: those are the drivers' own
// traffic). It reports false on watching once it cannot watch.
func (d *Driver) watchEvents(kick chan<- struct{}, watching chan<- bool) {
	c, err := dial(d.host, unix.NETLINK_NETFILTER)
	if err == nil {
		if err = c.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
			c.Close()
		}
	}
	if err != nil {
		watching <- false
		return
	}
	// A change between Open's check and the subscription sent no event
	// to this socket: check once now.
	select {
	case kick <- struct{}{}:
	default:
	}
	d.wg.Go(func() {
		<-d.ctx.Done()
		c.Close()
	})
	for {
		msgs, err := c.Receive()
		if d.ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, unix.ENOBUFS) {
			watching <- false
			return
		}
		if err != nil || changesRuleset(msgs) { // ENOBUFS: events were lost
			select {
			case kick <- struct{}{}:
			default:
			}
		}
	}
}

func changesRuleset(msgs []netlink.Message) bool {
	for _, m := range msgs {
		if uint16(m.Header.Type)>>8 != unix.NFNL_SUBSYS_NFTABLES {
			continue
		}
		switch uint16(m.Header.Type) & 0xff {
		case unix.NFT_MSG_NEWTABLE, unix.NFT_MSG_DELTABLE, unix.NFT_MSG_NEWCHAIN, unix.NFT_MSG_DELCHAIN,
			unix.NFT_MSG_NEWRULE, unix.NFT_MSG_DELRULE, unix.NFT_MSG_NEWSET, unix.NFT_MSG_DELSET:
			return true
		}
	}
	return false
}
