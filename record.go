package bridge

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// The records are what the kernel keeps for a driver (see "State" in the
// package doc): a network's in its bridge's IFLA_IFALIAS, an endpoint's in
// the IFLA_IFALIAS of its host veth end. Both are one line of
// space-separated key=value fields after a header naming the format and
// its version; values are percent-escaped (see escape).

const (
	recordMagic  = "nlbridge/1"
	netHeader    = recordMagic + " net"
	epHeader     = recordMagic + " ep"
	maxAliasLen  = 255 // IFALIASZ - 1
	legacyBridge = "nlbridge"
)

var errNotRecord = errors.New("not an nlbridge record")

// owner identifies the process that is still building an object: its PID
// and its start time (clock ticks after boot, /proc/PID/stat field 22), so a
// reused PID does not count as the same owner. The zero owner means the
// object is complete.
type owner struct {
	PID   int
	Start uint64
}

func (o owner) String() string { return fmt.Sprintf("%d.%d", o.PID, o.Start) }

func parseOwner(s string) (owner, error) {
	p, st, ok := strings.Cut(s, ".")
	pid, err1 := strconv.Atoi(p)
	start, err2 := strconv.ParseUint(st, 10, 64)
	if !ok || err1 != nil || err2 != nil || pid <= 0 {
		return owner{}, fmt.Errorf("bad owner %q", s)
	}
	return owner{pid, start}, nil
}

// netRecord is a network's record.
type netRecord struct {
	Config  NetworkConfig // Name is the bridge's name, not recorded
	Adopted bool          // the bridge was not ours: Delete leaves it
	Added   []netip.Prefix
	Owner   owner // non-zero while CreateNetwork runs
}

// epRecord is an endpoint's record.
type epRecord struct {
	ID     string
	IfName string
	NetNS  string
	MAC    net.HardwareAddr
	IPv4   netip.Addr // prefix length: the network's
	IPv6   netip.Addr
	Ports  []portRecord
	Owner  owner // non-zero while Attach runs
}

// portRecord is one installed port (see published).
type portRecord struct {
	Proto    Proto
	Routed   bool
	HostIP   netip.Addr
	HostPort uint16
	Port     uint16
}

func (r netRecord) encode() string {
	c := r.Config
	var f fields
	f.prefix("v4", c.IPv4)
	f.prefix("v6", c.IPv6)
	if c.MTU != 0 {
		f.add("mtu", strconv.Itoa(c.MTU))
	}
	f.flag("internal", c.Internal)
	if c.GatewayModeIPv4 != NAT {
		f.add("m4", c.GatewayModeIPv4.String())
	}
	if c.GatewayModeIPv6 != NAT {
		f.add("m6", c.GatewayModeIPv6.String())
	}
	f.addr("snat4", c.HostIPv4)
	f.addr("snat6", c.HostIPv6)
	f.flag("noicc", c.DisableICC)
	f.flag("spoof", c.AllowSpoofing)
	f.addr("hostip", c.DefaultHostIP)
	f.flag("adopted", r.Adopted)
	for _, p := range r.Added {
		f.prefix("added", p)
	}
	if r.Owner != (owner{}) {
		f.add("owner", r.Owner.String())
	}
	return netHeader + f.String()
}

func (r epRecord) encode() string {
	var f fields
	f.add("id", r.ID)
	f.add("if", r.IfName)
	f.add("ns", r.NetNS)
	f.add("mac", strings.ReplaceAll(r.MAC.String(), ":", ""))
	f.addr("v4", r.IPv4)
	f.addr("v6", r.IPv6)
	for _, p := range r.Ports {
		f.add("p", p.String())
	}
	if r.Owner != (owner{}) {
		f.add("owner", r.Owner.String())
	}
	return epHeader + f.String()
}

func (p portRecord) String() string {
	s := p.Proto.String()
	if p.Routed {
		s += "r"
	}
	return s + "/" + p.HostIP.String() + "/" + strconv.Itoa(int(p.HostPort)) + "/" + strconv.Itoa(int(p.Port))
}

// isNetRecord tells a bridge alias of ours from anything else. Bridges of
// the earliest releases carry just "nlbridge".
func isNetRecord(alias string) bool {
	return alias == legacyBridge || strings.HasPrefix(alias, netHeader+" ") || alias == netHeader
}

// isEpRecord tells an endpoint record from other aliases.
func isEpRecord(alias string) bool { return strings.HasPrefix(alias, epHeader+" ") }

// decodeNetRecord parses a bridge alias. Aliases not written by this
// package give errNotRecord; damaged ones a description of the damage.
func decodeNetRecord(s string) (netRecord, error) {
	var r netRecord
	if s == legacyBridge {
		return r, nil
	}
	kv, err := parseFields(s, netHeader)
	if err != nil {
		return r, err
	}
	c := &r.Config
	for _, e := range kv {
		k, v := e[0], e[1]
		switch k {
		case "v4":
			c.IPv4, err = parsePrefix(v, true)
		case "v6":
			c.IPv6, err = parsePrefix(v, false)
		case "mtu":
			c.MTU, err = strconv.Atoi(v)
			if err == nil && (c.MTU < 68 || c.MTU > 65535) {
				err = errors.New("out of range")
			}
		case "internal":
			c.Internal, err = parseFlag(v)
		case "m4":
			c.GatewayModeIPv4, err = parseMode(v)
		case "m6":
			c.GatewayModeIPv6, err = parseMode(v)
		case "snat4":
			c.HostIPv4, err = parseAddr(v, true)
		case "snat6":
			c.HostIPv6, err = parseAddr(v, false)
		case "noicc":
			c.DisableICC, err = parseFlag(v)
		case "spoof":
			c.AllowSpoofing, err = parseFlag(v)
		case "hostip":
			c.DefaultHostIP, err = netip.ParseAddr(v)
		case "adopted":
			r.Adopted, err = parseFlag(v)
		case "added":
			var p netip.Prefix
			if p, err = netip.ParsePrefix(v); err == nil {
				r.Added = append(r.Added, p)
			}
		case "owner":
			r.Owner, err = parseOwner(v)
		default:
			err = errors.New("unknown field")
		}
		if err != nil {
			return netRecord{}, fmt.Errorf("network record field %s=%q: %v", k, v, err)
		}
	}
	return r, nil
}

