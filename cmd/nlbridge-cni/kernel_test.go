package main

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/internal/nltestutil"
	"github.com/nlbridge/bridge/route"
	"golang.org/x/sys/unix"
)

// fakeNS answers the reads of the plugin's kernel functions from one
// interface (index 5, up unless down) with addrs and routes.
type fakeNS struct {
	name   string
	mac    net.HardwareAddr
	down   bool
	addrs  []string
	routes []route.Route
	errno  int // refuse every change with this errno
}

func (f *fakeNS) reply(m netlink.Message) ([]netlink.Message, int) {
	multi := func(typ netlink.HeaderType, b []byte) netlink.Message {
		return netlink.Message{Header: netlink.Header{Type: typ, Flags: netlink.Multi}, Data: b}
	}
	done := netlink.Message{Header: netlink.Header{Type: netlink.Done, Flags: netlink.Multi}}
	switch m.Header.Type {
	case unix.RTM_GETLINK:
		var req rtnetlink.LinkMessage
		req.UnmarshalBinary(m.Data)
		if req.Attributes == nil || req.Attributes.Name != f.name {
			return nil, int(unix.ENODEV)
		}
		var flags uint32 = unix.IFF_UP
		if f.down {
			flags = 0
		}
		b, _ := (&rtnetlink.LinkMessage{Index: 5, Flags: flags,
			Attributes: &rtnetlink.LinkAttributes{Name: f.name, Address: f.mac}}).MarshalBinary()
		return []netlink.Message{{Header: netlink.Header{Type: unix.RTM_NEWLINK}, Data: b}}, 0
	case unix.RTM_GETADDR:
		var out []netlink.Message
		for _, s := range f.addrs {
			p := netip.MustParsePrefix(s)
			fam := uint8(unix.AF_INET)
			if p.Addr().Is6() {
				fam = unix.AF_INET6
			}
			b, _ := (&rtnetlink.AddressMessage{Family: fam, PrefixLength: uint8(p.Bits()), Index: 5,
				Attributes: &rtnetlink.AddressAttributes{Address: p.Addr().AsSlice()}}).MarshalBinary()
			out = append(out, multi(unix.RTM_NEWADDR, b))
		}
		return append(out, done), 0
	case unix.RTM_GETROUTE:
		var out []netlink.Message
		for _, r := range f.routes {
			b, _ := (&rtnetlink.RouteMessage{Family: unix.AF_INET, DstLength: uint8(r.Dst.Bits()), Table: unix.RT_TABLE_MAIN,
				Type: unix.RTN_UNICAST, Attributes: rtnetlink.RouteAttributes{Dst: r.Dst.Addr().AsSlice(),
					Gateway: r.Gw.AsSlice(), OutIface: r.Oif}}).MarshalBinary()
			out = append(out, multi(unix.RTM_NEWROUTE, b))
		}
		return append(out, done), 0
	}
	return nil, f.errno
}

func TestPromiscMsg(t *testing.T) {
	m := promiscMsg(7)
	if m.Header.Type != unix.RTM_NEWLINK || m.Header.Flags&unix.NLM_F_CREATE != 0 || m.Header.Flags&netlink.Acknowledge == 0 {
		t.Errorf("header %+v, want an acknowledged change", m.Header)
	}
	if nlenc.Uint32(m.Data[4:8]) != 7 || nlenc.Uint32(m.Data[8:12]) != unix.IFF_PROMISC || nlenc.Uint32(m.Data[12:16]) != unix.IFF_PROMISC {
		t.Errorf("ifinfomsg %x, want index 7 with IFF_PROMISC set and in the change mask only", m.Data[:16])
	}
}

func TestAddRoutesIsOneRequestOutOfTheInterface(t *testing.T) {
	f := &fakeNS{name: "eth0"}
	r := &nltestutil.Recorder{Reply: f.reply}
	routes := []route.Route{
		{Dst: netip.MustParsePrefix("10.96.0.0/12"), Gw: netip.MustParseAddr("10.1.0.1")},
		{Dst: netip.MustParsePrefix("fd00:9::/48"), Gw: netip.MustParseAddr("fd00:1::1")},
	}
	if err := addRoutes(r.Dial(), "eth0", routes); err != nil {
		t.Fatal(err)
	}
	if r.Sends != 2 || len(r.Reqs) != 3 {
		t.Fatalf("%d sendmsg, %d messages; want the link lookup, then both routes in one", r.Sends, len(r.Reqs))
	}
	for i, m := range r.Reqs[1:] {
		a := nltestutil.Attrs(t, m.Data[unix.SizeofRtMsg:])
		if m.Header.Type != unix.RTM_NEWROUTE || nlenc.Uint32(a[unix.RTA_OIF]) != 5 ||
			string(a[unix.RTA_GATEWAY]) != string(routes[i].Gw.AsSlice()) || m.Data[1] != uint8(routes[i].Dst.Bits()) {
			t.Errorf("route %d: header %+v attributes %v", i, m.Header, a)
		}
	}

	r = &nltestutil.Recorder{Reply: f.reply}
	if err := addRoutes(r.Dial(), "eth9", routes); !errors.Is(err, unix.ENODEV) || r.Sends != 1 {
		t.Errorf("missing interface: %v after %d sendmsg", err, r.Sends)
	}
	f.errno = int(unix.ENETUNREACH)
	r = &nltestutil.Recorder{Reply: f.reply}
	if err := addRoutes(r.Dial(), "eth0", routes); !errors.Is(err, unix.ENETUNREACH) {
		t.Errorf("refused route: %v", err)
	}
}

