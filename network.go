package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/addr"
	"github.com/nlbridge/bridge/internal/alloc"
	"github.com/nlbridge/bridge/internal/kern"
	"github.com/nlbridge/bridge/internal/nl"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/nat"
	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

// NetworkConfig describes a bridge network. Name is required; everything
// else may be left zero.
type NetworkConfig struct {
	Name string       // bridge device name
	IPv4 netip.Prefix // gateway address on the bridge with the subnet length, e.g. 172.18.0.1/16; zero = no IPv4
	IPv6 netip.Prefix // gateway address and subnet, e.g. fd00:1::1/64; zero = no IPv6
	MTU  int          // bridge and veth MTU; 0 = kernel default

	// Internal: sandboxes get no default route, and nothing is forwarded
	// into or out of the bridge; the gateway itself stays reachable.
	Internal bool

	// Firewall settings (ignored with Options.NoFirewall). The zero values
	// are Docker's defaults.
	GatewayModeIPv4 GatewayMode // zero = NAT
	GatewayModeIPv6 GatewayMode // zero = NAT
	HostIPv4        netip.Addr  // NAT modes: SNAT outbound IPv4 to this address instead of masquerade
	HostIPv6        netip.Addr  // likewise for IPv6
	DisableICC      bool        // sandboxes on this bridge cannot reach each other (bridge-port isolation)
	DefaultHostIP   netip.Addr  // host address for port mappings whose HostIP is zero; zero = all addresses

	// AllowSpoofing turns off the source checks on the network's ports,
	// for sandboxes that route or bridge other addresses: by default a
	// sandbox can send only from its own MAC and addresses (see the
	// README's Security section). Router Advertisements and Redirects
	// from sandboxes are dropped either way.
	AllowSpoofing bool
}

// GatewayMode is a network's gateway mode for one address family; the
// zero value is NAT. Its String is the name records and the CNI config use.
type GatewayMode uint8

// Gateway modes.
const (
	NAT            GatewayMode = iota // masquerade; from outside only published ports get in
	NATUnprotected                    // masquerade; routed access from outside allowed
	Routed                            // no NAT; outside reaches published ports at the container address, and ICMP
	Isolated                          // no gateway address, no default route, nothing forwarded
)

func (m GatewayMode) String() string { return m.nat().String() }

// nat is the firewall's mode: the same values.
func (m GatewayMode) nat() nat.Mode { return nat.Mode(m) }

// gateway reports whether the network has a gateway address of a family.
func (c NetworkConfig) gateway(v6 bool) bool {
	if v6 {
		return c.IPv6.IsValid() && c.GatewayModeIPv6 != Isolated
	}
	return c.IPv4.IsValid() && c.GatewayModeIPv4 != Isolated
}

// groupBase is added to the bridge's ifindex to make the network's link
// group: unique in the namespace while the bridge exists.
const groupBase = 0x6e6c0000

// Network is a bridge and the endpoints attached to it. It is safe for
// concurrent use.
type Network struct {
	d       *Driver
	cfg     NetworkConfig
	index   uint32         // bridge ifindex
	group   uint32         // link group of the veths (and of the bridge, unless adopted)
	adopted bool           // the bridge existed and is not ours: never delete it
	stp     bool           // spanning tree on: ports take seconds to forward
	added   []netip.Prefix // addresses we put on an adopted bridge

	mu        sync.Mutex
	endpoints map[*Endpoint]struct{} // complete: listed by Endpoints
	inflight  map[*Endpoint]struct{} // being attached by this process
	foreign   []epRecord             // being attached by other processes (at the last load)
	loaded    bool                   // endpoints read from the kernel
	used      map[netip.Addr]bool    // endpoint addresses, reserved before the kernel is touched
	macs      map[string]bool
	ids       map[string]bool
	released  map[netip.Addr]bool // addresses used before: flush their conntrack entries on reuse
	deleted   bool
}

func newNetwork(d *Driver, cfg NetworkConfig) *Network {
	return &Network{d: d, cfg: cfg, endpoints: map[*Endpoint]struct{}{}, inflight: map[*Endpoint]struct{}{},
		used: map[netip.Addr]bool{}, macs: map[string]bool{}, ids: map[string]bool{}, released: map[netip.Addr]bool{}}
}

