package bridge

import (
	"net"
	"net/netip"
	"strings"
	"unicode"

	"github.com/nlbridge/bridge/internal/alloc"
)

// linkLocal6 is the IPv6 link-local prefix every bridge also carries.
var (
	linkLocal6      = netip.MustParsePrefix("fe80::/64")
	bridgeLinkLocal = netip.MustParseAddr("fe80::1") // the bridge's, with IPv6
)

// checkName validates an interface name as the kernel would (dev_valid_name).
func checkName(op, field, name string) error {
	switch {
	case name == "":
		return invalid(op, field, name, "empty")
	case len(name) > 15:
		return invalid(op, field, name, "longer than 15 bytes")
	case name == "." || name == "..":
		return invalid(op, field, name, "reserved name")
	case strings.ContainsAny(name, "/:"):
		return invalid(op, field, name, "contains '/' or ':'")
	case strings.IndexFunc(name, func(r rune) bool { return unicode.IsSpace(r) || r == 0 }) >= 0:
		return invalid(op, field, name, "contains whitespace")
	}
	return nil
}

// checkMTU validates an MTU; 0 means the kernel default.
func checkMTU(op string, mtu int) error {
	if mtu != 0 && (mtu < 68 || mtu > 65535) {
		return invalid(op, "MTU", mtu, "want 68-65535 (or 0 for the default)")
	}
	return nil
}

// checkSubnet validates a gateway prefix of a network: the address is the
// gateway, the masked prefix the subnet.
func checkSubnet(op, field string, p netip.Prefix, want4 bool) error {
	if !p.IsValid() {
		return nil // unset
	}
	a := p.Addr()
	switch {
	case a.Is4In6() || a.Zone() != "":
		return invalid(op, field, p, "want a plain address, no mapped form or zone")
	case want4 && !a.Is4():
		return invalid(op, field, p, "not an IPv4 prefix")
	case !want4 && !a.Is6():
		return invalid(op, field, p, "not an IPv6 prefix")
	case want4 && p.Bits() > 30:
		return invalid(op, field, p, "subnet too small: want /30 or shorter")
	case !want4 && p.Bits() > 126:
		return invalid(op, field, p, "subnet too small: want /126 or shorter")
	case !want4 && p.Overlaps(linkLocal6) && p.Bits() != 64:
		return invalid(op, field, p, "overlaps fe80::/64 with another length")
	case a.IsMulticast() || a.IsLoopback() || a.IsUnspecified():
		return invalid(op, field, p, "not a unicast address")
	}
	if err := checkHost(op, field, p, p.Masked()); err != nil {
		return err
	}
	return nil
}

// checkHost checks that p's address is a usable host address of subnet:
// inside it, not its network address and, for IPv4, not its broadcast.
func checkHost(op, field string, p, subnet netip.Prefix) error {
	a := p.Addr()
	switch {
	case !subnet.Contains(a):
		return invalid(op, field, p, "outside the subnet "+subnet.String())
	case a == subnet.Addr():
		return invalid(op, field, p, "is the subnet's network address")
	case a.Is4() && a == alloc.Last(subnet):
		return invalid(op, field, p, "is the subnet's broadcast address")
	}
	return nil
}

// checkMAC validates a caller-supplied MAC address.
func checkMAC(op string, mac net.HardwareAddr) error {
	switch {
	case mac == nil:
		return nil
	case len(mac) != 6:
		return invalid(op, "MAC", mac, "want 6 bytes")
	case mac[0]&1 != 0:
		return invalid(op, "MAC", mac, "multicast address")
	case string(mac) == "\x00\x00\x00\x00\x00\x00":
		return invalid(op, "MAC", mac, "all zeros")
	}
	return nil
}
