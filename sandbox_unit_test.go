package bridge

import (
	"net/netip"
	"testing"

	"github.com/nlbridge/bridge/nat"
)

// Once stopped, the gate sends nothing (the announcer is not touched).
func TestAdvGateStopped(t *testing.T) {
	g := &advGate{}
	g.stop()
	if stopped, err := g.send(nil); !stopped || err != nil {
		t.Fatalf("send after stop: stopped %v, err %v", stopped, err)
	}
}

// Only IPv4-only networks without the firewall touch the sandbox's
// default disable_ipv6; the others leave /proc alone.
func TestInheritNoIPv6OnlyWithoutFirewall(t *testing.T) {
	v4 := NetworkConfig{Name: "nlbt0", IPv4: netip.MustParsePrefix("172.29.0.1/24")}
	dual := v4
	dual.IPv6 = netip.MustParsePrefix("fd29::1/64")
	for _, n := range []*Network{{d: &Driver{fw: &nat.Firewall{}}, cfg: v4}, {d: &Driver{}, cfg: dual}} {
		e := &Endpoint{n: n}
		restore, err := e.inheritNoIPv6("attach", nil) // touches no thread
		if err != nil || restore == nil || restore() != nil {
			t.Errorf("%+v: %v", n.cfg, err)
		}
	}
}