// Config returns the network's configuration.
func (n *Network) Config() NetworkConfig { return n.cfg }

// Adopted reports whether the bridge existed before and is left in place by
// Delete.
func (n *Network) Adopted() bool { return n.adopted }

// BridgeIndex is the bridge's interface index in the driver's namespace.
func (n *Network) BridgeIndex() uint32 { return n.index }

// Group is the link group holding the network's host-side devices.
func (n *Network) Group() uint32 { return n.group }

// CreateNetwork creates the bridge cfg.Name, or adopts an existing bridge of
// that name, and sets it up: MTU, pinned MAC, gateway addresses (and
// fe80::1/64 with IPv6), IPv6 enabled without router advertisements, IP
// forwarding on, link up. On failure nothing it made is left behind.
//
// A network that already exists (recovered at Open, or made by another
// process) is returned as it is if cfg matches its configuration; a
// different cfg is ErrConflict naming the first field that differs.
func (d *Driver) CreateNetwork(ctx context.Context, cfg NetworkConfig) (*Network, error) {
	op := "create network " + cfg.Name
	if err := checkNetwork(op, cfg); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, kernel(op, err)
	}
	var n *Network
	err := d.locked(ctx, nil, func(c *netlink.Conn) (bool, error) {
		if old, ok := d.Network(cfg.Name); ok {
			n = old
			return false, old.sameConfig(op, cfg)
		}
		n = newNetwork(d, cfg)
		if err := d.reserve(op, n); err != nil {
			return false, err
		}
		if err := n.setup(ctx, op, c); err != nil {
			d.unreserve(n)
			return true, err
		}
		n.loaded = true // a new bridge has no endpoints; an adopted one none of ours
		return true, nil
	})
	if err != nil {
		return nil, ctxError(ctx, op, err)
	}
	return n, nil
}

// sameConfig refuses a configuration that differs from the network's.
func (n *Network) sameConfig(op string, cfg NetworkConfig) error {
	have := n.cfg
	for _, f := range []struct {
		name      string
		want, got any
	}{
		{"IPv4", cfg.IPv4, have.IPv4}, {"IPv6", cfg.IPv6, have.IPv6}, {"MTU", cfg.MTU, have.MTU},
		{"Internal", cfg.Internal, have.Internal},
		{"GatewayModeIPv4", cfg.GatewayModeIPv4, have.GatewayModeIPv4},
		{"GatewayModeIPv6", cfg.GatewayModeIPv6, have.GatewayModeIPv6},
		{"HostIPv4", cfg.HostIPv4, have.HostIPv4}, {"HostIPv6", cfg.HostIPv6, have.HostIPv6},
		{"DisableICC", cfg.DisableICC, have.DisableICC}, {"DefaultHostIP", cfg.DefaultHostIP, have.DefaultHostIP},
		{"AllowSpoofing", cfg.AllowSpoofing, have.AllowSpoofing},
	} {
		if f.want != f.got {
			return conflict(op, f.name, f.want, fmt.Sprintf("the network exists with %v", f.got))
		}
	}
	return nil
}

func checkNetwork(op string, cfg NetworkConfig) error {
	if err := checkName(op, "Name", cfg.Name); err != nil {
		return err
	}
	if err := checkMTU(op, cfg.MTU); err != nil {
		return err
	}
	if err := checkSubnet(op, "IPv4", cfg.IPv4, true); err != nil {
		return err
	}
	if err := checkSubnet(op, "IPv6", cfg.IPv6, false); err != nil {
		return err
	}
	for _, m := range []struct {
		field string
		mode  GatewayMode
	}{{"GatewayModeIPv4", cfg.GatewayModeIPv4}, {"GatewayModeIPv6", cfg.GatewayModeIPv6}} {
		if m.mode > Isolated {
			return invalid(op, m.field, m.mode, "unknown gateway mode")
		}
	}
	switch {
	case cfg.HostIPv4.IsValid() && !cfg.HostIPv4.Is4():
		return invalid(op, "HostIPv4", cfg.HostIPv4, "not an IPv4 address")
	case cfg.HostIPv6.IsValid() && (!cfg.HostIPv6.Is6() || cfg.HostIPv6.Is4In6()):
		return invalid(op, "HostIPv6", cfg.HostIPv6, "not an IPv6 address")
	case cfg.DefaultHostIP.IsValid() && cfg.DefaultHostIP.Zone() != "":
		return invalid(op, "DefaultHostIP", cfg.DefaultHostIP, "zones are not supported")
	}
	return nil
}

