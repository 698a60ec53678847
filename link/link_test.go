package link_test

import (
	"bytes"
	"errors"
	"net"
	"testing"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"github.com/mdlayher/netlink/nltest"
	"github.com/nlbridge/bridge/internal/nltestutil"
	"github.com/nlbridge/bridge/link"
	"golang.org/x/sys/unix"
)

const wantCreate = netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Excl | netlink.Echo

// echo answers a create request the way Linux 6.3+ does with NLM_F_ECHO:
// with the new device, whose IFLA_LINK is the veth peer's index.
func echo(index, peer uint32) func(netlink.Message) ([]netlink.Message, int) {
	return func(m netlink.Message) ([]netlink.Message, int) {
		if m.Header.Type != unix.RTM_NEWLINK || m.Header.Flags&netlink.Create == 0 {
			return nil, 0
		}
		var req rtnetlink.LinkMessage
		req.UnmarshalBinary(m.Data)
		b, _ := (&rtnetlink.LinkMessage{Index: index, Flags: unix.IFF_UP, Attributes: &rtnetlink.LinkAttributes{
			Name: req.Attributes.Name, Type: peer, Info: &rtnetlink.LinkInfo{Kind: req.Attributes.Info.Kind}}}).MarshalBinary()
		return []netlink.Message{{Header: netlink.Header{Type: unix.RTM_NEWLINK}, Data: b}}, 0
	}
}

func TestCreateVethSendsOneCompleteMessage(t *testing.T) {
	r := &nltestutil.Recorder{Reply: echo(7, 3)}
	mac := net.HardwareAddr{2, 0x42, 172, 18, 0, 2}
	l, err := link.CreateVeth(r.Dial(), link.VethSpec{Name: "veth1234567", Master: 4, Group: 0x6e6c0004,
		MTU: 1450, PeerName: "eth0", PeerMAC: mac, PeerNetNS: 9})
	if err != nil {
		t.Fatal(err)
	}
	if l.Index != 7 || l.Peer != 3 || l.Name != "veth1234567" {
		t.Errorf("link = %+v, want index 7, peer 3", l)
	}
	if r.Sends != 1 || len(r.Reqs) != 2 {
		t.Fatalf("%d sendmsg, %d messages; want the create and the host-end setup in one sendmsg", r.Sends, len(r.Reqs))
	}
	m := r.Reqs[0]
	if m.Header.Type != unix.RTM_NEWLINK || m.Header.Flags != wantCreate {
		t.Fatalf("header = %v %v, want RTM_NEWLINK %v", m.Header.Type, m.Header.Flags, wantCreate)
	}
	hdr := m.Data[:unix.SizeofIfInfomsg]
	if hdr[0] != unix.AF_UNSPEC || nlenc.Uint32(hdr[4:8]) != 0 || nlenc.Uint32(hdr[8:12]) != 0 {
		t.Errorf("ifinfomsg = %x, want family 0, index 0, created down", hdr)
	}
	a := nltestutil.Attrs(t, m.Data[unix.SizeofIfInfomsg:])
	if got := nlenc.String(a[unix.IFLA_IFNAME]); got != "veth1234567" {
		t.Errorf("IFLA_IFNAME = %q", got)
	}
	if nlenc.Uint32(a[unix.IFLA_MTU]) != 1450 || nlenc.Uint32(a[unix.IFLA_MASTER]) != 4 ||
		nlenc.Uint32(a[unix.IFLA_GROUP]) != 0x6e6c0004 {
		t.Errorf("MTU/MASTER/GROUP = %d/%d/%#x", nlenc.Uint32(a[unix.IFLA_MTU]),
			nlenc.Uint32(a[unix.IFLA_MASTER]), nlenc.Uint32(a[unix.IFLA_GROUP]))
	}
	if len(a) != 5 {
		t.Errorf("host end has %d attributes, want 5 (name, mtu, linkinfo, master, group): %v", len(a), a)
	}
	info := nltestutil.Attrs(t, a[unix.IFLA_LINKINFO])
	if nlenc.String(info[unix.IFLA_INFO_KIND]) != "veth" {
		t.Errorf("IFLA_INFO_KIND = %q", info[unix.IFLA_INFO_KIND])
	}
	peerData := nltestutil.Attrs(t, info[unix.IFLA_INFO_DATA])[1] // VETH_INFO_PEER
	if peerData == nil || len(peerData) < unix.SizeofIfInfomsg {
		t.Fatalf("no VETH_INFO_PEER")
	}
	if !bytes.Equal(peerData[:unix.SizeofIfInfomsg], make([]byte, unix.SizeofIfInfomsg)) {
		t.Errorf("peer ifinfomsg = %x: the peer must not be set up here (ENOTCONN)", peerData[:16])
	}
	p := nltestutil.Attrs(t, peerData[unix.SizeofIfInfomsg:])
	if nlenc.String(p[unix.IFLA_IFNAME]) != "eth0" || !bytes.Equal(p[unix.IFLA_ADDRESS], mac) ||
		nlenc.Uint32(p[unix.IFLA_MTU]) != 1450 || nlenc.Uint32(p[unix.IFLA_NET_NS_FD]) != 9 || len(p) != 4 {
		t.Errorf("peer attributes = %v, want name eth0, MAC, MTU 1450, netns fd 9", p)
	}
}

