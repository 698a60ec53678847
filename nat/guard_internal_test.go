package nat

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/nftables"
)

// GC's removal picks exactly the elements of the ports that are gone, in
// every guard set, whatever addresses they hold.
func TestElementsOfGonePorts(t *testing.T) {
	have := map[string][]nftables.SetElement{}
	for _, g := range []Guard{
		{Port: "vethgone", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, IPv4: netip.MustParseAddr("10.0.0.2"), IPv6: netip.MustParseAddr("fd00::2")},
		{Port: "vethstays", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, IPv4: netip.MustParseAddr("10.0.0.3")},
		{Port: "vethgone2", AllowSpoofing: true},
	} {
		g.elements(func(set string, els ...nftables.SetElement) { have[set] = append(have[set], els...) })
	}
	got := elementsOf(have, []string{"vethgone", "vethgone2"})
	want := map[string]int{setEndpoints: 2, setGuarded: 1, setMACs: 1, setAddrs4: 1, setAddrs6: 2}
	for set, n := range want {
		if len(got[set]) != n {
			t.Errorf("%s: %d elements picked, want %d", set, len(got[set]), n)
		}
		for _, el := range got[set] {
			if string(el.Key[:16]) == string(ifname("vethstays")) {
				t.Errorf("%s: picked an element of vethstays", set)
			}
		}
	}
}
