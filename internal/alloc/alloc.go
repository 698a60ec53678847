// Package alloc chooses what an endpoint gets when its config leaves it
// to the driver: the lowest free host address of the network's subnet,
// and a MAC derived from the IPv4 address (or a random one).
package alloc

import (
	"crypto/rand"
	"net"
	"net/netip"
)

// Lowest returns the lowest host address of gw's subnet, with gw's
// prefix length, that is not gw's own address and not taken (nil = none
// taken). Host addresses exclude the subnet's network address and, for
// IPv4, its broadcast address. ok is false when none is free.
func Lowest(gw netip.Prefix, taken func(netip.Addr) bool) (p netip.Prefix, ok bool) {
	subnet := gw.Masked()
	last := Last(subnet)
	for a := subnet.Addr().Next(); a.IsValid() && subnet.Contains(a); a = a.Next() {
		if a.Is4() && a == last {
			break
		}
		if a == gw.Addr() || taken != nil && taken(a) {
			continue
		}
		return netip.PrefixFrom(a, gw.Bits()), true
	}
	return netip.Prefix{}, false
}

// Last returns the highest address of a prefix (for IPv4, its broadcast
// address).
func Last(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// MAC returns 02:42 followed by the four bytes of an IPv4 address (as
// Docker does, so a reused address keeps its MAC), or a random MAC when
// v4 is not an IPv4 address.
func MAC(v4 netip.Addr) net.HardwareAddr {
	if !v4.Is4() {
		return Random()
	}
	a := v4.As4()
	return net.HardwareAddr{0x02, 0x42, a[0], a[1], a[2], a[3]}
}

// Random returns a random locally administered unicast MAC.
func Random() net.HardwareAddr {
	m := make(net.HardwareAddr, 6)
	rand.Read(m)
	m[0] = m[0]&^1 | 2
	return m
}