func TestCreateBridgeMessage(t *testing.T) {
	r := &nltestutil.Recorder{Reply: echo(4, 0)}
	mac := net.HardwareAddr{2, 1, 2, 3, 4, 5}
	l, err := link.CreateBridge(r.Dial(), link.BridgeSpec{Name: "br0", MTU: 9000, MAC: mac})
	if err != nil || l.Index != 4 {
		t.Fatalf("CreateBridge = %+v, %v", l, err)
	}
	m := r.Reqs[0]
	if m.Header.Flags != wantCreate || nlenc.Uint32(m.Data[8:12]) != unix.IFF_UP {
		t.Errorf("header flags %v, ifi_flags %#x", m.Header.Flags, nlenc.Uint32(m.Data[8:12]))
	}
	a := nltestutil.Attrs(t, m.Data[unix.SizeofIfInfomsg:])
	info := nltestutil.Attrs(t, a[unix.IFLA_LINKINFO])
	if nlenc.String(a[unix.IFLA_IFNAME]) != "br0" || nlenc.Uint32(a[unix.IFLA_MTU]) != 9000 ||
		!bytes.Equal(a[unix.IFLA_ADDRESS], mac) ||
		nlenc.String(info[unix.IFLA_INFO_KIND]) != "bridge" {
		t.Errorf("attributes = %v", a)
	}
	if _, ok := a[unix.IFLA_GROUP]; ok {
		t.Errorf("group 0 must not be sent")
	}
}

func TestCreateBridgeSetsTheAliasInTheSameSendmsg(t *testing.T) {
	r := &nltestutil.Recorder{Reply: echo(4, 0)}
	if _, err := link.CreateBridge(r.Dial(), link.BridgeSpec{Name: "br0", Alias: "nlbridge/1 net"}); err != nil {
		t.Fatal(err)
	}
	if r.Sends != 1 || len(r.Reqs) != 2 {
		t.Fatalf("%d sendmsg, %d messages; want the create and the alias in one", r.Sends, len(r.Reqs))
	}
	m := r.Reqs[1]
	a := nltestutil.Attrs(t, m.Data[unix.SizeofIfInfomsg:])
	if m.Header.Type != unix.RTM_NEWLINK || m.Header.Flags&unix.NLM_F_CREATE != 0 ||
		nlenc.Uint32(m.Data[4:8]) != 0 || nlenc.String(a[unix.IFLA_IFNAME]) != "br0" ||
		string(a[unix.IFLA_IFALIAS]) != "nlbridge/1 net" {
		t.Errorf("alias message %v, attributes %v; want a change by name with the alias", m.Header, a)
	}
}

func TestCreateWithoutEchoIsAnError(t *testing.T) {
	r := &nltestutil.Recorder{} // an old kernel: acks but does not echo
	if _, err := link.CreateBridge(r.Dial(), link.BridgeSpec{Name: "br0"}); err == nil {
		t.Fatal("want an error when the kernel sends no echo")
	}
}

func TestDeleteGroupIsOneMessageWithOnlyTheGroup(t *testing.T) {
	r := &nltestutil.Recorder{}
	if err := link.DeleteGroup(r.Dial(), 0x6e6c0004); err != nil {
		t.Fatal(err)
	}
	m := r.Reqs[0]
	if len(r.Reqs) != 1 || m.Header.Type != unix.RTM_DELLINK || m.Header.Flags != netlink.Request|netlink.Acknowledge {
		t.Fatalf("requests = %+v", r.Reqs)
	}
	if !bytes.Equal(m.Data[:unix.SizeofIfInfomsg], make([]byte, unix.SizeofIfInfomsg)) {
		t.Errorf("ifinfomsg = %x, want all zero (index 0)", m.Data[:16])
	}
	a := nltestutil.Attrs(t, m.Data[unix.SizeofIfInfomsg:])
	if len(a) != 1 || nlenc.Uint32(a[unix.IFLA_GROUP]) != 0x6e6c0004 {
		t.Errorf("attributes = %v, want only IFLA_GROUP", a)
	}
}