// reserve claims the bridge name and subnets among this driver's networks.
func (d *Driver) reserve(op string, n *Network) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return &Error{Op: op, Kind: ErrClosed}
	}
	if _, ok := d.networks[n.cfg.Name]; ok {
		return &Error{Op: op, Field: "Name", Value: n.cfg.Name, Kind: ErrExists}
	}
	for _, o := range d.networks {
		for _, p := range [][2]netip.Prefix{{n.cfg.IPv4, o.cfg.IPv4}, {n.cfg.IPv6, o.cfg.IPv6}} {
			if p[0].IsValid() && p[1].IsValid() && p[0].Masked().Overlaps(p[1].Masked()) {
				field := "IPv4"
				if p[0].Addr().Is6() {
					field = "IPv6"
				}
				return conflict(op, field, p[0], "overlaps network "+o.cfg.Name+" ("+p[1].String()+")")
			}
		}
	}
	d.networks[n.cfg.Name] = n
	return nil
}

func (d *Driver) unreserve(n *Network) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.networks[n.cfg.Name] == n {
		delete(d.networks, n.cfg.Name)
	}
}

// setup creates or adopts the bridge and configures it; on failure it
// undoes what it did. The bridge's record is written twice: with this
// process as its owner before anything else changes, and complete at the
// end, so that a crash in between leaves a record that GC can undo.
func (n *Network) setup(ctx context.Context, op string, c *netlink.Conn) (err error) {
	br, err := link.Get(c, n.cfg.Name)
	if err == nil && isNetRecord(br.Alias) {
		// Ours, but not recovered: half-made by a process that died, or
		// from a release without records. Start afresh.
		if rec, derr := decodeNetRecord(br.Alias); derr == nil && rec.Owner != (owner{}) {
			rec.Config.Name = n.cfg.Name
			if err := n.d.removeHalfNetwork(c, br, rec); err != nil {
				return kernel(op, err)
			}
			br, err = link.Get(c, n.cfg.Name)
		}
	}
	created := errors.Is(err, unix.ENODEV)
	switch {
	case created:
		pending := n.record()
		pending.Owner = n.d.self
		br, err = link.CreateBridge(c, link.BridgeSpec{Name: n.cfg.Name, MTU: n.cfg.MTU, MAC: alloc.Random(),
			Alias: pending.encode()})
		if err != nil {
			if br.Index != 0 { // created, but its record was refused
				n.d.undoLink(op, br.Index)
			}
			return kernel(op, err)
		}
		defer func() {
			if err != nil {
				n.d.undoLink(op, br.Index)
			}
		}()
	case err != nil:
		return kernel(op, err)
	case br.Kind != "bridge":
		return conflict(op, "Name", n.cfg.Name, "a device of kind "+strconv.Quote(br.Kind)+" has this name")
	case n.cfg.MTU != 0 && br.MTU != n.cfg.MTU:
		return conflict(op, "MTU", n.cfg.MTU, "the existing bridge has MTU "+strconv.Itoa(br.MTU))
	}
	ours := created || isNetRecord(br.Alias)
	n.adopted = !ours
	n.stp = br.STP
	n.index = br.Index
	n.group = groupBase + br.Index
	if ours && br.Group != 0 {
		n.group = br.Group // ours from an earlier run: keep its group
	}

	var have []addr.Addr
	if !created {
		if have, err = addr.List(c, br.Index); err != nil {
			return kernel(op, err)
		}
	}
	var add []netip.Prefix
	var addMsgs []netlink.Message
	for _, want := range n.gatewayAddrs() {
		found := false
		for _, h := range have {
			if h.Prefix == want {
				found = true
			} else if want.Addr().Is4() && h.Prefix.Addr().Is4() {
				return conflict(op, "IPv4", want, "the bridge already has "+h.Prefix.String())
			}
		}
		if !found {
			add = append(add, want)
			addMsgs = append(addMsgs, addr.AddMsg(br.Index, want))
		}
	}
	if n.adopted {
		n.added = add
	}
	// A foreign alias is left alone: such a bridge is not recovered after a
	// restart.
	recorded := ours || br.Alias == ""
	rec := n.record()
	rec.Owner = n.d.self
	var msgs []netlink.Message
	switch {
	case created:
		// It has its pending record from the create; its group goes in
		// the last batch.
		addMsgs = append([]netlink.Message{link.SetMsg(br.Index, false, n.group, "")}, addMsgs...)
	case recorded:
		msgs = append(msgs, link.SetMsg(br.Index, !br.Up, 0, rec.encode()))
	case !br.Up:
		msgs = append(msgs, link.SetMsg(br.Index, true, 0, ""))
	}
	if len(msgs) > 0 {
		if _, err := nl.Exec(c, msgs...); err != nil {
			return kernel(op, err)
		}
	}
	defer func() {
		if err != nil && !created && recorded {
			nl.Exec(c, link.SetAliasMsg(br.Index, br.Alias))
		}
	}()
	if err := n.d.writeHostSysctls(n.bridgeSysctls()); err != nil {
		return kernel(op, err)
	}
	if fw := n.d.fw; fw != nil {
		aerr := fw.AddNetwork(ctx, n.natNetwork())
		// The kernel applies a batch inside sendmsg: one whose answer the
		// ctx cut short may be in, and is removed with the rest.
		if aerr == nil || nl.Done(ctx) != nil {
			defer func() {
				if err == nil {
					return
				}
				if rerr := fw.RemoveNetwork(context.Background(), n.natNetwork()); rerr != nil {
					n.d.log.Error("nlbridge: undoing a failed operation", "op", op, "err", rerr)
				}
			}()
		}
		if aerr != nil {
			return kernel(op, aerr)
		}
	}
	if recorded {
		addMsgs = append(addMsgs, link.SetAliasMsg(br.Index, n.record().encode()))
	}
	if len(addMsgs) == 0 {
		return nil
	}
	if _, err := nl.Exec(c, addMsgs...); err != nil {
		if !created {
			for _, p := range add {
				nl.Exec(c, addr.DeleteMsg(br.Index, p))
			}
		}
		return kernel(op, err)
	}
	return nil
}

