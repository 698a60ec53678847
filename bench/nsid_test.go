package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

// BenchmarkNSIDs tests why attach slows down with existing endpoints: the
// kernel fills in IFLA_LINK_NETNSID for every message about a veth whose
// peer is in another namespace (notifications and echoes of each change to
// a host end), and finds that id with a linear walk of the host
// namespace's id table (__peernet2id: idr_for_each until it meets the
// peer), which holds one id per namespace that a host end's peer lives in
// (a veth create assigns it). A new sandbox's id is the newest, so its
// walk is the whole table.
//
// At each scale, two worlds with the same numbers of namespaces and of
// veth pairs on the bridges (made raw, not by nlbridge): "spread", each
// peer in its own namespace as with real sandboxes (one id each), and
// "packed", the peers of each bridge's pairs in one namespace and the
// other namespaces empty (one id per bridge). Each reports the ids in the
// host, the time of one RTM_GETLINK (one fill) of the newest host end and
// of the bridge (no peer), and the floor attach (p50).
func BenchmarkNSIDs(parent *testing.B) {
	for _, existing := range scales() {
		for _, layout := range []string{"spread", "packed"} {
			parent.Run(fmt.Sprintf("layout=%s/existing=%d", layout, existing), func(b *testing.B) {
				w := newWorld(parent, b, existing, "nat+raw-"+layout)
				f := openFloor(b, w)
				ids, err := countNSIDs(f.route)
				if err != nil {
					b.Fatal(err)
				}
				getlink := func(index uint32) float64 {
					const n = 200
					t0 := time.Now()
					for range n {
						if err := nlExec(f.route, nlMsg(unix.RTM_GETLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, ifinfo(index, 0),
							u32Attr(unix.IFLA_EXT_MASK, 1<<3 /* RTEXT_FILTER_SKIP_STATS */))); err != nil {
							b.Fatal(err)
						}
					}
					return float64(time.Since(t0).Nanoseconds()) / 1000 / n
				}
				veth := 0.0
				if w.rawHost != 0 {
					veth = getlink(w.rawHost)
				}
				br := getlink(f.bridge)
				sbs := sandboxes(b, b.N)
				var lat latencies
				b.ResetTimer()
				for _, sb := range sbs {
					t0 := time.Now()
					_, err := f.attach(sb, false, nil)
					lat = append(lat, time.Since(t0))
					if err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				lat.report(b, "attach")
				b.ReportMetric(float64(ids), "nsids")
				b.ReportMetric(veth, "getlink-veth-µs")
				b.ReportMetric(br, "getlink-bridge-µs")
			})
		}
	}
}

// rawGroup is the link group of rawPairs' host ends.
const rawGroup = floorGroup + 2

// rawPairs makes n veth pairs, host ends on bridges of up to 1,000 ports
// (networks 1, 2, ...), each peer in a namespace of its own or, if layout
// is "packed", the peers of a bridge's pairs in one namespace next to 999
// empty ones: n namespaces either way. It keeps the newest host end's
// ifindex in w.rawHost.
func (w *world) rawPairs(b *testing.B, n int, layout string) {
	packed := layout == "packed"
	f := &floor{}
	err := w.host.Do(func() (err error) { f.route, err = nlSocket(unix.NETLINK_ROUTE); return err })
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(f.route)
	var bridge uint32
	var sb *nsutil.NS
	for i := range n {
		if i%1000 == 0 {
			nw, err := w.network(1 + i/1000)
			if err != nil {
				b.Fatal(err)
			}
			if bridge, err = bridgeIndex(w, nw.Config().Name); err != nil {
				b.Fatal(err)
			}
		}
		switch {
		case !packed || i%1000 == 0:
			sb = w.netns(b, "b")
		default:
			w.netns(b, "e").Close()
		}
		host := uint32(200000 + i)
		peerName := "eth0"
		if packed {
			peerName = fmt.Sprint("p", i%1000)
		}
		peer := cat(ifinfo(0, 0), strAttr(unix.IFLA_IFNAME, peerName), u32Attr(unix.IFLA_NET_NS_FD, uint32(sb.FD())))
		linkinfo := nested(unix.IFLA_LINKINFO, strAttr(unix.IFLA_INFO_KIND, "veth"), nested(unix.IFLA_INFO_DATA, attr(1 /* VETH_INFO_PEER */, peer)))
		err := nlExec(f.route, nlMsg(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL,
			ifinfo(host, unix.IFF_UP), strAttr(unix.IFLA_IFNAME, fmt.Sprintf("vns%07x", i)), u32Attr(unix.IFLA_MASTER, bridge),
			u32Attr(unix.IFLA_GROUP, rawGroup), linkinfo))
		if err != nil {
			b.Fatal(err)
		}
		if !packed {
			sb.Close() // its path keeps it
		}
		w.rawHost = host
	}
}

// bridgeIndex is the ifindex of the bridge name in the world's host.
func bridgeIndex(w *world, name string) (uint32, error) {
	var idx uint32
	err := w.host.Do(func() error {
		var err error
		ifi, err := net.InterfaceByName(name)
		if err == nil {
			idx = uint32(ifi.Index)
		}
		return err
	})
	return idx, err
}

// countNSIDs counts the namespace ids assigned in the namespace of the
// NETLINK_ROUTE socket fd. An RTM_GETNSID dump (and so `ip netns list-id`)
// stops after its first message buffer on this kernel (134 ids), so each
// id is asked for in turn (RTM_GETNSID with NETNSA_NSID) until 64 in a row
// are free.
func countNSIDs(fd int) (int, error) {
	count := 0
	for id, free := int32(0), 0; free < 64; id++ {
		err := nlExec(fd, nlMsg(unix.RTM_GETNSID, unix.NLM_F_REQUEST|unix.NLM_F_ACK, []byte{unix.AF_UNSPEC, 0, 0, 0},
			attr(unix.NETNSA_NSID, binary.NativeEndian.AppendUint32(nil, uint32(id)))))
		switch {
		case err == nil:
			count, free = count+1, 0
		case errors.Is(err, unix.ENOENT):
			free++
		default:
			return 0, fmt.Errorf("get nsid %d: %w", id, err)
		}
	}
	return count, nil
}
