package bridge

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