// record is the network's record as the bridge carries it once complete.
func (n *Network) record() netRecord {
	return netRecord{Config: n.cfg, Adopted: n.adopted, Added: n.added}
}

// gatewayAddrs are the addresses the bridge carries.
func (n *Network) gatewayAddrs() []netip.Prefix {
	var out []netip.Prefix
	if n.cfg.gateway(false) {
		out = append(out, n.cfg.IPv4)
	}
	if n.cfg.gateway(true) {
		out = append(out, n.cfg.IPv6)
		if n.cfg.IPv6.Masked() != linkLocal6 {
			out = append(out, netip.MustParsePrefix("fe80::1/64"))
		}
	}
	return out
}

// bridgeSysctls enable IPv6 without router advertisements on the bridge,
// IP forwarding for the families with a gateway and, with the firewall,
// route_localnet so that 127.0.0.1 can reach published ports.
func (n *Network) bridgeSysctls() []nsutil.Sysctl {
	var s []nsutil.Sysctl
	br := dotted(n.cfg.Name)
	if n.cfg.gateway(false) {
		s = append(s, nsutil.Sysctl{Key: "net.ipv4.ip_forward", Value: "1"})
		if n.d.fw != nil {
			s = append(s, nsutil.Sysctl{Key: "net.ipv4.conf." + br + ".route_localnet", Value: "1"})
		}
	}
	if n.cfg.IPv6.IsValid() {
		s = append(s,
			nsutil.Sysctl{Key: "net.ipv6.conf." + br + ".disable_ipv6", Value: "0"},
			nsutil.Sysctl{Key: "net.ipv6.conf." + br + ".accept_ra", Value: "0"})
	}
	if n.cfg.gateway(true) {
		s = append(s, nsutil.Sysctl{Key: "net.ipv6.conf.all.forwarding", Value: "1"})
	}
	return s
}

