package bridge_test

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/disco"
	"github.com/nlbridge/bridge/internal/testenv"
)

// announcement is a captured GARP or NA.
type announcement struct {
	at     time.Time
	v6     bool
	srcMAC net.HardwareAddr
	dstMAC net.HardwareAddr
	ip     netip.Addr // announced address
	mac    net.HardwareAddr
	hop    uint8
}

// announcements picks the GARPs and unsolicited NAs out of a capture.
func announcements(t *testing.T, frames []testenv.Frame) []announcement {
	t.Helper()
	var out []announcement
	for _, f := range frames {
		b := f.Data
		if len(b) < 14 {
			continue
		}
		a := announcement{at: f.At, dstMAC: b[0:6], srcMAC: b[6:12]}
		switch binary.BigEndian.Uint16(b[12:14]) {
		case 0x0806:
			p, err := disco.ParseARP(b[14:])
			if err != nil || p.Op != disco.ARPRequest || p.SenderIP != p.TargetIP {
				continue
			}
			a.ip, a.mac = p.SenderIP, p.SenderMAC
		case 0x86dd:
			if len(b) < 54 || b[20] != 58 || b[54] != 136 { // ICMPv6 type 136 = NA
				continue
			}
			m, err := ndp.ParseMessage(b[54:])
			if err != nil {
				t.Errorf("bad NA: %v", err)
				continue
			}
			na := m.(*ndp.NeighborAdvertisement)
			if !na.Override || na.Solicited || len(na.Options) != 1 {
				t.Errorf("NA flags/options = %+v", na)
				continue
			}
			a.v6, a.ip, a.hop = true, na.TargetAddress, b[21]
			if lla, ok := na.Options[0].(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
				a.mac = lla.Addr
			}
		default:
			continue
		}
		out = append(out, a)
	}
	return out
}

func TestLiveAdvertiseCountSpacingAndContent(t *testing.T) {
	d, host := hostDriver(t)
	n := createNetwork(t, d, dual)
	capture := testenv.StartCapture(t, host, "nlbt0")
	sb := testenv.NetNS(t, "sb")
	const interval = 150 * time.Millisecond
	ep := attach(t, n, bridge.EndpointConfig{NetNS: sb.Path(), Advertise: &bridge.Advertise{Count: 3, Interval: interval}})
	time.Sleep(3*interval + 100*time.Millisecond)
	got := announcements(t, capture.Stop())

	for _, v6 := range []bool{false, true} {
		var fam []announcement
		for _, a := range got {
			if a.v6 == v6 {
				fam = append(fam, a)
			}
		}
		if len(fam) != 3 {
			t.Fatalf("v6=%v: %d announcements, want 3: %+v", v6, len(fam), fam)
		}
		for i, a := range fam {
			wantIP, wantDst := ep.IPv4().Addr(), net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
			if v6 {
				wantIP, wantDst = ep.IPv6().Addr(), net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
				if a.hop != 255 {
					t.Errorf("NA hop limit %d, want 255", a.hop)
				}
			}
			if a.ip != wantIP || !bytes.Equal(a.mac, ep.MAC()) || !bytes.Equal(a.srcMAC, ep.MAC()) || !bytes.Equal(a.dstMAC, wantDst) {
				t.Errorf("v6=%v #%d: %s is-at %s (frame %s -> %s), want %s is-at %s to %s",
					v6, i, a.ip, a.mac, a.srcMAC, a.dstMAC, wantIP, ep.MAC(), wantDst)
			}
			if i > 0 {
				if gap := a.at.Sub(fam[i-1].at); gap < interval*2/3 || gap > interval*2 {
					t.Errorf("v6=%v: gap %v between #%d and #%d, want about %v", v6, gap, i-1, i, interval)
				}
			}
		}
	}
}

