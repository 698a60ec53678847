package bridge

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/nlbridge/bridge/nsutil"
)

// attachPlan is an EndpointConfig checked against its network and
// resolved, once, before Attach touches the kernel. The attach steps
// consume it and validate nothing again; what is left to choose (the ID,
// the addresses, the MAC, the interface and host port names) depends on
// the kernel's state and is chosen under the host lock.
type attachPlan struct {
	netns      string
	id         string           // "" = a random one
	ifName     string           // "" = the lowest free eth<N>
	ipv4, ipv6 netip.Prefix     // zero = the lowest free address, if the network has the family
	mac        net.HardwareAddr // nil = derived from the IPv4 address
	sysctls    []sysctlTemplate
	metric     uint32 // EndpointConfig.RouteMetric
	ports      []portPlan
	adv        Advertise
}

// portPlan is one PortMapping with the host addresses it is published on,
// one per address family of the network.
type portPlan struct {
	field   string // "Ports[i]", for errors
	m       PortMapping
	hostIPs []netip.Addr
}

// sysctlTemplate is a sysctl of EndpointConfig.Sysctls, to be written for
// an interface name chosen later.
type sysctlTemplate struct {
	group string // "net.<family>.<group>"
	key   string
	value string
}

// on is the sysctl for interface ifName.
func (s sysctlTemplate) on(ifName string) nsutil.Sysctl {
	return nsutil.Sysctl{Key: s.group + "." + dotted(ifName) + "." + s.key, Value: s.value}
}

// plan checks cfg without the kernel and resolves it for Attach.
func (n *Network) plan(op string, cfg EndpointConfig) (attachPlan, error) {
	p := attachPlan{netns: cfg.NetNS, id: cfg.ID, ifName: cfg.IfName, ipv4: cfg.IPv4, ipv6: cfg.IPv6,
		mac: cfg.MAC, metric: cfg.RouteMetric}
	if cfg.NetNS == "" {
		return p, invalid(op, "NetNS", cfg.NetNS, "required")
	}
	if len(cfg.ID) > maxIDLen {
		return p, invalid(op, "ID", cfg.ID, fmt.Sprintf("longer than %d bytes", maxIDLen))
	}
	if cfg.IfName != "" {
		if err := checkName(op, "IfName", cfg.IfName); err != nil {
			return p, err
		}
	}
	var err error
	if p.sysctls, err = parseSysctls(op, cfg.IfName, cfg.Sysctls); err != nil {
		return p, err
	}
	if err := checkMAC(op, cfg.MAC); err != nil {
		return p, err
	}
	if p.adv, err = cfg.Advertise.resolve(op); err != nil {
		return p, err
	}
	if err := checkEndpointAddr(op, "IPv4", cfg.IPv4, n.cfg.IPv4); err != nil {
		return p, err
	}
	if err := checkEndpointAddr(op, "IPv6", cfg.IPv6, n.cfg.IPv6); err != nil {
		return p, err
	}
	if len(cfg.Ports) > 0 && n.d.fw == nil {
		return p, invalid(op, "Ports", len(cfg.Ports), "publishing ports needs the firewall (Options.NoFirewall is set)")
	}
	p.ports, err = n.planPorts(op, cfg.Ports)
	return p, err
}

// planPorts checks the mappings and resolves their host addresses: the
// mapping's own, else the network's DefaultHostIP, else the unspecified
// address of each family the network has.
func (n *Network) planPorts(op string, ms []PortMapping) ([]portPlan, error) {
	var out []portPlan
	for i, m := range ms {
		field := fmt.Sprintf("Ports[%d]", i)
		switch {
		case m.Proto != TCP && m.Proto != UDP && m.Proto != SCTP:
			return nil, invalid(op, field+".Proto", m.Proto, "want TCP, UDP or SCTP")
		case m.ContainerPort == 0:
			return nil, invalid(op, field+".ContainerPort", m.ContainerPort, "required")
		case m.HostPortEnd != 0 && (m.HostPort == 0 || m.HostPortEnd < m.HostPort):
			return nil, invalid(op, field+".HostPortEnd", m.HostPortEnd, "want a range HostPort-HostPortEnd with HostPort > 0")
		case m.HostIP.IsValid() && (m.HostIP.Zone() != "" || m.HostIP.Is4In6()):
			return nil, invalid(op, field+".HostIP", m.HostIP, "want a plain IPv4 or IPv6 address")
		}
		hostIP := m.HostIP
		if !hostIP.IsValid() {
			hostIP = n.cfg.DefaultHostIP
		}
		var ips []netip.Addr
		for _, ip := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
			subnet := n.cfg.IPv4
			if ip.Is6() {
				subnet = n.cfg.IPv6
			}
			if !subnet.IsValid() {
				continue // the network, so the endpoint, has no address of this family
			}
			if !hostIP.IsValid() {
				ips = append(ips, ip)
			} else if hostIP.Is6() == ip.Is6() {
				ips = append(ips, hostIP)
			}
		}
		if len(ips) == 0 {
			return nil, invalid(op, field, m, "the endpoint has no address of the host address's family")
		}
		out = append(out, portPlan{field: field, m: m, hostIPs: ips})
	}
	return out, nil
}

