package bridge

import (
	"io"
	"net/netip"

	"github.com/nlbridge/bridge/internal/hostport"
	"github.com/nlbridge/bridge/internal/kern"
)

// registerPorts registers recovered endpoints' host ports, so that no
// attach takes them, without holding them by sockets
// (Options.NoPortHolds).
func (d *Driver) registerPorts(eps []*Endpoint) {
	for _, e := range eps {
		e.mu.Lock()
		for _, p := range e.ports {
			if !p.Routed {
				d.registerPort(portKey{Proto: p.Proto, IP: p.HostIP, Port: p.HostPort})
			}
		}
		e.mu.Unlock()
	}
}

// claimOnly is holdPort with Options.NoPortHolds: the first candidate no
// endpoint publishes is claimed, and no socket keeps it (a host process
// holding it, as Podman's conmon does for its containers, is no
// conflict). An ephemeral port is chosen by a bind that is closed at once.
func (d *Driver) claimOnly(t kern.Thread, proto Proto, ip netip.Addr, cands []uint16) (io.Closer, uint16, error) {
	bind := func(port uint16) (io.Closer, uint16, error) {
		if port != 0 {
			return nil, port, nil
		}
		f, got, err := t.BindPort(uint8(proto), ip, 0)
		if f != nil {
			f.Close()
		}
		return nil, got, err
	}
	return hostport.Hold(cands, bind, func(port uint16) bool { return d.claimPort(portKey{Proto: uint8(proto), IP: ip, Port: port}) })
}