// natNetwork is the firewall's view of the network.
func (n *Network) natNetwork() nat.Network {
	return nat.Network{Bridge: n.cfg.Name, Mode4: n.cfg.GatewayModeIPv4.nat(), Mode6: n.cfg.GatewayModeIPv6.nat(),
		Internal: n.cfg.Internal, SNAT4: n.cfg.HostIPv4, SNAT6: n.cfg.HostIPv6}
}

// Delete removes every endpoint of the network in one group delete (and
// the devices of endpoints detached earlier), then the bridge unless it was
// adopted (from an adopted bridge it removes only the addresses it added
// and its record), then the firewall elements and conntrack entries of all
// of it. The links go first: a crash after them leaves only firewall
// elements that belong to nothing, which GC removes. Deleting twice is not
// an error.
func (n *Network) Delete(ctx context.Context) error {
	op := "delete network " + n.cfg.Name
	if err := ctx.Err(); err != nil {
		return kernel(op, err)
	}
	var list []*Endpoint
	err := n.d.locked(ctx, nil, func(c *netlink.Conn) (bool, error) {
		if err := n.load(c); err != nil {
			return false, err
		}
		n.mu.Lock()
		if n.deleted {
			n.mu.Unlock()
			return false, nil
		}
		n.deleted = true
		for ep := range n.endpoints {
			list = append(list, ep)
		}
		n.endpoints = map[*Endpoint]struct{}{}
		n.mu.Unlock()
		for _, ep := range list {
			ep.markDetached()
			ep.stopAdvertising()
		}
		if err := n.deleteLinks(c); err != nil {
			n.undelete(list) // the network stays, to be deleted again
			list = nil
			return true, err
		}
		if err := n.d.unpublish(list); err != nil { // also releases the host ports
			return true, err
		}
		if n.d.fw != nil {
			return true, n.d.fw.RemoveNetwork(context.Background(), n.natNetwork()) // the links are gone: finish
		}
		return true, nil
	})
	errs := []error{err}
	// With the links gone no new entries can appear: flush them now, all
	// in one request.
	errs = append(errs, n.d.flushConntrack(context.Background(), true, addrsOf(list)...))
	n.mu.Lock()
	deleted := n.deleted
	n.mu.Unlock()
	if deleted {
		n.d.unreserve(n)
	}
	if err := errors.Join(errs...); err != nil {
		return ctxError(ctx, op, err)
	}
	return nil
}

// undelete puts back what Delete took from the network before the kernel
// refused to delete its links.
func (n *Network) undelete(eps []*Endpoint) {
	n.mu.Lock()
	n.deleted = false
	for _, e := range eps {
		n.endpoints[e] = struct{}{}
	}
	n.mu.Unlock()
	for _, e := range eps {
		e.mu.Lock()
		e.detached = false
		e.mu.Unlock()
	}
}

// deleteLinks deletes the network's devices: its group (with the bridge,
// unless adopted), retired devices awaiting the reclaimer, and for an
// adopted bridge the addresses this package added and its record.
func (n *Network) deleteLinks(c *netlink.Conn) error {
	if err := link.DeleteGroup(c, n.group); err != nil {
		return err
	}
	if err := link.DeleteGroup(c, reclaimGroup); err != nil {
		return err
	}
	if !n.adopted {
		return link.Delete(c, n.index) // normally gone with the group
	}
	for _, p := range n.added {
		if _, err := nl.Exec(c, addr.DeleteMsg(n.index, p)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return err
		}
	}
	_, err := nl.ExecIgnoring(c, unix.ENODEV, link.SetAliasMsg(n.index, ""))
	return err
}

// dotted writes an interface name as a sysctl key component.
func dotted(ifname string) string {
	b := []byte(ifname)
	for i := range b {
		if b[i] == '.' {
			b[i] = '/'
		}
	}
	return string(b)
}

// writeHostSysctls writes sysctls in the driver's namespace.
func (d *Driver) writeHostSysctls(ss []nsutil.Sysctl) error {
	return d.host.Do(func(t kern.Thread) error {
		for _, s := range ss {
			if err := t.WriteSysctl(s); err != nil {
				return err
			}
		}
		return nil
	})
}
