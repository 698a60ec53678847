package bench

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/nlbridge/bridge/nsutil"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Baselines on vishvananda/netlink, the in-process library users would
// otherwise reach for, doing the same work as nlbridge's plain attach
// (veth on the bridge, peer eth0 in the sandbox with MAC, MTU, address,
// lo and eth0 up, default route) and detach (delete the veth).

// vish attaches the i-th sandbox the vishvananda way and returns the host
// end for detach.
type vish func(h *netlink.Handle, br netlink.Link, sb *nsutil.NS, i int) (netlink.Link, error)

// vishClassic is the libnetwork-style sequence: the pair is made in the
// host, then the peer is moved into the sandbox, renamed and configured.
func vishClassic(h *netlink.Handle, br netlink.Link, sb *nsutil.NS, i int) (netlink.Link, error) {
	name, tmp := fmt.Sprintf("vc%07x", i), fmt.Sprintf("vt%07x", i)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: 1500, MasterIndex: br.Attrs().Index}, PeerName: tmp}
	if err := h.LinkAdd(veth); err != nil {
		return nil, err
	}
	peer, err := h.LinkByName(tmp)
	if err != nil {
		return veth, err
	}
	if err := h.LinkSetNsFd(peer, sb.FD()); err != nil {
		return veth, err
	}
	if err := h.LinkSetUp(veth); err != nil {
		return veth, err
	}
	return veth, configure(sb, tmp, i)
}

// vishFast creates the peer directly in the sandbox under its final name,
// as nlbridge does, then configures it.
func vishFast(h *netlink.Handle, br netlink.Link, sb *nsutil.NS, i int) (netlink.Link, error) {
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("vf%07x", i), MTU: 1500,
		MasterIndex: br.Attrs().Index, Flags: net.FlagUp},
		PeerName: "eth0", PeerNamespace: netlink.NsFd(sb.FD()), PeerHardwareAddr: mac(i)}
	if err := h.LinkAdd(veth); err != nil {
		return nil, err
	}
	return veth, configure(sb, "eth0", i)
}

// configure does the sandbox side through a handle in the sandbox.
func configure(sb *nsutil.NS, name string, i int) error {
	sh, err := netlink.NewHandleAt(netns.NsHandle(sb.FD()))
	if err != nil {
		return err
	}
	defer sh.Close()
	l, err := sh.LinkByName(name)
	if err != nil {
		return err
	}
	if name != "eth0" {
		if err := sh.LinkSetName(l, "eth0"); err != nil {
			return err
		}
		if err := sh.LinkSetHardwareAddr(l, mac(i)); err != nil {
			return err
		}
	}
	a := addrFor(i)
	if err := sh.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), 32)}}); err != nil {
		return err
	}
	lo, err := sh.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := sh.LinkSetUp(lo); err != nil {
		return err
	}
	if err := sh.LinkSetUp(l); err != nil {
		return err
	}
	return sh.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IP{10, 96, 0, 1}})
}

func addrFor(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 96, byte(100 + i/250), byte(1 + i%250)}), 16)
}

func mac(i int) net.HardwareAddr {
	a := addrFor(i).Addr().As4()
	return net.HardwareAddr{2, 0x42, a[0], a[1], a[2], a[3]}
}

// BenchmarkBaselineAttach times the baselines' attach at each scale point
// (existing endpoints made by nlbridge, as for BenchmarkAttach).
func BenchmarkBaselineAttach(parent *testing.B) {
	for _, impl := range []struct {
		name string
		fn   vish
	}{{"vish-classic", vishClassic}, {"vish-fast", vishFast}} {
		for _, existing := range scales() {
			parent.Run(fmt.Sprintf("impl=%s/existing=%d", impl.name, existing), func(b *testing.B) {
				if b.N > 2000 {
					b.Skip("address plan holds 2,000 endpoints")
				}
				w := newWorld(parent, b, existing, "plain")
				h, err := netlink.NewHandleAt(netns.NsHandle(w.host.FD()))
				if err != nil {
					b.Fatal(err)
				}
				defer h.Close()
				br, err := h.LinkByName("nlbbench0")
				if err != nil {
					b.Fatal(err)
				}
				sbs := sandboxes(b, b.N)
				var lat latencies
				var links []netlink.Link
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					t0 := time.Now()
					l, err := impl.fn(h, br, sbs[i], i)
					lat = append(lat, time.Since(t0))
					if l != nil {
						links = append(links, l)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				lat.report(b, "attach")
				var del latencies
				for _, l := range links {
					t0 := time.Now()
					h.LinkDel(l)
					del = append(del, time.Since(t0))
				}
				del.report(b, "detach")
			})
		}
	}
}
