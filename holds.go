package bridge

import (
	"fmt"
	"io"
	"net/netip"

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
				d.registerPort(portKey{p.Proto, p.HostIP, p.HostPort})
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
	var last error = errPortTaken
	for _, port := range cands {
		if port == 0 {
			f, got, err := t.BindPort(uint8(proto), ip, 0)
			if err != nil {
				last = err
				continue
			}
			if f != nil {
				f.Close()
			}
			port = got
		}
		if d.claimPort(portKey{uint8(proto), ip, port}) {
			return nil, port, nil
		}
		last = fmt.Errorf("%w: published by another endpoint", errPortTaken)
	}
	return nil, 0, last
}
