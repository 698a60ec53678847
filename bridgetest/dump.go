package bridgetest

import (
	"fmt"
	"strings"
)

// Dump prints every namespace: links, addresses, routes, sysctls and the
// nf_tables ruleset.
func (k *Kernel) Dump() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var b strings.Builder
	for _, ns := range k.all {
		fmt.Fprintf(&b, "netns %s\n", ns.name())
		for _, l := range ns.sortedLinks() {
			fmt.Fprintf(&b, "  link %d %s %s up=%v master=%d group=%#x alias=%q peer=%d\n", l.index, l.name, l.kind, l.up, l.master, l.group, l.alias, l.peer)
		}
		for _, a := range ns.sortedAddrs() {
			fmt.Fprintf(&b, "  addr %d %s\n", a.index, a.prefix)
		}
		for _, r := range ns.sortedRoutes() {
			fmt.Fprintf(&b, "  route %s via %s dev %d metric %d\n", r.dst, r.gw, r.oif, r.metric)
		}
	}
	return b.String()
}
