package addr_test

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"github.com/nlbridge/bridge/addr"
	"github.com/nlbridge/bridge/internal/nltestutil"
	"golang.org/x/sys/unix"
)

func TestAddMsgIPv4(t *testing.T) {
	m := addr.AddMsg(3, netip.MustParsePrefix("172.18.0.2/16"))
	if m.Header.Type != unix.RTM_NEWADDR || m.Header.Flags != netlink.Request|netlink.Acknowledge|netlink.Create|netlink.Excl {
		t.Fatalf("header = %+v", m.Header)
	}
	if want := []byte{unix.AF_INET, 16, 0, 0}; !bytes.Equal(m.Data[:4], want) || nlenc.Uint32(m.Data[4:8]) != 3 {
		t.Errorf("ifaddrmsg = %x", m.Data[:8])
	}
	a := nltestutil.Attrs(t, m.Data[unix.SizeofIfAddrmsg:])
	ip := []byte{172, 18, 0, 2}
	if !bytes.Equal(a[unix.IFA_ADDRESS], ip) || !bytes.Equal(a[unix.IFA_LOCAL], ip) || nlenc.Uint32(a[unix.IFA_FLAGS]) != 0 {
		t.Errorf("attributes = %v", a)
	}
}

func TestAddMsgIPv6HasNoDAD(t *testing.T) {
	m := addr.AddMsg(3, netip.MustParsePrefix("fd00::2/64"))
	if m.Data[0] != unix.AF_INET6 || m.Data[1] != 64 {
		t.Errorf("ifaddrmsg = %x", m.Data[:8])
	}
	a := nltestutil.Attrs(t, m.Data[unix.SizeofIfAddrmsg:])
	if nlenc.Uint32(a[unix.IFA_FLAGS]) != unix.IFA_F_NODAD {
		t.Errorf("IFA_FLAGS = %#x, want IFA_F_NODAD", nlenc.Uint32(a[unix.IFA_FLAGS]))
	}
	if !bytes.Equal(a[unix.IFA_ADDRESS], netip.MustParseAddr("fd00::2").AsSlice()) {
		t.Errorf("IFA_ADDRESS = %x", a[unix.IFA_ADDRESS])
	}
	if _, ok := a[unix.IFA_LOCAL]; ok {
		t.Error("IPv6 must not carry IFA_LOCAL")
	}
}

func TestDeleteMsg(t *testing.T) {
	m := addr.DeleteMsg(3, netip.MustParsePrefix("10.0.0.1/8"))
	if m.Header.Type != unix.RTM_DELADDR || m.Header.Flags != netlink.Request|netlink.Acknowledge {
		t.Errorf("header = %+v", m.Header)
	}
}

func TestListFiltersByInterface(t *testing.T) {
	mk := func(idx uint32, ip string, bits uint8) netlink.Message {
		a := netip.MustParseAddr(ip)
		fam := uint8(unix.AF_INET)
		if a.Is6() {
			fam = unix.AF_INET6
		}
		b, _ := (&rtnetlink.AddressMessage{Family: fam, PrefixLength: bits, Index: idx,
			Attributes: &rtnetlink.AddressAttributes{Address: a.AsSlice()}}).MarshalBinary()
		return netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWADDR, Flags: netlink.Multi}, Data: b}
	}
	r := &nltestutil.Recorder{Reply: func(m netlink.Message) ([]netlink.Message, int) {
		return []netlink.Message{mk(1, "127.0.0.1", 8), mk(4, "172.18.0.1", 16), mk(4, "fd00::1", 64),
			{Header: netlink.Header{Type: netlink.Done, Flags: netlink.Multi}}}, 0
	}}
	got, err := addr.List(r.Dial(), 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Prefix != netip.MustParsePrefix("172.18.0.1/16") || got[1].Prefix != netip.MustParsePrefix("fd00::1/64") {
		t.Errorf("List = %+v", got)
	}
	if r.Reqs[0].Header.Flags != netlink.Request|netlink.Dump || r.Reqs[0].Header.Type != unix.RTM_GETADDR {
		t.Errorf("request = %+v", r.Reqs[0].Header)
	}
}
