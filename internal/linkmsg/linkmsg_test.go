package linkmsg_test

import (
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"github.com/nlbridge/bridge/internal/linkmsg"
	"github.com/nlbridge/bridge/internal/nltestutil"
	"golang.org/x/sys/unix"
)

func TestHostEndMsg(t *testing.T) {
	for _, isolated := range []bool{false, true} {
		m := linkmsg.HostEnd("veth1234567", true, isolated, "")
		if m.Header.Type != unix.RTM_NEWLINK || m.Header.Flags != netlink.Request|netlink.Acknowledge ||
			nlenc.Uint32(m.Data[4:8]) != 0 || nlenc.Uint32(m.Data[8:12]) != unix.IFF_UP || nlenc.Uint32(m.Data[12:16]) != unix.IFF_UP {
			t.Fatalf("header %+v ifinfomsg %x: want a change by name setting IFF_UP", m.Header, m.Data[:16])
		}
		a := nltestutil.Attrs(t, m.Data[unix.SizeofIfInfomsg:])
		if nlenc.String(a[unix.IFLA_IFNAME]) != "veth1234567" {
			t.Errorf("name %q", a[unix.IFLA_IFNAME])
		}
		inet6 := nltestutil.Attrs(t, nltestutil.Attrs(t, a[unix.IFLA_AF_SPEC])[unix.AF_INET6])
		if g := inet6[unix.IFLA_INET6_ADDR_GEN_MODE]; len(g) != 1 || g[0] != 1 {
			t.Errorf("IFLA_INET6_ADDR_GEN_MODE = %x, want 1 (none)", g)
		}
		li := nltestutil.Attrs(t, a[unix.IFLA_LINKINFO])
		port := nltestutil.Attrs(t, li[unix.IFLA_INFO_SLAVE_DATA])
		if nlenc.String(li[unix.IFLA_INFO_SLAVE_KIND]) != "bridge" || len(port[unix.IFLA_BRPORT_MODE]) != 1 || port[unix.IFLA_BRPORT_MODE][0] != 1 {
			t.Errorf("slave info = %v / %v, want a bridge port in hairpin mode", li, port)
		}
		iso, ok := port[unix.IFLA_BRPORT_ISOLATED]
		if ok != isolated || isolated && (len(iso) != 1 || iso[0] != 1) {
			t.Errorf("isolated=%v but IFLA_BRPORT_ISOLATED = %v (present %v)", isolated, iso, ok)
		}
	}
}

func TestRetireMessages(t *testing.T) {
	m := linkmsg.RetireHostEnd(7, 0x6e6c0000)
	a := nltestutil.Attrs(t, m.Data[16:])
	if m.Header.Type != unix.RTM_NEWLINK || nlenc.Uint32(m.Data[4:8]) != 7 || nlenc.Uint32(m.Data[8:12]) != 0 ||
		nlenc.Uint32(m.Data[12:16]) != unix.IFF_UP || nlenc.Uint32(a[unix.IFLA_MASTER]) != 0 || len(a[unix.IFLA_MASTER]) != 4 ||
		nlenc.Uint32(a[unix.IFLA_GROUP]) != 0x6e6c0000 || len(a) != 2 {
		t.Errorf("RetireHostEnd: %x %v; want index 7 down, master 0, group 0x6e6c0000", m.Data[:16], a)
	}
	ms := linkmsg.Retire(2, "nlbd1234567")
	if len(ms) != 2 || nlenc.Uint32(ms[0].Data[12:16]) != unix.IFF_UP || nlenc.Uint32(ms[0].Data[8:12]) != 0 || len(ms[0].Data) != 16 {
		t.Fatalf("first message must only set index 2 down: %+v", ms)
	}
	if a := nltestutil.Attrs(t, ms[1].Data[16:]); nlenc.Uint32(ms[1].Data[4:8]) != 2 || nlenc.String(a[unix.IFLA_IFNAME]) != "nlbd1234567" {
		t.Errorf("rename = %v", a)
	}
}

func TestHostEndMsgAlias(t *testing.T) {
	m := linkmsg.HostEnd("veth1234567", true, false, "nlbridge/1 ep id=x")
	a := nltestutil.Attrs(t, m.Data[unix.SizeofIfInfomsg:])
	if got := nlenc.String(a[unix.IFLA_IFALIAS]); got != "nlbridge/1 ep id=x" {
		t.Errorf("IFLA_IFALIAS = %q", got)
	}
	if _, ok := nltestutil.Attrs(t, linkmsg.HostEnd("v", false, false, "").Data[unix.SizeofIfInfomsg:])[unix.IFLA_IFALIAS]; ok {
		t.Error("an empty alias is sent")
	}
}

func TestHostEndMsgNotBridged(t *testing.T) {
	m := linkmsg.HostEnd("veth1234567", false, true, "")
	if _, ok := nltestutil.Attrs(t, m.Data[unix.SizeofIfInfomsg:])[unix.IFLA_LINKINFO]; ok {
		t.Error("port flags sent for a device that is no bridge port (the kernel refuses them)")
	}
}
