package bench

import (
	"encoding/binary"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

// The churn floor is the kernel's own cost of an attach+detach pair on the
// "nat+1port" workload: the floor's attach (floor_test.go, with the
// conntrack flush of a reused address) and the netlink messages of
// nlbridge's detach, raw:
//
//  1. in the host: the host end retired (off the bridge, down, into the
//     reclaim group);
//  2. in the host: one nftables batch deleting the port's and the guard's
//     elements;
//  3. in the host: the conntrack flushes of flows to and from the address;
//  4. a thread hop into the sandbox for a NETLINK_ROUTE socket, and there
//     eth0 down, renamed and its address deleted, in one sendmsg.
//
// As in nlbridge, a goroutine deletes the reclaim group 50 ms after a
// retirement (the kernel's unregister work happens there, under RTNL, and
// slows what runs meanwhile).

// floorReclaim is the link group of the floor's retired host ends.
const floorReclaim = floorGroup + 1

// detach is one floor detach of e.
func (f *floor) detach(e floorEP, st *steps) error {
	retire := nlMsg(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, ifinfoChange(e.host, 0, unix.IFF_UP),
		u32Attr(unix.IFLA_MASTER, 0), u32Attr(unix.IFLA_GROUP, floorReclaim))
	if err := st.timed("host-retire", func() error { return nlExec(f.route, retire) }); err != nil {
		return err
	}
	err := st.timed("elems-del", func() error {
		return nlExec(f.nft, nftBatch(unix.NFT_MSG_DELSETELEM, append([][]byte{portElem(e)}, guardElems(e)...)...)...)
	})
	if err != nil {
		return err
	}
	if err := st.timed("ct-flush", func() error { return nlExecIgnoring(f.nft, unix.ENOENT, ctFlush(e.addr(), true)...) }); err != nil {
		return err
	}
	var sc int
	if err := st.timed("sandbox-socket", func() (err error) { sc, err = f.sandboxSocket(e.sb); return err }); err != nil {
		return err
	}
	defer unix.Close(sc)
	ifa := []byte{unix.AF_INET, 16, 0, 0, 2, 0, 0, 0}
	return st.timed("sandbox-retire", func() error { // ENODEV: the reclaimer was first
		return nlExecIgnoring(sc, unix.ENODEV,
			nlMsg(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, ifinfoChange(2, 0, unix.IFF_UP)),
			nlMsg(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, ifinfoChange(2, 0, 0), strAttr(unix.IFLA_IFNAME, fmt.Sprintf("nlbd%07x", e.n))),
			nlMsg(unix.RTM_DELADDR, unix.NLM_F_REQUEST|unix.NLM_F_ACK, ifa, attr(unix.IFA_LOCAL, e.addr()), attr(unix.IFA_ADDRESS, e.addr())),
		)
	})
}

func ifinfoChange(index, flags, change uint32) []byte {
	b := ifinfo(index, flags)
	binary.NativeEndian.PutUint32(b[12:], change)
	return b
}

// floorReclaimer deletes the floor's reclaim group 50 ms after a kick, as
// nlbridge's reclaimLoop does, until stop is closed; st times the deletes.
func floorReclaimer(b *testing.B, w *world, st *steps) (kick func(), stop func()) {
	f := openFloor(b, w)
	kicks, done := make(chan struct{}, 1), make(chan struct{})
	var wg sync.WaitGroup
	del := func() {
		st.timed("reclaim (background)", func() error {
			return nlExecIgnoring(f.route, unix.ENODEV, nlMsg(unix.RTM_DELLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, ifinfo(0, 0), u32Attr(unix.IFLA_GROUP, floorReclaim)))
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-done:
				del()
				return
			case <-kicks:
			}
			select {
			case <-done:
			case <-time.After(50 * time.Millisecond):
			}
			del()
		}
	})
	kick = func() {
		select {
		case kicks <- struct{}{}:
		default:
		}
	}
	return kick, func() { close(done); wg.Wait() }
}