func TestDeleteGroupRefusesGroupZero(t *testing.T) {
	r := &nltestutil.Recorder{}
	if err := link.DeleteGroup(r.Dial(), 0); err == nil || len(r.Reqs) != 0 {
		t.Fatalf("err = %v, %d requests; want a refusal before sending", err, len(r.Reqs))
	}
}

func TestDeleteTreatsGoneAsDone(t *testing.T) {
	for _, errno := range []int{int(unix.ENODEV), 0} {
		r := &nltestutil.Recorder{Reply: func(netlink.Message) ([]netlink.Message, int) { return nil, errno }}
		if err := link.Delete(r.Dial(), 5); err != nil {
			t.Errorf("errno %d: %v", errno, err)
		}
		if err := link.DeleteGroup(r.Dial(), 5); err != nil {
			t.Errorf("group, errno %d: %v", errno, err)
		}
	}
	r := &nltestutil.Recorder{Reply: func(netlink.Message) ([]netlink.Message, int) { return nil, int(unix.EPERM) }}
	if err := link.Delete(r.Dial(), 5); !errors.Is(err, unix.EPERM) {
		t.Errorf("err = %v, want EPERM", err)
	}
}

func TestUpAndGroupMessages(t *testing.T) {
	up := link.UpMsg(3)
	if up.Header.Type != unix.RTM_NEWLINK || nlenc.Uint32(up.Data[4:8]) != 3 ||
		nlenc.Uint32(up.Data[8:12]) != unix.IFF_UP || nlenc.Uint32(up.Data[12:16]) != unix.IFF_UP || len(up.Data) != 16 {
		t.Errorf("UpMsg = %+v", up)
	}
	g := link.SetMsg(3, false, 42, "nlbridge")
	if a := nltestutil.Attrs(t, g.Data[16:]); nlenc.Uint32(g.Data[4:8]) != 3 || nlenc.Uint32(a[unix.IFLA_GROUP]) != 42 ||
		nlenc.String(a[unix.IFLA_IFALIAS]) != "nlbridge" || nlenc.Uint32(g.Data[12:16]) != 0 || len(a) != 2 {
		t.Errorf("SetMsg = %+v", g)
	}
	if s := link.SetMsg(3, true, 0, ""); len(s.Data) != 16 || nlenc.Uint32(s.Data[12:16]) != unix.IFF_UP {
		t.Errorf("SetMsg up only = %+v", s)
	}
}

func TestGetParsesTheAnswer(t *testing.T) {
	group, master := uint32(9), uint32(4)
	r := &nltestutil.Recorder{Reply: func(m netlink.Message) ([]netlink.Message, int) {
		b, _ := (&rtnetlink.LinkMessage{Index: 5, Flags: unix.IFF_UP, Attributes: &rtnetlink.LinkAttributes{
			Name: "veth0", MTU: 1500, Master: &master, Type: 2, Info: &rtnetlink.LinkInfo{Kind: "veth"}}}).MarshalBinary()
		b = append(b, func() []byte {
			x, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.IFLA_GROUP, Data: nlenc.Uint32Bytes(group)}})
			return x
		}()...)
		return []netlink.Message{{Header: netlink.Header{Type: unix.RTM_NEWLINK}, Data: b}}, 0
	}}
	l, err := link.Get(r.Dial(), "veth0")
	if err != nil {
		t.Fatal(err)
	}
	want := link.Link{Index: 5, Name: "veth0", Kind: "veth", MTU: 1500, Group: 9, Master: 4, Up: true, Peer: 2}
	if l.Index != want.Index || l.Name != want.Name || l.Kind != want.Kind || l.MTU != want.MTU ||
		l.Group != want.Group || l.Master != want.Master || !l.Up || l.Peer != want.Peer {
		t.Errorf("Get = %+v, want %+v", l, want)
	}
	if a := nltestutil.Attrs(t, r.Reqs[0].Data[16:]); nlenc.String(a[unix.IFLA_IFNAME]) != "veth0" {
		t.Errorf("request names %q", a[unix.IFLA_IFNAME])
	}
}

