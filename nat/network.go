package nat

import (
	"context"
	"net/netip"
	"strconv"

	"github.com/google/nftables"
)

// Mode is a network's gateway mode for one address family.
type Mode uint8

const (
	// NAT masquerades outbound traffic; from outside only published ports
	// get in, direct routed access to container addresses is dropped.
	NAT Mode = iota
	// NATUnprotected masquerades outbound traffic and lets routed traffic
	// from outside reach container addresses.
	NATUnprotected
	// Routed does no NAT; from outside, published ports are reachable at
	// the container address, and ICMP; nothing else gets in.
	Routed
	// Isolated has no gateway: nothing is forwarded in or out.
	Isolated
)

func (m Mode) String() string {
	switch m {
	case NAT:
		return "nat"
	case NATUnprotected:
		return "nat-unprotected"
	case Routed:
		return "routed"
	case Isolated:
		return "isolated"
	}
	return "mode(" + strconv.Itoa(int(m)) + ")"
}

// Network is the firewall's view of one bridge network.
type Network struct {
	Bridge string
	Mode4  Mode
	Mode6  Mode
	// Internal: nothing is forwarded into or out of the bridge (both
	// families), whatever the modes.
	Internal bool
	// SNAT4/SNAT6: source address for outbound NAT instead of masquerade.
	SNAT4, SNAT6 netip.Addr
}

// AddNetwork adds the network's elements in one batch.
func (f *Firewall) AddNetwork(ctx context.Context, n Network) error {
	return f.run(ctx, "add network "+n.Bridge, func(b batch) { n.elements(b, b.add) })
}

// RemoveNetwork removes the network's elements in one batch. Elements
// already gone (or the whole table) are not an error.
func (f *Firewall) RemoveNetwork(ctx context.Context, n Network) error {
	var fns []func(b batch)
	n.elements(batch{f}, func(set string, els ...nftables.SetElement) {
		fns = append(fns, func(b batch) { b.del(set, els...) })
	})
	return f.runIgnoringMissing(ctx, "remove network "+n.Bridge, nil, fns)
}

// elements applies op (add or del) to every element of the network.
func (n Network) elements(b batch, op func(string, ...nftables.SetElement)) {
	br := ifname(n.Bridge)
	op(setBridges, nftables.SetElement{Key: br})
	op(setSame, nftables.SetElement{Key: append(append([]byte{}, br...), br...)})
	for _, v6 := range []bool{false, true} {
		mode, snat := n.Mode4, n.SNAT4
		if v6 {
			mode, snat = n.Mode6, n.SNAT6
		}
		switch {
		case n.Internal || mode == Isolated:
			op(fam(setInternal, v6), nftables.SetElement{Key: br})
			continue
		case mode == Routed:
			op(fam(setRouted, v6), nftables.SetElement{Key: br})
			continue
		case mode == NAT:
			op(fam(setProtect, v6), nftables.SetElement{Key: br})
		}
		if snat.IsValid() {
			op(fam(mapSNAT, v6), nftables.SetElement{Key: br, Val: snat.AsSlice()})
		} else {
			op(fam(setMasq, v6), nftables.SetElement{Key: br})
		}
	}
}

// ifname encodes an interface name as nftables stores it: 16 bytes, NUL
// padded.
func ifname(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}
