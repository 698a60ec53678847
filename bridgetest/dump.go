package bridgetest

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Dump prints every namespace, in creation order (removed ones too): its
// links, addresses and routes (as ip(8) lists them), its sysctls and its
// nf_tables ruleset (as `nft list ruleset` prints it).
// The output is deterministic for a given state; names and MACs that the
// driver chooses at random (host veth ends, bridge MACs, generated IDs)
// vary from run to run.
func (k *Kernel) Dump() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var b strings.Builder
	for _, ns := range k.all {
		ns.dump(&b)
	}
	return b.String()
}

// DumpNS is Dump for the namespace at path ("" = HostNS) only.
func (k *Kernel) DumpNS(path string) string {
	if path == "" {
		path = HostNS
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var b strings.Builder
	for _, ns := range k.all {
		if ns.path == path {
			ns.dump(&b)
		}
	}
	return b.String()
}

func (ns *netns) dump(b *strings.Builder) {
	fmt.Fprintf(b, "netns %s\n", ns.name())
	for _, l := range ns.sortedLinks() {
		ns.dumpLink(b, l)
	}
	for _, a := range ns.sortedAddrs() {
		family := "inet"
		if a.prefix.Addr().Is6() {
			family = "inet6"
		}
		fmt.Fprintf(b, "  %s %s dev %s\n", family, a.prefix, ns.links[a.index].name)
	}
	for _, r := range ns.sortedRoutes() {
		s := r.dst.String()
		if r.dst.Bits() == 0 {
			s = "default"
		}
		if r.gw.IsValid() {
			s += " via " + r.gw.String()
		}
		s += " dev " + ns.links[r.oif].name
		if r.connected {
			s += " proto kernel scope link"
		}
		if r.metric != 0 {
			s += fmt.Sprintf(" metric %d", r.metric)
		}
		fmt.Fprintf(b, "  route %s\n", s)
	}
	var sysctls []string
	for k, v := range ns.sysctls {
		sysctls = append(sysctls, k+" = "+v)
	}
	for _, l := range ns.links {
		for k, v := range l.sysctls {
			family, key, _ := strings.Cut(k, ".")
			group, key, _ := strings.Cut(key, ".")
			sysctls = append(sysctls, fmt.Sprintf("net.%s.%s.%s.%s = %s", family, group, strings.ReplaceAll(l.name, ".", "/"), key, v))
		}
	}
	sort.Strings(sysctls)
	for _, s := range sysctls {
		fmt.Fprintf(b, "  sysctl %s\n", s)
	}
	var ports []string
	for p := range ns.ports {
		ports = append(ports, fmt.Sprintf("%s %s", protoName(p.proto), netip.AddrPortFrom(p.ip, p.port)))
	}
	sort.Strings(ports)
	for _, p := range ports {
		fmt.Fprintf(b, "  bound %s\n", p)
	}
	b.WriteString(ns.nft.Dump("  "))
}

func (ns *netns) dumpLink(b *strings.Builder, l *ifc) {
	state := "DOWN"
	if l.up {
		state = "UP"
	}
	fmt.Fprintf(b, "  %d: %s: <%s> %s mtu %d", l.index, l.name, l.kind, state, l.mtu)
	if l.master != 0 {
		fmt.Fprintf(b, " master %s", ns.links[l.master].name)
		if l.hairpin {
			b.WriteString(" hairpin")
		}
		if l.isolated {
			b.WriteString(" isolated")
		}
	}
	if l.group != 0 {
		fmt.Fprintf(b, " group %#x", l.group)
	}
	if l.kind != "loopback" {
		fmt.Fprintf(b, " link/ether %s", l.mac)
	}
	if l.peerNS != nil {
		if p := l.peerNS.links[l.peer]; p != nil {
			if l.peerNS == ns {
				fmt.Fprintf(b, " peer %s", p.name)
			} else {
				fmt.Fprintf(b, " peer %d@%s", p.index, l.peerNS.name())
			}
		}
	}
	if l.addrGenNone {
		b.WriteString(" addrgenmode none")
	}
	b.WriteString("\n")
	if l.alias != "" {
		fmt.Fprintf(b, "      alias %s\n", l.alias)
	}
}

func protoName(p uint8) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 132:
		return "sctp"
	}
	return fmt.Sprint("proto", p)
}