func TestDropClashingAddrsDeletesOnlyClashes(t *testing.T) {
	f := &fakeNS{name: "cni0", addrs: []string{"10.9.9.1/24", "10.1.0.1/24", "fd00:1::9/64", "fd00:2::1/64", "fe80::1/64"}}
	r := &nltestutil.Recorder{Reply: f.reply}
	cfg := bridge.NetworkConfig{Name: "cni0", IPv4: netip.MustParsePrefix("10.1.0.1/24"), IPv6: netip.MustParsePrefix("fd00:1::1/64")}
	if err := dropClashingAddrs(r.Dial(), cfg); err != nil {
		t.Fatal(err)
	}
	var deleted []string
	for _, m := range r.Reqs {
		if m.Header.Type == unix.RTM_DELADDR {
			a := nltestutil.Attrs(t, m.Data[unix.SizeofIfAddrmsg:])
			ip, _ := netip.AddrFromSlice(a[unix.IFA_LOCAL])
			if !ip.IsValid() {
				ip, _ = netip.AddrFromSlice(a[unix.IFA_ADDRESS])
			}
			deleted = append(deleted, netip.PrefixFrom(ip, int(m.Data[1])).String())
		}
	}
	if strings.Join(deleted, " ") != "10.9.9.1/24 fd00:1::9/64" || r.Sends != 3 {
		t.Errorf("deleted %v in %d sendmsg; want 10.9.9.1/24 and fd00:1::9/64, in one request after two reads", deleted, r.Sends)
	}
}

func TestCheckInterface(t *testing.T) {
	mac := net.HardwareAddr{2, 0x42, 10, 1, 0, 2}
	rt := route.Route{Dst: netip.MustParsePrefix("10.96.0.0/12"), Gw: netip.MustParseAddr("10.1.0.1"), Oif: 5}
	good := fakeNS{name: "eth0", mac: mac, addrs: []string{"10.1.0.2/24"}, routes: []route.Route{rt}}
	fail := func(format string, a ...any) error { return errors.New(strings.TrimSpace(format)) }
	want := []netip.Prefix{netip.MustParsePrefix("10.1.0.2/24")}
	for _, tc := range []struct {
		name   string
		mod    func(*fakeNS)
		ifName string
		fails  string
	}{
		{"fine", func(*fakeNS) {}, "eth0", ""},
		{"missing", func(*fakeNS) {}, "eth1", "interface %s: %v"},
		{"down", func(f *fakeNS) { f.down = true }, "eth0", "interface %s is down"},
		{"MAC", func(f *fakeNS) { f.mac = net.HardwareAddr{2, 0, 0, 0, 0, 1} }, "eth0", "interface %s has MAC %s, want %s"},
		{"address", func(f *fakeNS) { f.addrs = []string{"10.1.0.3/24"} }, "eth0", "interface %s lacks address %s"},
		{"route", func(f *fakeNS) { f.routes = nil }, "eth0", "no route %s via %s dev %s"},
	} {
		f := good
		tc.mod(&f)
		r := &nltestutil.Recorder{Reply: f.reply}
		err := checkInterface(r.Dial(), tc.ifName, mac, want, []route.Route{{Dst: rt.Dst, Gw: rt.Gw}}, fail)
		if got := ""; err != nil {
			got = err.Error()
			if got != tc.fails {
				t.Errorf("%s: %q, want %q", tc.name, got, tc.fails)
			}
		} else if tc.fails != "" {
			t.Errorf("%s: passed, want %q", tc.name, tc.fails)
		}
		for _, m := range r.Reqs {
			if m.Header.Type != unix.RTM_GETLINK && m.Header.Type != unix.RTM_GETADDR && m.Header.Type != unix.RTM_GETROUTE {
				t.Errorf("%s: CHECK sent a change: %+v", tc.name, m.Header)
			}
		}
	}
}
