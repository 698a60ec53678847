package bridge

import (
	"context"
	"errors"
	"net/netip"
	"sort"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/internal/kern"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/nat"
)

// Recovery: what a driver knows is read back from the records in the kernel
// (see record.go). Networks are read at Open with one dump of the bridges;
// a network's endpoints with one dump of its ports, when the network is
// first used. Whenever another process changed records (see hostLock), the
// next locked operation reads again what this driver had read.

// locked runs fn under the host lock with a host conn (c, or one from the
// pool with ctx's deadline), after reading the records again if another process changed them.
// fn reports whether it changed records.
func (d *Driver) locked(ctx context.Context, c *netlink.Conn, fn func(c *netlink.Conn) (wrote bool, err error)) error {
	if d.isClosed() {
		return &Error{Op: "use driver", Kind: ErrClosed, Err: errors.New("the driver is closed")}
	}
	changed, err := d.lock.lock(ctx)
	if err != nil {
		return err
	}
	wrote := false
	defer func() { d.lock.unlock(wrote) }()
	run := func(c *netlink.Conn) error {
		if changed {
			if err := d.refresh(c); err != nil {
				return err
			}
		}
		var err error
		wrote, err = fn(c)
		return err
	}
	if c != nil {
		return run(c)
	}
	return d.withConn(ctx, run)
}

func (d *Driver) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// sync reads the records again if another process changed them.
func (d *Driver) sync(what string) {
	if err := d.locked(context.Background(), nil, func(*netlink.Conn) (bool, error) { return false, nil }); err != nil && !errors.Is(err, ErrClosed) {
		d.log.Error("nlbridge: reading records", "for", what, "err", err)
	}
}

// refresh reads the networks, and the endpoints of every network read so
// far, again.
func (d *Driver) refresh(c *netlink.Conn) error {
	d.forgetPublished()
	if err := d.loadNetworks(c); err != nil {
		return err
	}
	for _, n := range d.networkList() {
		n.mu.Lock()
		loaded := n.loaded
		n.mu.Unlock()
		if loaded {
			if err := n.loadEndpoints(c); err != nil {
				return err
			}
		}
	}
	return nil
}

// loadNetworks reads the complete network records of the bridges, adds the
// networks this driver does not know and forgets those that are gone.
func (d *Driver) loadNetworks(c *netlink.Conn) error {
	links, err := link.ListFiltered(c, link.Filter{Kind: "bridge"})
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, l := range links {
		if !isNetRecord(l.Alias) || l.Alias == legacyBridge {
			continue
		}
		rec, err := decodeNetRecord(l.Alias)
		if err != nil {
			d.log.Warn("nlbridge: ignoring bridge with a damaged record", "bridge", l.Name, "err", err)
			continue
		}
		if rec.Owner != (owner{}) {
			continue // being created, or half-made (GC's)
		}
		seen[l.Name] = true
		if n, ok := d.networks[l.Name]; ok && n.index == l.Index {
			continue
		}
		rec.Config.Name = l.Name
		n := newNetwork(d, rec.Config)
		n.index, n.group, n.stp = l.Index, l.Group, l.STP
		n.adopted, n.added = rec.Adopted, rec.Added
		if n.adopted || n.group == 0 {
			n.group = groupBase + l.Index
		}
		if old, ok := d.networks[l.Name]; ok {
			old.forget()
		}
		d.networks[l.Name] = n
	}
	for name, n := range d.networks {
		if !seen[name] {
			delete(d.networks, name)
			n.forget()
		}
	}
	return nil
}

// forget marks a network that another process deleted.
func (n *Network) forget() {
	n.mu.Lock()
	n.deleted = true
	eps := n.endpoints
	n.endpoints = map[*Endpoint]struct{}{}
	n.mu.Unlock()
	for e := range eps {
		e.markDetached()
		e.stopAdvertising()
		e.releasePorts()
	}
}

// load reads the network's endpoints once.
func (n *Network) load(c *netlink.Conn) error {
	n.mu.Lock()
	loaded := n.loaded
	n.mu.Unlock()
	if loaded {
		return nil
	}
	return n.loadEndpoints(c)
}

// loadEndpoints reads the records of the bridge's ports: complete
// endpoints it does not know become recovered endpoints (their host ports
// held again), endpoints whose devices are gone are forgotten, and the
// records of endpoints that other processes are attaching count as claims.
// Must hold the host lock.
func (n *Network) loadEndpoints(c *netlink.Conn) error {
	links, err := link.ListFiltered(c, link.Filter{Master: n.index})
	if err != nil {
		return err
	}
	n.mu.Lock()
	known := map[uint32]*Endpoint{}
	for e := range n.endpoints {
		known[e.hostIndex] = e
	}
	for e := range n.inflight {
		known[e.hostIndex] = e
	}
	var found, gone []*Endpoint
	seen := map[*Endpoint]bool{}
	n.foreign = nil
	for _, l := range links {
		if !isEpRecord(l.Alias) {
			continue
		}
		rec, err := decodeEpRecord(l.Alias)
		if err != nil {
			n.d.log.Warn("nlbridge: ignoring port with a damaged record", "bridge", n.cfg.Name, "port", l.Name, "err", err)
			continue
		}
		if e := known[l.Index]; e != nil {
			seen[e] = true
			continue
		}
		if rec.Owner != (owner{}) {
			n.foreign = append(n.foreign, rec)
			continue
		}
		e := n.recovered(l, rec)
		n.endpoints[e] = struct{}{}
		seen[e] = true
		found = append(found, e)
	}
	for e := range n.endpoints {
		if !seen[e] {
			delete(n.endpoints, e)
			gone = append(gone, e)
		}
	}
	n.reclaim()
	n.loaded = true
	n.mu.Unlock()
	for _, e := range gone {
		e.markDetached()
		e.stopAdvertising()
		e.releasePorts()
	}
	n.d.rehold(found)
	return nil
}