func TestLiveAdvertiseOffAndDetachStops(t *testing.T) {
	d, host := hostDriver(t)
	n := createNetwork(t, d, dual)
	capture := testenv.StartCapture(t, host, "nlbt0")
	off := attach(t, n, bridge.EndpointConfig{NetNS: testenv.NetNS(t, "off").Path(), Advertise: &bridge.Advertise{}})
	early, err := n.Attach(ctx, bridge.EndpointConfig{NetNS: testenv.NetNS(t, "early").Path(),
		Advertise: &bridge.Advertise{Count: 3, Interval: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if err := early.Detach(ctx); err != nil { // inside the resend window
		t.Fatal(err)
	}
	time.Sleep(800 * time.Millisecond)
	var offN, earlyN int
	for _, a := range announcements(t, capture.Stop()) {
		switch a.mac.String() {
		case off.MAC().String():
			offN++
		case early.MAC().String():
			earlyN++
		}
	}
	if offN != 0 {
		t.Errorf("Count 0 sent %d announcements", offN)
	}
	if earlyN != 2 { // the first GARP and NA, sent before Attach returned
		t.Errorf("endpoint detached in its resend window sent %d announcements, want 2 (one per family)", earlyN)
	}
}

// TestLiveDetachStopsAnnouncementsAtOnce detaches endpoints at staggered
// moments around their first resend, the default config otherwise, and
// checks by the kernel's receive timestamps on the bridge that no frame of
// theirs arrived after their Detach returned (the announcer's sockets are
// closed later, in the background; the retired host end is off the bridge
// too).
func TestLiveDetachStopsAnnouncementsAtOnce(t *testing.T) {
	d, host := hostDriver(t)
	n := createNetwork(t, d, dual)
	capture := testenv.StartCapture(t, host, "nlbt0")
	const interval = 100 * time.Millisecond
	type gone struct {
		mac      string
		returned time.Time
	}
	kept := attach(t, n, bridge.EndpointConfig{NetNS: testenv.NetNS(t, "kept").Path(), // control: resends are seen
		Advertise: &bridge.Advertise{Count: 3, Interval: interval}})
	var eps []gone
	for i := range 10 {
		ep, err := n.Attach(ctx, bridge.EndpointConfig{NetNS: testenv.NetNS(t, "sb").Path(), // distinct addresses, so distinct MACs
			IPv4:      netip.MustParsePrefix("172.29.0." + strconv.Itoa(10+i) + "/24"),
			IPv6:      netip.MustParsePrefix("fd29::" + strconv.Itoa(10+i) + "/64"),
			Advertise: &bridge.Advertise{Count: 3, Interval: interval}})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(interval - 5*time.Millisecond + time.Duration(i)*time.Millisecond)
		if err := ep.Detach(ctx); err != nil {
			t.Fatal(err)
		}
		eps = append(eps, gone{ep.MAC().String(), time.Now()})
	}
	time.Sleep(3 * interval)
	got := announcements(t, capture.Stop())
	if k := len(slices.DeleteFunc(slices.Clone(got), func(a announcement) bool { return a.mac.String() != kept.MAC().String() })); k != 6 {
		t.Errorf("control endpoint sent %d announcements, want 6 (3 per family)", k)
	}
	resent := 0
	for _, g := range eps {
		sent := 0
		for _, a := range got {
			if a.mac.String() != g.mac {
				continue
			}
			sent++
			if !a.at.Before(g.returned) {
				t.Errorf("%s: announcement of %s received %v after Detach returned", g.mac, a.ip, a.at.Sub(g.returned))
			}
		}
		if sent < 2 {
			t.Errorf("%s: %d announcements, want at least the first GARP and NA", g.mac, sent)
		}
		if sent > 2 {
			resent++
		}
	}
	t.Logf("%d of %d endpoints resent before their Detach", resent, len(eps))
}

func TestLiveAdvertiseFixesStaleNeighbour(t *testing.T) {
	d, _ := hostDriver(t)
	n := createNetwork(t, d, dual)
	peer := testenv.NetNS(t, "peer")
	attach(t, n, bridge.EndpointConfig{NetNS: peer.Path()})
	ip4, ip6 := netip.MustParsePrefix("172.29.0.50/24"), netip.MustParsePrefix("fd29::50/64")
	stale := "02:00:00:00:00:99"
	testenv.IP(t, peer, "neigh", "replace", ip4.Addr().String(), "lladdr", stale, "dev", "eth0", "nud", "stale")
	testenv.IP(t, peer, "neigh", "replace", ip6.Addr().String(), "lladdr", stale, "dev", "eth0", "nud", "stale")

	ep := attach(t, n, bridge.EndpointConfig{NetNS: testenv.NetNS(t, "new").Path(), IPv4: ip4, IPv6: ip6})
	// The first announcement goes out before Attach returns.
	deadline := time.Now().Add(time.Second)
	for {
		n4 := testenv.IP(t, peer, "neigh", "show", ip4.Addr().String())
		n6 := testenv.IP(t, peer, "neigh", "show", ip6.Addr().String())
		if strings.Contains(n4, ep.MAC().String()) && strings.Contains(n6, ep.MAC().String()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stale entries not corrected:\n%s%s", n4, n6)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Control: with announcements off, the planted entry stays wrong.
	ip4b := netip.MustParsePrefix("172.29.0.51/24")
	testenv.IP(t, peer, "neigh", "replace", ip4b.Addr().String(), "lladdr", stale, "dev", "eth0", "nud", "stale")
	attach(t, n, bridge.EndpointConfig{NetNS: testenv.NetNS(t, "quiet").Path(), IPv4: ip4b, Advertise: &bridge.Advertise{}})
	time.Sleep(300 * time.Millisecond)
	if n4 := testenv.IP(t, peer, "neigh", "show", ip4b.Addr().String()); !strings.Contains(n4, stale) {
		t.Errorf("without announcements the entry changed anyway, so the test proves nothing:\n%s", n4)
	}
}

func TestLiveCloseStopsAnnouncements(t *testing.T) {
	host := testenv.NetNS(t, "host")
	d, err := bridge.Open(ctx, bridge.Options{NetNS: host.Path()})
	if err != nil {
		t.Fatal(err)
	}
	n, err := d.CreateNetwork(ctx, dual)
	if err != nil {
		t.Fatal(err)
	}
	capture := testenv.StartCapture(t, host, "nlbt0")
	ep, err := n.Attach(ctx, bridge.EndpointConfig{NetNS: testenv.NetNS(t, "sb").Path(),
		Advertise: &bridge.Advertise{Count: 3, Interval: 400 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// Waiting for the two resends would take at least 800 ms.
	if took := time.Since(t0); took > 500*time.Millisecond {
		t.Errorf("Close took %v: it waited for the announcements instead of cancelling them", took)
	}
	time.Sleep(1000 * time.Millisecond)
	count := 0
	for _, a := range announcements(t, capture.Stop()) {
		if a.mac.String() == ep.MAC().String() {
			count++
		}
	}
	if count != 2 {
		t.Errorf("%d announcements after Close in the resend window, want only the first 2", count)
	}
	// A new driver finds the bridge as its own and removes everything.
	d2, err := bridge.Open(ctx, bridge.Options{NetNS: host.Path()})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	n2, err := d2.CreateNetwork(ctx, dual)
	if err != nil {
		t.Fatal(err)
	}
	if err := n2.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.OnlyLoopback(t, host)
}