func TestGetIndexDecodesPortState(t *testing.T) {
	fwd := driver.BridgePortStateForwarding
	r := &nltestutil.Recorder{Reply: func(m netlink.Message) ([]netlink.Message, int) {
		b, _ := (&rtnetlink.LinkMessage{Index: 8, Attributes: &rtnetlink.LinkAttributes{Name: "vethx",
			Info: &rtnetlink.LinkInfo{Kind: "veth", SlaveKind: "bridge", SlaveData: &driver.BridgePort{State: &fwd}}}}).MarshalBinary()
		return []netlink.Message{{Header: netlink.Header{Type: unix.RTM_NEWLINK}, Data: b}}, 0
	}}
	l, err := link.GetIndex(r.Dial(), 8)
	if err != nil || l.PortState != link.PortForwarding {
		t.Fatalf("GetIndex = %+v, %v; want a forwarding port", l, err)
	}
	if nlenc.Uint32(r.Reqs[0].Data[4:8]) != 8 {
		t.Errorf("request index = %d", nlenc.Uint32(r.Reqs[0].Data[4:8]))
	}
}

func TestSetAliasMsg(t *testing.T) {
	for _, alias := range []string{"nlbridge/1 net v4=10.0.0.1/24", ""} {
		m := link.SetAliasMsg(7, alias)
		if m.Header.Type != unix.RTM_NEWLINK || m.Header.Flags != netlink.Request|netlink.Acknowledge ||
			nlenc.Uint32(m.Data[4:8]) != 7 || nlenc.Uint32(m.Data[12:16]) != 0 {
			t.Fatalf("header %+v ifinfomsg %x: want a change of index 7, no flags", m.Header, m.Data[:16])
		}
		a := nltestutil.Attrs(t, m.Data[unix.SizeofIfInfomsg:])
		// No trailing NUL: the kernel refuses 255 characters plus a NUL.
		if v, ok := a[unix.IFLA_IFALIAS]; !ok || string(v) != alias {
			t.Errorf("IFLA_IFALIAS = %q (present %v), want %q", v, ok, alias)
		}
	}
}

func TestListFiltered(t *testing.T) {
	var got []netlink.Message
	c := nltest.Dial(func(req []netlink.Message) ([]netlink.Message, error) {
		got = append(got, req...)
		b, _ := (&rtnetlink.LinkMessage{Index: 3, Attributes: &rtnetlink.LinkAttributes{Name: "br0", Alias: ptr("x"),
			Info: &rtnetlink.LinkInfo{Kind: "bridge"}}}).MarshalBinary()
		h := netlink.Header{Flags: netlink.Multi, Sequence: req[0].Header.Sequence, PID: req[0].Header.PID}
		done := netlink.Message{Header: h, Data: make([]byte, 4)}
		done.Header.Type = netlink.Done
		msg := netlink.Message{Header: h, Data: b}
		msg.Header.Type = unix.RTM_NEWLINK
		return []netlink.Message{msg, done}, nil
	})
	links, err := link.ListFiltered(c, link.Filter{Master: 5, Kind: "bridge"})
	if err != nil || len(links) != 1 || links[0].Name != "br0" || links[0].Alias != "x" || links[0].Kind != "bridge" {
		t.Fatalf("ListFiltered = %+v, %v", links, err)
	}
	m := got[0]
	if m.Header.Type != unix.RTM_GETLINK || m.Header.Flags&netlink.Dump != netlink.Dump {
		t.Fatalf("header %+v: want a dump of links", m.Header)
	}
	a := nltestutil.Attrs(t, m.Data[unix.SizeofIfInfomsg:])
	li := nltestutil.Attrs(t, a[unix.IFLA_LINKINFO])
	if nlenc.Uint32(a[unix.IFLA_MASTER]) != 5 || nlenc.String(li[unix.IFLA_INFO_KIND]) != "bridge" || nlenc.Uint32(a[unix.IFLA_EXT_MASK]) != 1<<3 {
		t.Errorf("filter attributes %v / %v: want master 5, kind bridge, no statistics", a, li)
	}
	if a := nltestutil.Attrs(t, link.ListMsgData(link.Filter{})[unix.SizeofIfInfomsg:]); len(a) != 1 {
		t.Errorf("zero filter sends %v, want only IFLA_EXT_MASK", a)
	}
}

func ptr[T any](v T) *T { return &v }
