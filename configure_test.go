package bridge

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/internal/nltestutil"
	"github.com/nlbridge/bridge/nat"
	"golang.org/x/sys/unix"
)

// configure sends the whole sandbox side in one sendmsg, IPv6 last, and
// goes on without IPv6 when the kernel refuses the IPv6 address.
func TestConfigureBatchAndRefusedIPv6(t *testing.T) {
	for _, refuse := range []int{0, int(unix.EACCES), int(unix.EAFNOSUPPORT), int(unix.EINVAL)} {
		v6 := netip.MustParsePrefix("fd29::2/64")
		n := &Network{d: &Driver{}, cfg: NetworkConfig{Name: "nlbt0", IPv4: netip.MustParsePrefix("172.29.0.1/24"),
			IPv6: netip.MustParsePrefix("fd29::1/64")}, used: map[netip.Addr]bool{v6.Addr(): true}}
		e := &Endpoint{n: n, ifName: "eth0", ifIndex: 5, ipv4: netip.MustParsePrefix("172.29.0.2/24"), ipv6: v6}
		r := &nltestutil.Recorder{Reply: func(m netlink.Message) ([]netlink.Message, int) {
			if m.Header.Type == unix.RTM_NEWADDR && m.Data[0] == unix.AF_INET6 {
				return nil, refuse
			}
			return nil, 0
		}}
		err := e.configure(context.Background(), "attach", nil, r.Dial(), attachPlan{}, nil)
		if r.Sends != 1 {
			t.Errorf("refuse=%d: %d sendmsg calls, want 1", refuse, r.Sends)
		}
		want := []struct {
			typ    netlink.HeaderType
			family byte
		}{
			{unix.RTM_NEWLINK, 0}, {unix.RTM_NEWADDR, unix.AF_INET}, {unix.RTM_NEWLINK, 0}, {unix.RTM_NEWROUTE, unix.AF_INET},
			{unix.RTM_NEWADDR, unix.AF_INET6}, {unix.RTM_NEWROUTE, unix.AF_INET6},
		}
		if len(r.Reqs) != len(want) {
			t.Fatalf("refuse=%d: %d requests, want %d", refuse, len(r.Reqs), len(want))
		}
		for i, w := range want {
			if m := r.Reqs[i]; m.Header.Type != w.typ || w.family != 0 && m.Data[0] != w.family {
				t.Errorf("refuse=%d: request %d is type %d family %d, want %d %d", refuse, i, m.Header.Type, m.Data[0], w.typ, w.family)
			}
		}
		switch refuse {
		case 0:
			if err != nil || e.ipv6 != v6 {
				t.Errorf("accepted: err %v, IPv6 %v", err, e.ipv6)
			}
		case int(unix.EINVAL): // any other refusal fails the attach
			if err == nil {
				t.Errorf("EINVAL on the IPv6 address: no error")
			}
		default:
			if err != nil || e.ipv6.IsValid() || n.used[v6.Addr()] {
				t.Errorf("refuse=%d: err %v, IPv6 %v, still reserved %v; want the endpoint without IPv6", refuse, err, e.ipv6, n.used[v6.Addr()])
			}
		}
	}
}

// On an IPv4-only network with the firewall the interface gets addrgenmode
// none, down, before anything else: no /proc access. A kernel without IPv6 refuses
// that with EAFNOSUPPORT, which is no error; other refusals are.
func TestConfigureIPv4OnlyIsAddrGenModeNone(t *testing.T) {
	for _, refuse := range []int{0, int(unix.EAFNOSUPPORT), int(unix.EPERM)} {
		n := &Network{d: &Driver{fw: &nat.Firewall{}}, cfg: NetworkConfig{Name: "nlbt0", IPv4: netip.MustParsePrefix("172.29.0.1/24")}}
		e := &Endpoint{n: n, ifName: "eth0", ifIndex: 5, ipv4: netip.MustParsePrefix("172.29.0.2/24")}
		r := &nltestutil.Recorder{Reply: func(m netlink.Message) ([]netlink.Message, int) {
			if m.Header.Type != unix.RTM_NEWLINK {
				return nil, 0
			}
			if _, ok := nltestutil.Attrs(t, m.Data[unix.SizeofIfInfomsg:])[unix.IFLA_AF_SPEC]; ok {
				return nil, refuse
			}
			return nil, 0
		}}
		err := e.configure(context.Background(), "attach", nil, r.Dial(), attachPlan{}, nil)
		if r.Sends != 1 || len(r.Reqs) != 5 {
			t.Fatalf("refuse=%d: %d sendmsg, %d requests; want 1 with 5 (lo up, addrgenmode, address, up, route)", refuse, r.Sends, len(r.Reqs))
		}
		m := r.Reqs[1]
		idx := uint32(m.Data[4]) | uint32(m.Data[5])<<8 | uint32(m.Data[6])<<16 | uint32(m.Data[7])<<24
		spec := nltestutil.Attrs(t, m.Data[unix.SizeofIfInfomsg:])[unix.IFLA_AF_SPEC]
		inet6 := nltestutil.Attrs(t, spec)[unix.AF_INET6]
		if mode := nltestutil.Attrs(t, inet6)[unix.IFLA_INET6_ADDR_GEN_MODE]; m.Header.Type != unix.RTM_NEWLINK || idx != 5 || len(mode) != 1 || mode[0] != 1 || m.Data[8]&unix.IFF_UP != 0 {
			t.Errorf("request 1: type %d index %d mode %v flags %#x, want RTM_NEWLINK on 5 with addrgenmode none (1), not up", m.Header.Type, idx, mode, m.Data[8])
		}
		if up := r.Reqs[3]; up.Header.Type != unix.RTM_NEWLINK || up.Data[8]&unix.IFF_UP == 0 {
			t.Errorf("the interface does not come up after addrgenmode")
		}
		if (err != nil) != (refuse == int(unix.EPERM)) {
			t.Errorf("refuse=%d: err = %v", refuse, err)
		}
	}
}

func TestDriverDetachRefusesNilAndForeignEndpoints(t *testing.T) {
	d, other := &Driver{}, &Driver{}
	mine := &Endpoint{n: &Network{d: d}, hostName: "vethmine"}
	foreign := &Endpoint{n: &Network{d: other}, hostName: "vethother"}
	for _, c := range []struct {
		eps   []*Endpoint
		field string
	}{{[]*Endpoint{nil}, "eps[0]"}, {[]*Endpoint{mine, foreign}, "eps[1]"}} {
		err := d.Detach(t.Context(), c.eps...)
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, ErrInvalid) || e.Field != c.field {
			t.Errorf("Detach(%v) = %v, want ErrInvalid on %s", c.eps, err, c.field)
		}
	}
	if mine.detached {
		t.Error("a refused Detach marked an endpoint detached")
	}
}
