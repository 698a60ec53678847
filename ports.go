package bridge

import (
	"context"
	"fmt"
	"io"
	"net/netip"

	"github.com/nlbridge/bridge/internal/hostport"
	"github.com/nlbridge/bridge/internal/kern"
	"github.com/nlbridge/bridge/nat"
	"golang.org/x/sys/unix"
)

// Proto is a transport protocol for published ports.
type Proto uint8

// Protocols that ports can be published for.
const (
	TCP  Proto = unix.IPPROTO_TCP
	UDP  Proto = unix.IPPROTO_UDP
	SCTP Proto = unix.IPPROTO_SCTP
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// PortMapping publishes a container port on the host.
type PortMapping struct {
	Proto Proto
	// HostIP is the host address to publish on; zero = the network's
	// DefaultHostIP, or else every host address of each family the
	// endpoint has (0.0.0.0 and ::).
	HostIP netip.Addr
	// HostPort is the host port; 0 = an ephemeral port from the host's
	// ip_local_port_range. With HostPortEnd, the first free port of the
	// range HostPort-HostPortEnd is taken.
	HostPort, HostPortEnd uint16
	ContainerPort         uint16
}

func (m PortMapping) String() string {
	hp := fmt.Sprint(m.HostPort)
	if m.HostPortEnd != 0 {
		hp += fmt.Sprint("-", m.HostPortEnd)
	}
	host := "*"
	if m.HostIP.IsValid() {
		host = m.HostIP.String()
	}
	return fmt.Sprintf("%s %s:%s->%d", m.Proto, host, hp, m.ContainerPort)
}

// published is one mapping as installed, for one address family.
type published struct {
	nat.Port
	hold io.Closer // bound socket keeping the host port; nil if routed or not holdable
}

// holdPorts takes the host ports of the mappings, each held by a bound
// socket. It runs on a thread in the driver's namespace. On failure it
// releases what it took.
func (e *Endpoint) holdPorts(op string, t kern.Thread, pps []portPlan) error {
	for _, pp := range pps {
		if err := e.publishOne(op, t, pp); err != nil {
			e.releasePorts()
			return err
		}
	}
	return nil
}

// addPorts adds the DNAT (or routed) elements of the held ports in one
// firewall batch.
func (e *Endpoint) addPorts(ctx context.Context, op string) error {
	if len(e.ports) == 0 {
		return nil
	}
	ports := make([]nat.Port, len(e.ports))
	for i, p := range e.ports {
		ports[i] = p.Port
	}
	if err := e.n.d.fw.AddPorts(ctx, ports...); err != nil {
		return kernel(op, err)
	}
	return nil
}

// publishOne holds one mapping's host port for each of its host
// addresses. It runs on a thread in the driver's namespace, where the hold
// sockets are bound.
func (e *Endpoint) publishOne(op string, t kern.Thread, pp portPlan) error {
	m := pp.m
	var chosen uint16 // the port of the first family, tried first for the next
	done := 0
	for _, hip := range pp.hostIPs {
		caddr, mode := e.ipv4.Addr(), e.n.cfg.GatewayModeIPv4
		if hip.Is6() {
			caddr, mode = e.ipv6.Addr(), e.n.cfg.GatewayModeIPv6
		}
		if !caddr.IsValid() {
			continue // the sandbox refused IPv6 (see dropIPv6)
		}
		p := nat.Port{Proto: uint8(m.Proto), HostIP: hip, Addr: caddr, Port: m.ContainerPort}
		if mode == Routed {
			p.Routed, p.HostIP, p.HostPort = true, caddr, m.ContainerPort
			e.ports = append(e.ports, published{Port: p})
			done++
			continue
		}
		hold, port, err := e.n.d.holdPort(t, m.Proto, hip, hostport.Candidates(m.HostPort, m.HostPortEnd, chosen))
		if err != nil {
			return &Error{Op: op, Field: pp.field, Value: m.String(), Kind: ErrConflict, Err: err}
		}
		p.HostPort, chosen = port, port
		e.ports = append(e.ports, published{Port: p, hold: hold})
		done++
	}
	if done == 0 {
		return invalid(op, pp.field, m, "the endpoint has no address of the host address's family")
	}
	return nil
}

// portKey identifies a host port for conflict checks.
type portKey = hostport.Key

// holdPort takes the first free candidate port: registered in the driver
// and held by a bound socket (in the calling thread's namespace), so no
// host process can take it silently. It returns the port taken.
func (d *Driver) holdPort(t kern.Thread, proto Proto, ip netip.Addr, cands []uint16) (io.Closer, uint16, error) {
	if d.noHolds {
		return d.claimOnly(t, proto, ip, cands)
	}
	bind := func(port uint16) (io.Closer, uint16, error) { return t.BindPort(uint8(proto), ip, port) }
	return hostport.Hold(cands, bind, func(port uint16) bool { return d.claimPort(portKey{Proto: uint8(proto), IP: ip, Port: port}) })
}

// withPublished runs fn (which claims ports) with the host ports that the
// firewall publishes, by any process, counting as taken. Must hold the
// host lock, under which the firewall holds every committed port. The
// firewall is read only when the driver's copy is unknown: at first, and
// after another process changed the records (see forgetPublished); the
// driver's own releases are taken out of the copy as they happen.
func (d *Driver) withPublished(ctx context.Context, fn func() error) error {
	d.portsMu.Lock()
	known := d.published != nil
	d.portsMu.Unlock()
	if !known {
		ports, err := d.fw.Ports(ctx)
		if err != nil {
			return err
		}
		taken := map[portKey]bool{}
		for _, p := range ports {
			if !p.Routed {
				taken[portKey{Proto: p.Proto, IP: p.HostIP, Port: p.HostPort}] = true
			}
		}
		d.portsMu.Lock()
		d.published = taken
		d.portsMu.Unlock()
	}
	return fn()
}

// forgetPublished drops the copy of the firewall's host ports: others
// changed them, or a repair or GC removed elements.
func (d *Driver) forgetPublished() {
	d.portsMu.Lock()
	d.published = nil
	d.portsMu.Unlock()
}

// registerPort records a port that a recovered endpoint publishes.
func (d *Driver) registerPort(k portKey) {
	d.portsMu.Lock()
	defer d.portsMu.Unlock()
	d.ports[k] = true
}

func (d *Driver) claimPort(k portKey) bool {
	d.portsMu.Lock()
	defer d.portsMu.Unlock()
	for o := range d.ports {
		if o.Clashes(k) {
			return false
		}
	}
	for o := range d.published {
		if o.Clashes(k) {
			return false
		}
	}
	d.ports[k] = true
	return true
}

// releasePorts closes the hold sockets and frees the driver's registry.
func (e *Endpoint) releasePorts() {
	e.mu.Lock()
	ports := e.ports
	e.ports = nil
	e.mu.Unlock()
	d := e.n.d
	d.portsMu.Lock()
	defer d.portsMu.Unlock()
	for _, p := range ports {
		if p.hold != nil {
			p.hold.Close()
		}
		if !p.Routed {
			delete(d.ports, portKey{Proto: p.Proto, IP: p.HostIP, Port: p.HostPort})
			delete(d.published, portKey{Proto: p.Proto, IP: p.HostIP, Port: p.HostPort})
		}
	}
}

// Ports returns the mappings as installed: one per family, with the host
// address and port actually used (for routed mode, the container address
// and port).
func (e *Endpoint) Ports() []PortMapping {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]PortMapping, len(e.ports))
	for i, p := range e.ports {
		out[i] = PortMapping{Proto: Proto(p.Proto), HostIP: p.HostIP, HostPort: p.HostPort, ContainerPort: p.Port.Port}
	}
	return out
}

// closeHolds closes the sockets holding the host ports of the network's
// complete endpoints (at Close; the ports stay published).
func (n *Network) closeHolds() {
	n.mu.Lock()
	eps := make([]*Endpoint, 0, len(n.endpoints))
	for e := range n.endpoints {
		eps = append(eps, e)
	}
	n.mu.Unlock()
	for _, e := range eps {
		e.mu.Lock()
		for i := range e.ports {
			if h := e.ports[i].hold; h != nil {
				h.Close()
				e.ports[i].hold = nil
			}
		}
		e.mu.Unlock()
	}
}