// decodeEpRecord parses a host veth end's alias.
func decodeEpRecord(s string) (epRecord, error) {
	var r epRecord
	kv, err := parseFields(s, epHeader)
	if err != nil {
		return r, err
	}
	for _, e := range kv {
		k, v := e[0], e[1]
		switch k {
		case "id":
			r.ID = v
		case "if":
			r.IfName = v
			if checkName("", "", v) != nil {
				err = errors.New("not an interface name")
			}
		case "ns":
			r.NetNS = v
		case "mac":
			r.MAC, err = net.ParseMAC(macColons(v))
			if err == nil && len(r.MAC) != 6 {
				err = errors.New("not an Ethernet address")
			}
		case "v4":
			r.IPv4, err = parseAddr(v, true)
		case "v6":
			r.IPv6, err = parseAddr(v, false)
		case "p":
			var p portRecord
			if p, err = parsePortRecord(v); err == nil {
				r.Ports = append(r.Ports, p)
			}
		case "owner":
			r.Owner, err = parseOwner(v)
		default:
			err = errors.New("unknown field")
		}
		if err != nil {
			return epRecord{}, fmt.Errorf("endpoint record field %s=%q: %v", k, v, err)
		}
	}
	if r.ID == "" || r.IfName == "" || r.NetNS == "" || r.MAC == nil {
		return epRecord{}, fmt.Errorf("endpoint record %q: id, if, ns and mac are required", s)
	}
	return r, nil
}

func parsePortRecord(s string) (portRecord, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 4 {
		return portRecord{}, errors.New("want proto/hostip/hostport/port")
	}
	var p portRecord
	proto := parts[0]
	if strings.HasSuffix(proto, "r") {
		p.Routed, proto = true, strings.TrimSuffix(proto, "r")
	}
	switch proto {
	case "tcp":
		p.Proto = TCP
	case "udp":
		p.Proto = UDP
	case "sctp":
		p.Proto = SCTP
	default:
		return portRecord{}, errors.New("unknown protocol")
	}
	var err error
	if p.HostIP, err = netip.ParseAddr(parts[1]); err != nil {
		return portRecord{}, err
	}
	hp, err1 := strconv.ParseUint(parts[2], 10, 16)
	cp, err2 := strconv.ParseUint(parts[3], 10, 16)
	if err1 != nil || err2 != nil || hp == 0 || cp == 0 {
		return portRecord{}, errors.New("bad port number")
	}
	p.HostPort, p.Port = uint16(hp), uint16(cp)
	return p, nil
}

func parsePrefix(s string, v4 bool) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err == nil && (p.Addr().Is4() != v4 || p.Addr().Is4In6()) {
		err = errors.New("wrong address family")
	}
	return p, err
}

func parseAddr(s string, v4 bool) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err == nil && (a.Is4() != v4 || a.Is4In6() || a.Zone() != "") {
		err = errors.New("wrong address family")
	}
	return a, err
}

func parseFlag(s string) (bool, error) {
	if s != "1" {
		return false, errors.New("want 1")
	}
	return true, nil
}

func parseMode(s string) (GatewayMode, error) {
	for m := NAT; m <= Isolated; m++ {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, errors.New("unknown gateway mode")
}

// macColons turns 12 hex digits into the colon form net.ParseMAC reads.
func macColons(s string) string {
	if len(s) != 12 {
		return s
	}
	var b strings.Builder
	for i := 0; i < 12; i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(s[i : i+2])
	}
	return b.String()
}

// fields builds the key=value part of a record.
type fields struct{ b strings.Builder }

func (f *fields) add(k, v string) {
	f.b.WriteByte(' ')
	f.b.WriteString(k)
	f.b.WriteByte('=')
	f.b.WriteString(escape(v))
}

func (f *fields) flag(k string, on bool) {
	if on {
		f.add(k, "1")
	}
}

func (f *fields) addr(k string, a netip.Addr) {
	if a.IsValid() {
		f.add(k, a.String())
	}
}

func (f *fields) prefix(k string, p netip.Prefix) {
	if p.IsValid() {
		f.add(k, p.String())
	}
}

func (f *fields) String() string { return f.b.String() }

// parseFields splits a record with the given header into key, value pairs.
func parseFields(s, header string) ([][2]string, error) {
	rest, ok := strings.CutPrefix(s, header)
	if !ok || rest != "" && rest[0] != ' ' {
		return nil, errNotRecord
	}
	var kv [][2]string
	for _, f := range strings.Fields(rest) {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("record field %q: want key=value", f)
		}
		u, err := unescape(v)
		if err != nil {
			return nil, fmt.Errorf("record field %q: %v", f, err)
		}
		kv = append(kv, [2]string{k, u})
	}
	return kv, nil
}

// escape percent-encodes the bytes that would break a field: controls,
// space, '%' and anything outside ASCII.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func unescape(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", errors.New("truncated escape")
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", errors.New("bad escape")
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}
