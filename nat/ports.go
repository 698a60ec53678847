package nat

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
)

// Port is one published port of one container address.
type Port struct {
	Proto    uint8      // unix.IPPROTO_TCP, _UDP or _SCTP
	HostIP   netip.Addr // host address it is published on; unspecified (0.0.0.0, ::) = every local address of that family
	HostPort uint16
	Addr     netip.Addr // container address; its family must match HostIP's
	Port     uint16     // container port
	Routed   bool       // routed gateway mode: open Addr:Port in the firewall, no DNAT
}

func (p Port) String() string {
	proto := map[uint8]string{6: "tcp", 17: "udp", 132: "sctp"}[p.Proto]
	if p.Routed {
		return fmt.Sprintf("%s %s (routed)", proto, netip.AddrPortFrom(p.Addr, p.Port))
	}
	return fmt.Sprintf("%s %s -> %s", proto, netip.AddrPortFrom(p.HostIP, p.HostPort), netip.AddrPortFrom(p.Addr, p.Port))
}

// AddPorts publishes ports in one batch: one element each, in one message
// per set.
func (f *Firewall) AddPorts(ctx context.Context, ps ...Port) error {
	return f.run(ctx, portsOp("publish", ps), func(b batch) { bySet(ps, b.add) })
}

// RemovePorts withdraws ports in one batch. Ports already gone (or the
// whole table) are not an error.
func (f *Firewall) RemovePorts(ctx context.Context, ps ...Port) error {
	each := make([]func(b batch), len(ps))
	for i, p := range ps {
		each[i] = func(b batch) { p.element(b.del) }
	}
	return f.runIgnoringMissing(ctx, portsOp("unpublish", ps), func(b batch) { bySet(ps, b.del) }, each)
}

// maxSetElems bounds the elements in one message (about 50 bytes each).
const maxSetElems = 512

// bySet applies op to the ports' elements grouped by set, at most
// maxSetElems per call. The kernel acks every message of a batch, and a
// batch of a message per element overflows the socket's receive buffer
// at about a thousand ports (ENOBUFS, after which acks are lost). Grouped,
// the whole batch must still fit the socket's send buffer (about 4,000
// ports).
func bySet(ps []Port, op func(string, ...nftables.SetElement)) {
	grouped(op, func(add func(string, ...nftables.SetElement)) {
		for _, p := range ps {
			p.element(add)
		}
	})
}

// portsOp names an operation on ports for errors, listing a few.
func portsOp(op string, ps []Port) string {
	if len(ps) > 4 {
		return fmt.Sprintf("%s %d ports %v...", op, len(ps), ps[:4])
	}
	return fmt.Sprintf("%s %v", op, ps)
}

func (p Port) element(op func(string, ...nftables.SetElement)) {
	v6 := p.Addr.Is6()
	addr := p.Addr.AsSlice()
	switch {
	case p.Routed:
		op(fam(setRPorts, v6), nftables.SetElement{Key: cat32(addr, []byte{p.Proto}, port(p.Port))})
	case p.HostIP.IsUnspecified():
		op(fam(mapPortsAny, v6), nftables.SetElement{Key: cat32([]byte{p.Proto}, port(p.HostPort)),
			Val: cat32(addr, port(p.Port))})
	default:
		op(fam(mapPorts, v6), nftables.SetElement{Key: cat32(p.HostIP.AsSlice(), []byte{p.Proto}, port(p.HostPort)),
			Val: cat32(addr, port(p.Port))})
	}
}

func port(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }

// cat32 concatenates fields as nftables lays out concatenations: each field
// padded with zeros to a multiple of 4 bytes.
func cat32(fields ...[]byte) []byte {
	var b []byte
	for _, f := range fields {
		b = append(b, f...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	return b
}