// checkEndpointAddr checks a wanted address against the network's gateway
// prefix gw.
func checkEndpointAddr(op, field string, p, gw netip.Prefix) error {
	switch {
	case !p.IsValid():
		return nil
	case !gw.IsValid():
		return invalid(op, field, p, "the network has no "+field+" subnet")
	case p.Addr().Is4() != gw.Addr().Is4() || p.Addr().Zone() != "" || p.Addr().Is4In6():
		return invalid(op, field, p, "not an "+field+" prefix")
	case p.Bits() != gw.Bits():
		return invalid(op, field, p, fmt.Sprintf("prefix length differs from the network's /%d", gw.Bits()))
	case p.Addr() == gw.Addr():
		return invalid(op, field, p, "is the gateway address")
	}
	return checkHost(op, field, p, gw.Masked())
}

// maxIDLen bounds EndpointConfig.ID; the whole record must fit in an
// interface alias.
const maxIDLen = 128

// checkRecord refuses an endpoint whose record, once its ports are
// published, might not fit in the host end's alias: it is encoded with
// the reserved ID and addresses, the longest interface name an automatic
// choice makes in practice, and each port's highest possible host port.
func (e *Endpoint) checkRecord(op string, p attachPlan) error {
	r := e.pendingRecord()
	if r.IfName == "" {
		r.IfName = "eth1000"
	}
	for _, pp := range p.ports {
		for _, ip := range pp.hostIPs {
			pr := portRecord{Proto: pp.m.Proto, HostIP: ip, HostPort: max(pp.m.HostPort, pp.m.HostPortEnd), Port: pp.m.ContainerPort}
			caddr, mode := e.ipv4.Addr(), e.n.cfg.GatewayModeIPv4
			if ip.Is6() {
				caddr, mode = e.ipv6.Addr(), e.n.cfg.GatewayModeIPv6
			}
			if mode == Routed {
				pr.Routed, pr.HostIP, pr.HostPort = true, caddr, pp.m.ContainerPort
			} else if pr.HostPort == 0 {
				pr.HostPort = 65535 // ephemeral
			}
			r.Ports = append(r.Ports, pr)
		}
	}
	if s := r.encode(); len(s) > maxAliasLen {
		field, value := "ID", e.id
		if len(p.ports) > 0 {
			field, value = "Ports", fmt.Sprint(len(p.ports))
		}
		return invalid(op, field, value, fmt.Sprintf("the endpoint's record (%d bytes) may not fit the %d bytes of an interface alias", len(s), maxAliasLen))
	}
	return nil
}

// parseSysctls turns "net.X.Y.IFNAME.key=value" templates into sysctls for
// an interface chosen later; ifName is its name if known already.
func parseSysctls(op, ifName string, in []string) ([]sysctlTemplate, error) {
	if ifName == "" {
		ifName = "eth0" // automatic names are all alike
	}
	out := make([]sysctlTemplate, 0, len(in))
	for _, s := range in {
		k, v, ok := strings.Cut(s, "=")
		parts := strings.Split(strings.TrimSpace(k), ".")
		if !ok || len(parts) != 5 || parts[0] != "net" || parts[3] != "IFNAME" {
			return nil, invalid(op, "Sysctls", s, "want net.<family>.<group>.IFNAME.<key>=<value>")
		}
		st := sysctlTemplate{group: strings.Join(parts[:3], "."), key: parts[4], value: strings.TrimSpace(v)}
		if _, err := nsutil.ParseSysctl(st.on(ifName).Key + "=" + v); err != nil {
			return nil, &Error{Op: op, Field: "Sysctls", Value: s, Kind: ErrInvalid, Err: err}
		}
		out = append(out, st)
	}
	return out, nil
}