// floorChurn times floor attach+detach pairs (or, if min, minPairs) from
// workers goroutines, each with its own sockets, and reports pairs/s and
// (one worker) each step's share of a pair.
func floorChurn(b *testing.B, w *world, workers int, min bool) {
	floors := make([]*floor, workers)
	for i := range floors {
		floors[i] = openFloor(b, w)
	}
	sbs := sandboxes(b, b.N)
	next := make(chan *nsutil.NS, b.N)
	for _, sb := range sbs {
		next <- sb
	}
	close(next)
	st := &steps{}
	kick, stop := floorReclaimer(b, w, st)
	var wg sync.WaitGroup
	b.ResetTimer()
	t0 := time.Now()
	for _, f := range floors {
		wg.Go(func() {
			for sb := range next {
				var err error
				if min {
					err = f.minPair(sb, st)
				} else {
					var e floorEP
					e, err = f.attach(sb, true, st)
					if err == nil {
						err = f.detach(e, st)
					}
				}
				if err != nil {
					b.Error(err)
					return
				}
				kick()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	stop()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pairs/s")
	if workers == 1 {
		reportSteps(b, st)
	}
}

// reportSteps prints each step's mean time per pair, largest first.
func reportSteps(b *testing.B, st *steps) {
	var names []string
	for k := range st.d {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return st.d[names[i]] > st.d[names[j]] })
	s := fmt.Sprintf("floor steps per pair (%d pairs):", b.N)
	for _, k := range names {
		s += fmt.Sprintf(" %s %.0fµs", k, float64(st.d[k].Microseconds())/float64(b.N))
	}
	b.Log(s)
}

// minPair is the least any attach+detach of a working endpoint costs the
// kernel: the veth pair created on the bridge with its peer born in the
// sandbox, the sandbox's eth0 given its address, brought up and given the
// default route; then the host end moved into the reclaim group, whose
// delete takes the pair. No firewall, record, guard, conntrack or other
// retire step.
func (f *floor) minPair(sb *nsutil.NS, st *steps) error {
	e := floorEP{n: floorSeq.Add(1), sb: sb}
	e.host = 100000 + e.n
	var sc int
	if err := st.timed("sandbox-socket", func() (err error) { sc, err = f.sandboxSocket(sb); return err }); err != nil {
		return err
	}
	defer unix.Close(sc)
	peer := cat(ifinfo(2, 0), strAttr(unix.IFLA_IFNAME, "eth0"), attr(unix.IFLA_ADDRESS, e.mac()), u32Attr(unix.IFLA_NET_NS_FD, uint32(sb.FD())))
	linkinfo := nested(unix.IFLA_LINKINFO, strAttr(unix.IFLA_INFO_KIND, "veth"), nested(unix.IFLA_INFO_DATA, attr(1 /* VETH_INFO_PEER */, peer)))
	create := nlMsg(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL,
		ifinfo(e.host, unix.IFF_UP), strAttr(unix.IFLA_IFNAME, e.hostName()), u32Attr(unix.IFLA_MASTER, f.bridge),
		u32Attr(unix.IFLA_GROUP, floorGroup), linkinfo)
	if err := st.timed("veth-create", func() error { return nlExec(f.route, create) }); err != nil {
		return err
	}
	a := e.addr()
	ifa := []byte{unix.AF_INET, 16, 0, 0, 2, 0, 0, 0}
	rt := []byte{unix.AF_INET, 0, 0, 0, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST, 0, 0, 0, 0}
	create4 := unix.NLM_F_REQUEST | unix.NLM_F_ACK | unix.NLM_F_CREATE | unix.NLM_F_EXCL
	err := st.timed("sandbox-up", func() error {
		return nlExec(sc,
			nlMsg(unix.RTM_NEWADDR, create4, ifa, attr(unix.IFA_LOCAL, a), attr(unix.IFA_ADDRESS, a)),
			nlMsg(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, ifinfo(2, unix.IFF_UP)),
			nlMsg(unix.RTM_NEWROUTE, create4, rt, attr(unix.RTA_GATEWAY, []byte{10, 96, 0, 1}), u32Attr(unix.RTA_OIF, 2), u32Attr(unix.RTA_PRIORITY, 100)),
		)
	})
	if err != nil {
		return err
	}
	return st.timed("host-regroup", func() error {
		return nlExec(f.route, nlMsg(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, ifinfoChange(e.host, 0, 0), u32Attr(unix.IFLA_GROUP, floorReclaim)))
	})
}
