package bridge

import (
	"testing"

	"github.com/nlbridge/bridge/nat"
)

// GatewayMode and the firewall's nat.Mode share values and names (the
// names are in records and CNI configs).
func TestGatewayModeMatchesTheFirewall(t *testing.T) {
	for _, tc := range []struct {
		m    GatewayMode
		n    nat.Mode
		name string
	}{{NAT, nat.NAT, "nat"}, {NATUnprotected, nat.NATUnprotected, "nat-unprotected"}, {Routed, nat.Routed, "routed"}, {Isolated, nat.Isolated, "isolated"}} {
		if tc.m.nat() != tc.n || tc.m.String() != tc.name {
			t.Errorf("%d: nat %v, name %q; want %v, %q", tc.m, tc.m.nat(), tc.m.String(), tc.n, tc.name)
		}
	}
}
