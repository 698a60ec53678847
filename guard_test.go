package bridge

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"github.com/nlbridge/bridge/internal/kern"
	"github.com/nlbridge/bridge/internal/nltestutil"
	"github.com/nlbridge/bridge/nat"
	"golang.org/x/sys/unix"
)

// guardedNet is a dual-stack network on a driver whose firewall records
// its batches in order, each request as "nft <type> <set>"; requests of
// the route conn that rtnl returns go in the same log.
func guardedNet(t *testing.T, log *[]string) *Network {
	t.Helper()
	r := &nltestutil.Recorder{Reply: func(m netlink.Message) ([]netlink.Message, int) {
		typ := uint16(m.Header.Type) & 0xff
		if typ == unix.NFT_MSG_NEWSETELEM || typ == unix.NFT_MSG_DELSETELEM {
			a, _ := netlink.UnmarshalAttributes(m.Data[4:])
			for _, at := range a {
				if at.Type == unix.NFTA_SET_ELEM_LIST_SET {
					op := map[uint16]string{unix.NFT_MSG_NEWSETELEM: "add", unix.NFT_MSG_DELSETELEM: "del"}[typ]
					*log = append(*log, "nft "+op+" "+nlenc.String(at.Data))
				}
			}
		}
		return nil, 0
	}}
	fw, err := nat.New("t", func() (*nftables.Conn, *netlink.Conn, error) {
		c, err := nftables.New(nftables.WithTestDial(r.Func()))
		return c, r.Dial(), err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err = fw.Rebuild(context.Background(), nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	*log = nil
	return &Network{d: &Driver{fw: fw}, index: 7, cfg: NetworkConfig{Name: "nlbt0",
		IPv4: netip.MustParsePrefix("172.29.0.1/24"), IPv6: netip.MustParsePrefix("fd29::1/64")},
		used: map[netip.Addr]bool{}}
}

// No window: the guard's elements, keyed by the host end's name, are in
// the firewall before the veth pair is created.
func TestGuardGoesInBeforeTheVeth(t *testing.T) {
	var log []string
	n := guardedNet(t, &log)
	e := &Endpoint{n: n, mac: net.HardwareAddr{2, 0x42, 172, 29, 0, 2},
		ipv4: netip.MustParsePrefix("172.29.0.2/24"), ipv6: netip.MustParsePrefix("fd29::2/64")}
	rt := &nltestutil.Recorder{Reply: func(m netlink.Message) ([]netlink.Message, int) {
		log = append(log, "rtnl")
		return nil, int(unix.EPERM) // stop at the create
	}}
	ns, err := kern.Real{}.OpenNS("")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := e.createVeth(context.Background(), "attach", ns, nil, rt.Dial(), true); err == nil {
		t.Fatal("create refused with EPERM: no error")
	}
	want := []string{"nft add endpoints", "nft add guarded", "nft add macs", "nft add addrs4", "nft add addrs6", "rtnl"}
	if len(log) < len(want) || !slices.Equal(log[:len(want)], want) {
		t.Fatalf("requests %v, want %v first", log, want)
	}
	if e.guard == nil || e.guard.Port != e.hostName || !bytes.Equal(e.guard.MAC, e.mac) || e.guard.IPv6 != e.ipv6.Addr() {
		t.Errorf("guard record %+v for host end %s", e.guard, e.hostName)
	}
}

// A refused IPv6 address leaves the guard first (remove and add in one
// batch): the address is free for others only once this endpoint can no
// longer send from it.
func TestRefusedIPv6LeavesTheGuard(t *testing.T) {
	var log []string
	n := guardedNet(t, &log)
	v6 := netip.MustParsePrefix("fd29::2/64")
	n.used[v6.Addr()] = true
	e := &Endpoint{n: n, hostName: "vethab12cd3", ifName: "eth0", ifIndex: 5, mac: net.HardwareAddr{2, 0x42, 172, 29, 0, 2},
		ipv4: netip.MustParsePrefix("172.29.0.2/24"), ipv6: v6}
	if err := e.setGuard(context.Background(), "attach"); err != nil {
		t.Fatal(err)
	}
	log = nil
	rt := &nltestutil.Recorder{Reply: func(m netlink.Message) ([]netlink.Message, int) {
		if m.Header.Type == unix.RTM_NEWADDR && m.Data[0] == unix.AF_INET6 {
			return nil, int(unix.EACCES)
		}
		return nil, 0
	}}
	if err := e.configure(context.Background(), "attach", nil, rt.Dial(), attachPlan{}, nil); err != nil {
		t.Fatal(err)
	}
	want := []string{"nft del endpoints", "nft del guarded", "nft del macs", "nft del addrs4", "nft del addrs6",
		"nft add endpoints", "nft add guarded", "nft add macs", "nft add addrs4", "nft add addrs6"}
	if !slices.Equal(log, want) {
		t.Errorf("firewall requests %v, want %v", log, want)
	}
	if e.guard == nil || e.guard.IPv6.IsValid() || n.used[v6.Addr()] {
		t.Errorf("guard %+v, address reserved %v: want no IPv6 in either", e.guard, n.used[v6.Addr()])
	}
}
