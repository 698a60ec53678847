package bridge

import (
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestNetRecordRoundTrip(t *testing.T) {
	for _, r := range []netRecord{
		{},
		{Config: NetworkConfig{IPv4: netip.MustParsePrefix("172.18.0.1/16")}},
		{Config: NetworkConfig{IPv4: netip.MustParsePrefix("10.0.0.1/24"), IPv6: netip.MustParsePrefix("fd00:1::1/64"),
			MTU: 1450, Internal: true, GatewayModeIPv4: Routed, GatewayModeIPv6: NATUnprotected,
			HostIPv4: netip.MustParseAddr("192.0.2.1"), HostIPv6: netip.MustParseAddr("2001:db8::1"),
			DisableICC: true, AllowSpoofing: true, DefaultHostIP: netip.MustParseAddr("127.0.0.1")},
			Adopted: true, Added: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")}, Owner: owner{42, 7}},
	} {
		s := r.encode()
		if len(s) > maxAliasLen {
			t.Errorf("%q: %d bytes", s, len(s))
		}
		got, err := decodeNetRecord(s)
		if err != nil {
			t.Fatalf("decode %q: %v", s, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("decode(%q) = %+v, want %+v", s, got, r)
		}
		if !isNetRecord(s) {
			t.Errorf("isNetRecord(%q) = false", s)
		}
	}
}

func TestEpRecordRoundTrip(t *testing.T) {
	r := epRecord{ID: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef/eth0", IfName: "eth0",
		NetNS: "/var/run/netns/cni-6f1c2b9e-3d2a-4c1b-9f00-123456789abc", MAC: net.HardwareAddr{2, 0x42, 10, 88, 0, 12},
		IPv4: netip.MustParseAddr("10.88.0.12"), IPv6: netip.MustParseAddr("fd00::c"),
		Ports: []portRecord{{Proto: TCP, HostIP: netip.IPv4Unspecified(), HostPort: 8080, Port: 80},
			{Proto: SCTP, Routed: true, HostIP: netip.MustParseAddr("fd00::c"), HostPort: 80, Port: 80}}}
	s := r.encode()
	if len(s) > maxAliasLen {
		t.Errorf("a CNI-sized record with two ports takes %d bytes: %q", len(s), s)
	}
	got, err := decodeEpRecord(s)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Errorf("decode(%q) = %+v, want %+v", s, got, r)
	}
	// Spaces and percent signs in values survive.
	r.ID, r.NetNS, r.Owner = "a b%c", "/run/netns/with space", owner{1, 2}
	if got, err := decodeEpRecord(r.encode()); err != nil || !reflect.DeepEqual(got, r) {
		t.Errorf("escaped round trip: %+v, %v", got, err)
	}
}

func TestRecordGarbage(t *testing.T) {
	for _, s := range []string{"", "nlbridge", "docker0 bridge", "nlbridge/1", "nlbridge/2 ep id=x"} {
		if _, err := decodeEpRecord(s); err == nil {
			t.Errorf("decodeEpRecord(%q) accepted", s)
		}
	}
	for _, s := range []string{
		"nlbridge/1 ep id=x if=eth0 ns=/x",        // no mac
		"nlbridge/1 ep id=x if=eth0 ns=/x mac=zz", // bad mac
		"nlbridge/1 ep id=x if=eth0 ns=/x mac=024200000002 v4=fd00::1",
		"nlbridge/1 ep id=x if=eth0 ns=/x mac=024200000002 p=tcp/1.2.3.4/0/80",
		"nlbridge/1 ep id=x if=eth0 ns=/x mac=024200000002 owner=0.1",
		"nlbridge/1 ep id=%zz if=eth0 ns=/x mac=024200000002",
		"nlbridge/1 ep id=x if=eth0 ns=/x mac=024200000002 what=1",
	} {
		_, err := decodeEpRecord(s)
		if err == nil {
			t.Errorf("decodeEpRecord(%q) accepted", s)
		} else if !strings.Contains(err.Error(), "record") {
			t.Errorf("decodeEpRecord(%q): %v does not say what it read", s, err)
		}
	}
	for _, s := range []string{"nlbridge/1 net v4=fd00::1/64", "nlbridge/1 net mtu=1", "nlbridge/1 net m4=fast", "nlbridge/1 netx"} {
		if _, err := decodeNetRecord(s); err == nil {
			t.Errorf("decodeNetRecord(%q) accepted", s)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(epRecord{ID: "x", IfName: "eth0", NetNS: "/run/netns/a", MAC: net.HardwareAddr{2, 0x42, 1, 2, 3, 4},
		IPv4: netip.MustParseAddr("10.0.0.2"), Ports: []portRecord{{Proto: UDP, HostIP: netip.IPv6Unspecified(), HostPort: 53, Port: 53}}}.encode())
	f.Add(netRecord{Config: NetworkConfig{IPv4: netip.MustParsePrefix("10.0.0.1/24")}, Owner: owner{3, 4}}.encode())
	f.Add("nlbridge/1 ep id=%41 if=eth0")
	f.Fuzz(func(t *testing.T, s string) {
		if r, err := decodeEpRecord(s); err == nil {
			// What decodes re-encodes to something that decodes the same.
			again, err := decodeEpRecord(r.encode())
			if err != nil || !reflect.DeepEqual(again, r) {
				t.Fatalf("%q: re-decode %+v, %v; want %+v", s, again, err, r)
			}
		}
		if r, err := decodeNetRecord(s); err == nil {
			again, err := decodeNetRecord(r.encode())
			if err != nil || !reflect.DeepEqual(again, r) {
				t.Fatalf("%q: re-decode %+v, %v; want %+v", s, again, err, r)
			}
		}
	})
}