// reclaim rebuilds the claimed addresses, MACs and IDs from the endpoints
// and the other processes' records. Must hold n.mu.
func (n *Network) reclaim() {
	clear(n.used)
	clear(n.macs)
	clear(n.ids)
	claim := func(v4, v6 netip.Addr, mac []byte, id string) {
		for _, a := range []netip.Addr{v4, v6} {
			if a.IsValid() {
				n.used[a] = true
			}
		}
		n.macs[string(mac)] = true
		n.ids[id] = true
	}
	for e := range n.endpoints {
		claim(e.ipv4.Addr(), e.ipv6.Addr(), e.mac, e.id)
	}
	for e := range n.inflight {
		claim(e.ipv4.Addr(), e.ipv6.Addr(), e.mac, e.id)
	}
	for _, r := range n.foreign {
		claim(r.IPv4, r.IPv6, r.MAC, r.ID)
	}
}

// recovered builds an endpoint from its host end and record.
func (n *Network) recovered(l link.Link, r epRecord) *Endpoint {
	e := &Endpoint{n: n, id: r.ID, netns: r.NetNS, hostName: l.Name, hostIndex: l.Index,
		ifName: r.IfName, ifIndex: l.Peer, mac: r.MAC, recovered: true}
	if r.IPv4.IsValid() && n.cfg.IPv4.IsValid() {
		e.ipv4 = netip.PrefixFrom(r.IPv4, n.cfg.IPv4.Bits())
	}
	if r.IPv6.IsValid() && n.cfg.IPv6.IsValid() {
		e.ipv6 = netip.PrefixFrom(r.IPv6, n.cfg.IPv6.Bits())
	}
	for _, p := range r.Ports {
		caddr := e.ipv4.Addr()
		if p.HostIP.Is6() {
			caddr = e.ipv6.Addr()
		}
		np := nat.Port{Proto: uint8(p.Proto), HostIP: p.HostIP, HostPort: p.HostPort, Addr: caddr, Port: p.Port, Routed: p.Routed}
		e.ports = append(e.ports, published{Port: np})
	}
	if n.d.fw != nil { // its guard is in the firewall (or restored with it)
		g := e.guardRecord()
		e.guard = &g
	}
	return e
}

// rehold registers recovered endpoints' host ports and holds them with
// bound sockets again, as at attach, all from one thread in the host
// namespace. A port that a live process holds (another driver on the
// namespace) stays registered without a socket.
func (d *Driver) rehold(eps []*Endpoint) {
	if len(eps) == 0 {
		return
	}
	if d.noHolds {
		d.registerPorts(eps)
		return
	}
	err := d.host.Do(func(t kern.Thread) error {
		for _, e := range eps {
			e.mu.Lock()
			for i := range e.ports {
				p := &e.ports[i]
				if p.Routed {
					continue
				}
				d.registerPort(portKey{Proto: p.Proto, IP: p.HostIP, Port: p.HostPort})
				if f, _, err := t.BindPort(p.Proto, p.HostIP, p.HostPort); err == nil {
					p.hold = f
				}
			}
			e.mu.Unlock()
		}
		return nil
	})
	if err != nil {
		d.log.Warn("nlbridge: holding recovered ports", "network", eps[0].n.cfg.Name, "err", err)
	}
}

// networkList is the driver's networks, by name.
func (d *Driver) networkList() []*Network {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*Network, 0, len(d.networks))
	for _, n := range d.networks {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].cfg.Name < out[j].cfg.Name })
	return out
}

// Networks returns the networks in the driver's namespace, sorted by name:
// those made by this driver and those recovered from the kernel (made by
// an earlier driver or another process).
func (d *Driver) Networks() []*Network {
	d.sync("networks")
	return d.networkList()
}

// Endpoints returns the network's complete endpoints, sorted by ID: those
// attached by this driver and those recovered from the kernel.
func (n *Network) Endpoints() []*Endpoint {
	err := n.d.locked(context.Background(), nil, func(c *netlink.Conn) (bool, error) { return false, n.load(c) })
	if err != nil && !errors.Is(err, ErrClosed) {
		n.d.log.Error("nlbridge: reading endpoints", "network", n.cfg.Name, "err", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*Endpoint, 0, len(n.endpoints))
	for e := range n.endpoints {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// Endpoint returns the complete endpoint with that ID, if there is one.
func (n *Network) Endpoint(id string) (*Endpoint, bool) {
	for _, e := range n.Endpoints() {
		if e.id == id {
			return e, true
		}
	}
	return nil, false
}

// removeHalfNetwork undoes what a CreateNetwork that died left: a bridge it
// created (with its firewall elements), or on an adopted bridge the
// addresses it added and its record. Must hold the host lock.
func (d *Driver) removeHalfNetwork(c *netlink.Conn, br link.Link, rec netRecord) error {
	n := newNetwork(d, rec.Config)
	n.index, n.adopted, n.added = br.Index, rec.Adopted, rec.Added
	n.group = br.Group
	if n.group == 0 || n.adopted {
		n.group = groupBase + br.Index
	}
	if err := n.deleteLinks(c); err != nil {
		return err
	}
	if d.fw != nil { // the links are gone: finish, without a deadline
		return d.fw.RemoveNetwork(context.Background(), n.natNetwork())
	}
	return nil
}
