package bridge

import (
	"context"

	"github.com/nlbridge/bridge/internal/nl"
	"github.com/nlbridge/bridge/nat"
)

// guardRecord is the endpoint's entry in the firewall's guard (see
// nat.Guard): RA guard on its host end and, unless the network allows
// spoofing, the MAC and addresses it may send from.
func (e *Endpoint) guardRecord() nat.Guard {
	return nat.Guard{Port: e.hostName, AllowSpoofing: e.n.cfg.AllowSpoofing, MAC: e.mac,
		IPv4: e.ipv4.Addr(), IPv6: e.ipv6.Addr(), NoIPv6: !e.n.cfg.IPv6.IsValid()}
}

// setGuard puts the endpoint's guard elements in, in one firewall batch,
// replacing those it had (under an earlier host name or address set). It
// runs before the host end exists or the interface comes up, so there is
// no moment without the protection. Without the firewall it does nothing.
func (e *Endpoint) setGuard(ctx context.Context, op string) error {
	fw := e.n.d.fw
	if fw == nil {
		return nil
	}
	g := e.guardRecord()
	e.mu.Lock()
	old := e.guard
	e.mu.Unlock()
	ch := nat.Change{AddGuards: []nat.Guard{g}}
	if old != nil {
		ch.RemoveGuards = []nat.Guard{*old}
	}
	err := fw.Apply(ctx, ch)
	if err != nil && nl.Done(ctx) != nil && old != nil {
		// A batch the ctx cut short may be in or not: the old elements
		// go now, without the deadline, and the new ones with the
		// rollback (removals ignore what is not there).
		if rerr := fw.Apply(context.Background(), nat.Change{RemoveGuards: []nat.Guard{*old}}); rerr != nil {
			e.n.d.log.Error("nlbridge: undoing a failed operation", "op", op, "err", rerr)
		}
	}
	if err == nil || nl.Done(ctx) != nil {
		e.mu.Lock()
		e.guard = &g
		e.mu.Unlock()
	}
	return asError(op, err)
}

// takeGuard returns the endpoint's guard elements, if any, for removal.
func (e *Endpoint) takeGuard() []nat.Guard {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.guard == nil {
		return nil
	}
	return []nat.Guard{*e.guard}
}

// forgetGuard records that the guard elements are gone.
func (e *Endpoint) forgetGuard() {
	e.mu.Lock()
	e.guard = nil
	e.mu.Unlock()
}
