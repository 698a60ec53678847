package disco_test

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/ndp"
	"github.com/nlbridge/bridge/disco"
)

var mac = net.HardwareAddr{0x02, 0x42, 0xac, 0x12, 0x00, 0x02}

func TestGratuitousARPBytes(t *testing.T) {
	b, err := disco.Gratuitous(mac, netip.MustParseAddr("172.18.0.2")).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0, 1, 8, 0, 6, 4, 0, 1, // Ethernet, IPv4, hlen 6, plen 4, request
		0x02, 0x42, 0xac, 0x12, 0x00, 0x02, 172, 18, 0, 2, // sender MAC, IP
		0, 0, 0, 0, 0, 0, 172, 18, 0, 2, // target MAC zero, target IP = sender IP
	}
	if !bytes.Equal(b, want) {
		t.Errorf("gratuitous ARP =\n% x\nwant\n% x", b, want)
	}
}

func TestARPRejectsBadInput(t *testing.T) {
	if _, err := disco.Gratuitous(mac[:5], netip.MustParseAddr("172.18.0.2")).MarshalBinary(); err == nil {
		t.Error("5-byte MAC accepted")
	}
	if _, err := disco.Gratuitous(mac, netip.MustParseAddr("fd00::2")).MarshalBinary(); err == nil {
		t.Error("IPv6 address accepted")
	}
	for _, b := range [][]byte{nil, make([]byte, 27), append([]byte{0, 6}, make([]byte, 26)...)} {
		if _, err := disco.ParseARP(b); !errors.Is(err, disco.ErrBadFrame) {
			t.Errorf("ParseARP(% x) err = %v", b, err)
		}
	}
}

func TestUnsolicitedNA(t *testing.T) {
	ip := netip.MustParseAddr("fd00::2")
	b, err := disco.UnsolicitedNA(mac, ip)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ndp.ParseMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok || !na.Override || na.Solicited || na.Router || na.TargetAddress != ip || len(na.Options) != 1 {
		t.Fatalf("NA = %+v", m)
	}
	if lla, ok := na.Options[0].(*ndp.LinkLayerAddress); !ok || lla.Direction != ndp.Target || !bytes.Equal(lla.Addr, mac) {
		t.Errorf("option = %+v, want target link-layer address %s", na.Options[0], mac)
	}
}

// FuzzARPRoundTrip checks that every packet ParseARP accepts encodes back
// to the same 28 bytes.
func FuzzARPRoundTrip(f *testing.F) {
	g, _ := disco.Gratuitous(mac, netip.MustParseAddr("10.0.0.1")).MarshalBinary()
	f.Add(g)
	f.Add(make([]byte, 28))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := disco.ParseARP(b)
		if err != nil {
			return
		}
		out, err := a.MarshalBinary()
		if err != nil {
			t.Fatalf("parsed %+v but cannot marshal: %v", a, err)
		}
		if !bytes.Equal(out, b[:28]) {
			t.Fatalf("round trip\n% x\n% x", b[:28], out)
		}
	})
}
