package route_test

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"github.com/nlbridge/bridge/internal/nltestutil"
	"github.com/nlbridge/bridge/route"
	"golang.org/x/sys/unix"
)

func TestAddDefaultMsg(t *testing.T) {
	for _, tc := range []struct {
		gw  string
		fam uint8
	}{{"172.18.0.1", unix.AF_INET}, {"fd00::1", unix.AF_INET6}} {
		m := route.AddDefaultMsg(3, netip.MustParseAddr(tc.gw), 100)
		if m.Header.Type != unix.RTM_NEWROUTE || m.Header.Flags != netlink.Request|netlink.Acknowledge|netlink.Create|netlink.Excl {
			t.Fatalf("header = %+v", m.Header)
		}
		// rtmsg: family, dst_len 0, src_len 0, tos 0, table main, proto boot, scope universe, type unicast
		if want := []byte{tc.fam, 0, 0, 0, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST}; !bytes.Equal(m.Data[:8], want) {
			t.Errorf("%s: rtmsg = %x, want %x", tc.gw, m.Data[:8], want)
		}
		a := nltestutil.Attrs(t, m.Data[unix.SizeofRtMsg:])
		if !bytes.Equal(a[unix.RTA_GATEWAY], netip.MustParseAddr(tc.gw).AsSlice()) ||
			nlenc.Uint32(a[unix.RTA_OIF]) != 3 || nlenc.Uint32(a[unix.RTA_PRIORITY]) != 100 || len(a) != 3 {
			t.Errorf("%s: attributes = %v", tc.gw, a)
		}
	}
}

func TestAddMsgCarriesTheDestination(t *testing.T) {
	m := route.AddMsg(4, netip.MustParsePrefix("10.96.7.9/12"), netip.MustParseAddr("10.1.0.1"), 0)
	if m.Data[0] != unix.AF_INET || m.Data[1] != 12 {
		t.Errorf("family %d dst_len %d, want AF_INET /12", m.Data[0], m.Data[1])
	}
	a := nltestutil.Attrs(t, m.Data[unix.SizeofRtMsg:])
	if !bytes.Equal(a[unix.RTA_DST], []byte{10, 96, 0, 0}) || !bytes.Equal(a[unix.RTA_GATEWAY], []byte{10, 1, 0, 1}) ||
		nlenc.Uint32(a[unix.RTA_OIF]) != 4 || len(a) != 3 {
		t.Errorf("attributes = %v, want dst 10.96.0.0 (masked), gateway, oif and no priority", a)
	}
}

func TestListKeepsMainUnicastRoutes(t *testing.T) {
	mk := func(table, typ uint8, dst string, bits uint8, gw string) netlink.Message {
		rm := &rtnetlink.RouteMessage{Family: unix.AF_INET, DstLength: bits, Table: table, Type: typ}
		if dst != "" {
			rm.Attributes.Dst = netip.MustParseAddr(dst).AsSlice()
		}
		if gw != "" {
			rm.Attributes.Gateway = netip.MustParseAddr(gw).AsSlice()
		}
		rm.Attributes.OutIface = 2
		b, _ := rm.MarshalBinary()
		return netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWROUTE, Flags: netlink.Multi}, Data: b}
	}
	r := &nltestutil.Recorder{Reply: func(netlink.Message) ([]netlink.Message, int) {
		return []netlink.Message{
			mk(unix.RT_TABLE_MAIN, unix.RTN_UNICAST, "", 0, "10.0.0.1"),
			mk(unix.RT_TABLE_MAIN, unix.RTN_UNICAST, "10.0.0.0", 24, ""),
			mk(unix.RT_TABLE_LOCAL, unix.RTN_LOCAL, "10.0.0.5", 32, ""),
			{Header: netlink.Header{Type: netlink.Done, Flags: netlink.Multi}},
		}, 0
	}}
	got, err := route.List(r.Dial())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].IsDefault() || got[0].Gw != netip.MustParseAddr("10.0.0.1") ||
		got[1].Dst != netip.MustParsePrefix("10.0.0.0/24") || got[1].IsDefault() {
		t.Errorf("List = %+v", got)
	}
}

func TestGetAsksForOneRoute(t *testing.T) {
	r := &nltestutil.Recorder{Reply: func(m netlink.Message) ([]netlink.Message, int) {
		b, _ := (&rtnetlink.RouteMessage{Family: unix.AF_INET6, DstLength: 128, Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_MULTICAST,
			Attributes: rtnetlink.RouteAttributes{Dst: netip.MustParseAddr("ff02::1").AsSlice(), OutIface: 3}}).MarshalBinary()
		return []netlink.Message{{Header: netlink.Header{Type: unix.RTM_NEWROUTE}, Data: b}}, 0
	}}
	got, err := route.Get(r.Dial(), netip.MustParseAddr("ff02::1"), 3)
	if err != nil || got.Oif != 3 || got.Type != unix.RTN_MULTICAST {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	m := r.Reqs[0]
	if m.Header.Type != unix.RTM_GETROUTE || m.Header.Flags != netlink.Request || m.Data[0] != unix.AF_INET6 || m.Data[1] != 128 {
		t.Errorf("request = %+v % x", m.Header, m.Data[:8])
	}
	a := nltestutil.Attrs(t, m.Data[unix.SizeofRtMsg:])
	if !bytes.Equal(a[unix.RTA_DST], netip.MustParseAddr("ff02::1").AsSlice()) || nlenc.Uint32(a[unix.RTA_OIF]) != 3 {
		t.Errorf("attributes = %v", a)
	}
	r = &nltestutil.Recorder{Reply: func(netlink.Message) ([]netlink.Message, int) { return nil, int(unix.ENETUNREACH) }}
	if _, err := route.Get(r.Dial(), netip.MustParseAddr("ff02::1"), 3); err == nil {
		t.Error("ENETUNREACH not reported")
	}
}
