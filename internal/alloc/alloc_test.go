package alloc

import (
	"net/netip"
	"testing"
)

func TestLowest(t *testing.T) {
	for _, tc := range []struct {
		gw, want string
		taken    []string
	}{
		{"172.18.0.1/16", "172.18.0.2/16", nil},
		{"172.18.0.1/16", "172.18.0.4/16", []string{"172.18.0.2", "172.18.0.3"}},
		{"10.0.0.9/24", "10.0.0.1/24", nil},
		{"10.0.0.1/30", "10.0.0.2/30", nil},
		{"10.0.0.1/30", "", []string{"10.0.0.2"}}, // .3 is the broadcast address
		{"fd00::1/64", "fd00::2/64", nil},
		{"fd00::1/127", "", nil}, // fd00:: is the network address, fd00::1 the gateway
	} {
		taken := map[netip.Addr]bool{}
		for _, a := range tc.taken {
			taken[netip.MustParseAddr(a)] = true
		}
		got, ok := Lowest(netip.MustParsePrefix(tc.gw), func(a netip.Addr) bool { return taken[a] })
		if tc.want == "" {
			if ok {
				t.Errorf("%s %v: got %s, want none free", tc.gw, tc.taken, got)
			}
			continue
		}
		if !ok || got != netip.MustParsePrefix(tc.want) {
			t.Errorf("%s %v: got %s %v, want %s", tc.gw, tc.taken, got, ok, tc.want)
		}
	}
}

func TestLast(t *testing.T) {
	for in, want := range map[string]string{"172.18.0.1/16": "172.18.255.255", "10.0.0.0/30": "10.0.0.3", "fd00::/120": "fd00::ff"} {
		if got := Last(netip.MustParsePrefix(in)); got.String() != want {
			t.Errorf("Last(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestMAC(t *testing.T) {
	if m := MAC(netip.MustParseAddr("172.18.0.2")).String(); m != "02:42:ac:12:00:02" {
		t.Errorf("MAC = %s", m)
	}
	for range 100 {
		if m := MAC(netip.MustParseAddr("fd00::2")); m[0]&1 != 0 || m[0]&2 == 0 {
			t.Fatalf("random MAC %s: want locally administered unicast", m)
		}
	}
}

// The choice is the lowest address that is a host address of the
// subnet, not the gateway and not taken; none is left out.
func FuzzLowest(f *testing.F) {
	f.Add([]byte{10, 0, 0, 1}, uint8(24), []byte{2, 3, 5})
	f.Add([]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint8(120), []byte{2})
	f.Add([]byte{10, 0, 0, 1}, uint8(31), []byte{})
	f.Fuzz(func(t *testing.T, ip []byte, bits uint8, takenLow []byte) {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			return
		}
		// Small subnets only, so every address can be checked.
		if min := a.BitLen() - 10; int(bits) < min || int(bits) > a.BitLen() {
			return
		}
		gw := netip.PrefixFrom(a, int(bits))
		subnet := gw.Masked()
		taken := map[netip.Addr]bool{}
		for _, b := range takenLow { // offsets into the subnet
			x := subnet.Addr()
			for range int(b) {
				x = x.Next()
			}
			taken[x] = true
		}
		got, ok := Lowest(gw, func(a netip.Addr) bool { return taken[a] })
		var want netip.Addr
		for x := subnet.Addr(); x.IsValid() && subnet.Contains(x); x = x.Next() {
			host := x != subnet.Addr() && !(x.Is4() && x == Last(subnet))
			if host && x != gw.Addr() && !taken[x] {
				want = x
				break
			}
		}
		switch {
		case !want.IsValid() && ok:
			t.Fatalf("%s: got %s, but no address is free", gw, got)
		case want.IsValid() && (!ok || got.Addr() != want || got.Bits() != gw.Bits()):
			t.Fatalf("%s: got %s %v, want %s", gw, got, ok, want)
		}
	})
}
