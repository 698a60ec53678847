package nat

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"

	"github.com/google/nftables"
)

// Ports lists the published ports in the table, decoded from the port map
// elements (for garbage collection: ports whose container address belongs
// to no endpoint).
func (f *Firewall) Ports(ctx context.Context) (_ []Port, err error) {
	defer f.use(ctx)(&err)
	var out []Port
	for _, v6 := range []bool{false, true} {
		n := 4
		if v6 {
			n = 16
		}
		for _, name := range []string{fam(mapPorts, v6), fam(mapPortsAny, v6), fam(setRPorts, v6)} {
			els, err := f.c.GetSetElements(f.sets[name])
			if err != nil {
				return nil, err
			}
			for _, el := range els {
				if p, ok := decodePort(name, n, el); ok {
					out = append(out, p)
				}
			}
		}
	}
	return out, nil
}

// decodePort reverses Port.element for one element of the set name, whose
// addresses are n bytes long.
func decodePort(name string, n int, el nftables.SetElement) (Port, bool) {
	pad := (n + 3) / 4 * 4
	addr := func(b []byte) netip.Addr { a, _ := netip.AddrFromSlice(b[:n]); return a }
	unspec := netip.IPv4Unspecified()
	if n == 16 {
		unspec = netip.IPv6Unspecified()
	}
	k, v := el.Key, el.Val
	switch name[:len(name)-1] {
	case setRPorts:
		if len(k) != pad+8 {
			return Port{}, false
		}
		a := addr(k)
		port := binary.BigEndian.Uint16(k[pad+4:])
		return Port{Proto: k[pad], HostIP: a, HostPort: port, Addr: a, Port: port, Routed: true}, true
	case mapPorts:
		if len(k) != pad+8 || len(v) != pad+4 {
			return Port{}, false
		}
		return Port{Proto: k[pad], HostIP: addr(k), HostPort: binary.BigEndian.Uint16(k[pad+4:]),
			Addr: addr(v), Port: binary.BigEndian.Uint16(v[pad:])}, true
	case mapPortsAny:
		if len(k) != 8 || len(v) != pad+4 {
			return Port{}, false
		}
		return Port{Proto: k[0], HostIP: unspec, HostPort: binary.BigEndian.Uint16(k[4:]),
			Addr: addr(v), Port: binary.BigEndian.Uint16(v[pad:])}, true
	}
	return Port{}, false
}

// Bridges lists the bridges that have elements in the table.
func (f *Firewall) Bridges(ctx context.Context) (_ []string, err error) {
	defer f.use(ctx)(&err)
	els, err := f.c.GetSetElements(f.sets[setBridges])
	if err != nil {
		return nil, err
	}
	var out []string
	for _, el := range els {
		out = append(out, string(bytes.TrimRight(el.Key, "\x00")))
	}
	return out, nil
}

// RemoveBridge removes every element keyed by the bridge's name, whatever
// the network's modes were (for networks whose bridge is gone). Elements
// already gone are not an error.
func (f *Firewall) RemoveBridge(ctx context.Context, name string) error {
	br := ifname(name)
	fns := []func(b batch){
		func(b batch) { b.del(setBridges, nftables.SetElement{Key: br}) },
		func(b batch) { b.del(setSame, nftables.SetElement{Key: append(append([]byte{}, br...), br...)}) },
	}
	for _, v6 := range []bool{false, true} {
		for _, s := range []string{setInternal, setProtect, setRouted, setMasq, mapSNAT} {
			set := fam(s, v6)
			fns = append(fns, func(b batch) { b.del(set, nftables.SetElement{Key: br}) })
		}
	}
	return f.runIgnoringMissing(ctx, "remove bridge "+name, nil, fns)
}
