package bench

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

// The floor is the kernel's own cost of an attach on the "nat+1port"
// workload: the netlink messages nlbridge sends for one attach, built by
// hand and sent over raw sockets by this file alone, with no library logic
// (no reservation, route check, echo parsing, port socket, waits or
// announcement). Per attach:
//
//  1. one thread hop into the sandbox to open its NETLINK_ROUTE socket;
//  2. in the sandbox: a route dump;
//  3. in the host: one nftables batch adding the guard's elements (keyed
//     by the host end's name, before it exists);
//  4. in the host: the veth create (host end on the bridge, in a link
//     group; the peer born in the sandbox as eth0 with its MAC) and the
//     host end up with addrgenmode none, in one sendmsg;
//  5. in the sandbox: lo up, eth0's addrgenmode none, the IPv4 address,
//     eth0 up, the default route, in one sendmsg;
//  6. in the host: one nftables batch adding the port's map element;
//  7. in the host: the host end's alias rewritten (nlbridge's endpoint
//     record: the create batch gives it the pending one);
//  8. only when the address was an earlier endpoint's (churn): one
//     conntrack flush of flows to it.
//
// The requested ifindexes (a fresh one for the host end, 2 for the peer)
// stand in for the echo nlbridge reads the peer's index from. The detach
// floor is in floorchurn_test.go.
type floor struct {
	route, nft int // netlink sockets in the world's host namespace
	home       int // this process's namespace, to return the thread to
	bridge     uint32
}

// floorGroup is the link group of the floor's host ends (not nlbridge's).
const floorGroup = 0x464c5200

// floorSeq numbers the floor's endpoints across runs: host ifindex, MAC,
// host port.
var floorSeq atomic.Uint32

func openFloor(b *testing.B, w *world) *floor {
	f := &floor{}
	var err error
	if f.home, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		b.Fatal(err)
	}
	err = w.host.Do(func() error {
		if f.route, err = nlSocket(unix.NETLINK_ROUTE); err != nil {
			return err
		}
		f.nft, err = nlSocket(unix.NETLINK_NETFILTER)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		nlExec(f.route, nlMsg(unix.RTM_DELLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, ifinfo(0, 0), u32Attr(unix.IFLA_GROUP, floorGroup)))
		unix.Close(f.route)
		unix.Close(f.nft)
		unix.Close(f.home)
	})
	br, err := net0Index(w)
	if err != nil {
		b.Fatal(err)
	}
	f.bridge = br
	return f
}

// net0Index is the measured bridge's ifindex.
func net0Index(w *world) (uint32, error) {
	var idx uint32
	err := w.host.Do(func() error {
		ifi, err := net.InterfaceByName("nlbbench0")
		if err == nil {
			idx = uint32(ifi.Index)
		}
		return err
	})
	return idx, err
}

func nlSocket(proto int) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// floorEP is what the floor's detach needs of an attach.
type floorEP struct {
	n    uint32 // sequence number: names, MAC, address, host port
	host uint32 // host end's ifindex
	sb   *nsutil.NS
}

func (e floorEP) hostName() string { return fmt.Sprintf("vfl%07x", e.n) }
func (e floorEP) mac() []byte {
	return []byte{0x02, 0x46, 0x4c, byte(e.n >> 16), byte(e.n >> 8), byte(e.n)}
}
func (e floorEP) addr() []byte {
	return netip.AddrFrom4([4]byte{10, 96, byte(100 + e.n/250%100), byte(1 + e.n%250)}).AsSlice()
}
func (e floorEP) hostPort() int { return 20000 + int(e.n%10000) }

// steps accumulates the time of each step of the floor, by name.
type steps struct {
	mu sync.Mutex
	d  map[string]time.Duration
}

// timed runs fn as step name (s may be nil).
func (s *steps) timed(name string, fn func() error) error {
	t0 := time.Now()
	err := fn()
	if s != nil {
		s.mu.Lock()
		if s.d == nil {
			s.d = map[string]time.Duration{}
		}
		s.d[name] += time.Since(t0)
		s.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// attach is one floor attach of sandbox sb; reused says the address was
// an earlier endpoint's, so its stale flows are flushed (see nlbridge's
// flushReused).
func (f *floor) attach(sb *nsutil.NS, reused bool, st *steps) (floorEP, error) {
	e := floorEP{n: floorSeq.Add(1), sb: sb}
	e.host = 100000 + e.n
	var sc int
	if err := st.timed("sandbox-socket", func() (err error) { sc, err = f.sandboxSocket(sb); return err }); err != nil {
		return e, err
	}
	defer unix.Close(sc)
	err := st.timed("route-dump", func() error {
		return nlExec(sc, nlMsg(unix.RTM_GETROUTE, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, make([]byte, unix.SizeofRtMsg)))
	})
	if err != nil {
		return e, err
	}
	if err := st.timed("guard-add", func() error { return nlExec(f.nft, nftBatch(unix.NFT_MSG_NEWSETELEM, guardElems(e)...)...) }); err != nil {
		return e, err
	}
	peer := cat(ifinfo(2, 0), strAttr(unix.IFLA_IFNAME, "eth0"), attr(unix.IFLA_ADDRESS, e.mac()), u32Attr(unix.IFLA_NET_NS_FD, uint32(sb.FD())))
	linkinfo := nested(unix.IFLA_LINKINFO, strAttr(unix.IFLA_INFO_KIND, "veth"), nested(unix.IFLA_INFO_DATA, attr(1 /* VETH_INFO_PEER */, peer)))
	create := nlMsg(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL,
		ifinfo(e.host, 0), strAttr(unix.IFLA_IFNAME, e.hostName()), u32Attr(unix.IFLA_MASTER, f.bridge),
		u32Attr(unix.IFLA_GROUP, floorGroup), linkinfo)
	up := nlMsg(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, ifinfo(e.host, unix.IFF_UP), attr(unix.IFLA_IFALIAS, record(e.n, false)), addrGenModeNone)
	if err := st.timed("veth-create", func() error { return nlExec(f.route, create, up) }); err != nil {
		return e, err
	}
	a := e.addr()
	ifa := []byte{unix.AF_INET, 16, 0, 0, 2, 0, 0, 0}
	rt := []byte{unix.AF_INET, 0, 0, 0, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST, 0, 0, 0, 0}
	create4 := unix.NLM_F_REQUEST | unix.NLM_F_ACK | unix.NLM_F_CREATE | unix.NLM_F_EXCL
	err = st.timed("sandbox-up", func() error {
		return nlExec(sc,
			nlMsg(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, ifinfo(1, unix.IFF_UP)),
			nlMsg(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, ifinfo(2, 0), addrGenModeNone),
			nlMsg(unix.RTM_NEWADDR, create4, ifa, attr(unix.IFA_LOCAL, a), attr(unix.IFA_ADDRESS, a)),
			nlMsg(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, ifinfo(2, unix.IFF_UP)),
			nlMsg(unix.RTM_NEWROUTE, create4, rt, attr(unix.RTA_GATEWAY, []byte{10, 96, 0, 1}), u32Attr(unix.RTA_OIF, 2), u32Attr(unix.RTA_PRIORITY, 100)),
		)
	})
	if err != nil {
		return e, err
	}
	if err := st.timed("port-add", func() error { return nlExec(f.nft, nftBatch(unix.NFT_MSG_NEWSETELEM, portElem(e))...) }); err != nil {
		return e, err
	}
	err = st.timed("alias", func() error {
		return nlExec(f.route, nlMsg(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, ifinfo(e.host, 0), attr(unix.IFLA_IFALIAS, record(e.n, true))))
	})
	if err != nil || !reused {
		return e, err
	}
	return e, st.timed("ct-flush-reused", func() error { return nlExecIgnoring(f.nft, unix.ENOENT, ctFlush(a, false)...) })
}

// addrGenModeNone is IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_ADDR_GEN_MODE: none } }.
var addrGenModeNone = nested(unix.IFLA_AF_SPEC, nested(unix.AF_INET6, attr(unix.IFLA_INET6_ADDR_GEN_MODE, []byte{1})))

// nftBatch wraps one message of type typ per element list in a batch.
func nftBatch(typ int, elems ...[]byte) []rawMsg {
	nfgen := func(family byte, res uint16) []byte { return []byte{family, 0, byte(res >> 8), byte(res)} }
	msgs := []rawMsg{nlMsg(unix.NFNL_MSG_BATCH_BEGIN, unix.NLM_F_REQUEST, nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES))}
	flags := unix.NLM_F_REQUEST | unix.NLM_F_ACK
	if typ == unix.NFT_MSG_NEWSETELEM {
		flags |= unix.NLM_F_CREATE
	}
	for _, el := range elems {
		msgs = append(msgs, nlMsg(unix.NFNL_SUBSYS_NFTABLES<<8|typ, flags, el))
	}
	return append(msgs, nlMsg(unix.NFNL_MSG_BATCH_END, unix.NLM_F_REQUEST, nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)))
}

// setElems is the body of a NEWSETELEM/DELSETELEM for set in nlbridge's
// table of family: one element per key (with its value, if vals).
func setElems(family byte, set string, keys [][]byte, vals ...[]byte) []byte {
	var list []byte
	for i, k := range keys {
		el := nested(1 /* NFTA_SET_ELEM_KEY */, attr(1 /* NFTA_DATA_VALUE */, k))
		if i < len(vals) {
			el = cat(el, nested(2 /* NFTA_SET_ELEM_DATA */, attr(1, vals[i])))
		}
		list = cat(list, nested(1 /* NFTA_LIST_ELEM */, el))
	}
	return cat([]byte{family, 0, 0, 0}, strAttr(1 /* TABLE */, "nlbridge"), strAttr(2 /* SET */, set),
		nested(3 /* NFTA_SET_ELEM_LIST_ELEMENTS */, list))
}

// portElem is portsany4's element: tcp . hostport -> addr . 80, each
// field padded to 4 bytes.
func portElem(e floorEP) []byte {
	hp := e.hostPort()
	key := []byte{unix.IPPROTO_TCP, 0, 0, 0, byte(hp >> 8), byte(hp), 0, 0}
	return setElems(unix.NFPROTO_INET, "portsany4", [][]byte{key}, append(e.addr(), 0, 80, 0, 0))
}

// guardElems are the guard's elements of an IPv4-only spoof-checked port,
// one message per set as nlbridge sends them.
func guardElems(e floorEP) [][]byte {
	port := make([]byte, 16)
	copy(port, e.hostName())
	one := func(set string, key ...byte) []byte {
		return setElems(unix.NFPROTO_BRIDGE, set, [][]byte{cat(port, key)})
	}
	ll := []byte{0xfe, 0x80, 0, 0, 0, 0, 0, 0, e.mac()[0] ^ 2, e.mac()[1], e.mac()[2], 0xff, 0xfe, e.mac()[3], e.mac()[4], e.mac()[5]}
	return [][]byte{one("endpoints"), one("noipv6"), one("guarded"), one("macs", append(e.mac(), 0, 0)...),
		one("addrs4", e.addr()...), one("addrs6", ll...)}
}

// ctFlush builds the conntrack flushes of addr (IPv4): flows to it (reply
// source) and, if outbound, from it (original source), as nlbridge's.
func ctFlush(addr []byte, outbound bool) []rawMsg {
	del := func(tuple, filterFlags uint16) rawMsg {
		return nlMsg(unix.NFNL_SUBSYS_CTNETLINK<<8|2 /* IPCTNL_MSG_CT_DELETE */, unix.NLM_F_REQUEST|unix.NLM_F_ACK,
			[]byte{unix.AF_INET, 1, 0, 0}, nested(tuple, nested(1 /* CTA_TUPLE_IP */, attr(1 /* CTA_IP_V4_SRC */, addr))),
			nested(25 /* CTA_FILTER */, u32Attr(filterFlags, 1 /* IP_SRC */)))
	}
	msgs := []rawMsg{del(2 /* CTA_TUPLE_REPLY */, 2 /* CTA_FILTER_REPLY_FLAGS */)}
	if outbound {
		msgs = append(msgs, del(1 /* CTA_TUPLE_ORIG */, 1 /* CTA_FILTER_ORIG_FLAGS */))
	}
	return msgs
}

// record is an alias of the size of nlbridge's endpoint record (pending:
// with an owner; complete: with the port).
func record(n uint32, complete bool) []byte {
	r := fmt.Sprintf("nlbridge:ep:1 id=floor%07x if=eth0 ns=/run/netns/nlbt-b-0123456789ab mac=02464c%06x ip4=10.96.%d.%d", n, n&0xffffff, 100+n/250%100, 1+n%250)
	if complete {
		return []byte(r + fmt.Sprintf(" ports=tcp:0.0.0.0:%d:80", 20000+n%10000))
	}
	return []byte(r + " owner=12345.67890")
}

// sandboxSocket opens a NETLINK_ROUTE socket inside sb from a thread that
// enters it and comes back.
func (f *floor) sandboxSocket(sb *nsutil.NS) (int, error) {
	runtime.LockOSThread()
	if err := unix.Setns(sb.FD(), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return -1, err
	}
	fd, err := nlSocket(unix.NETLINK_ROUTE)
	if serr := unix.Setns(f.home, unix.CLONE_NEWNET); serr != nil {
		return -1, serr // the thread stays locked and dies with the goroutine's exit
	}
	runtime.UnlockOSThread()
	return fd, err
}

// rawMsg is one netlink message: header type and flags, and payload.
type rawMsg struct {
	typ, flags uint16
	data       []byte
}

func nlMsg(typ, flags int, parts ...[]byte) rawMsg {
	return rawMsg{uint16(typ), uint16(flags), cat(parts...)}
}

var nlSeqNo atomic.Uint32

// nlExec sends msgs in one sendmsg and reads until each one flagged
// NLM_F_ACK is acknowledged (or, for a dump, until NLMSG_DONE).
func nlExec(fd int, msgs ...rawMsg) error { return nlExecIgnoring(fd, 0, msgs...) }

// nlExecIgnoring is nlExec, counting refusals with errno ignore as
// success; it reads every answer even after a refusal.
func nlExecIgnoring(fd int, ignore unix.Errno, msgs ...rawMsg) error {
	var buf []byte
	pending := 0
	for _, m := range msgs {
		h := make([]byte, unix.NLMSG_HDRLEN)
		binary.NativeEndian.PutUint32(h[0:], uint32(unix.NLMSG_HDRLEN+len(m.data)))
		binary.NativeEndian.PutUint16(h[4:], m.typ)
		binary.NativeEndian.PutUint16(h[6:], m.flags)
		binary.NativeEndian.PutUint32(h[8:], nlSeqNo.Add(1))
		buf = append(append(buf, h...), m.data...)
		for len(buf)%4 != 0 {
			buf = append(buf, 0)
		}
		if m.flags&(unix.NLM_F_ACK|unix.NLM_F_DUMP) != 0 {
			pending++
		}
	}
	if err := unix.Sendto(fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	rb := make([]byte, 1<<16)
	var refused error
	for pending > 0 {
		n, _, err := unix.Recvfrom(fd, rb, 0)
		if err != nil {
			return err
		}
		for b := rb[:n]; len(b) >= unix.NLMSG_HDRLEN; {
			l := int(binary.NativeEndian.Uint32(b))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return fmt.Errorf("bad netlink message length %d", l)
			}
			switch binary.NativeEndian.Uint16(b[4:]) {
			case unix.NLMSG_ERROR:
				pending--
				if e := unix.Errno(-int32(binary.NativeEndian.Uint32(b[unix.NLMSG_HDRLEN:]))); e != 0 && e != ignore && refused == nil {
					refused = e
				}
			case unix.NLMSG_DONE:
				pending--
			}
			b = b[min(len(b), (l+3)&^3):]
		}
	}
	return refused
}

func ifinfo(index uint32, flags uint32) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(b[4:], index)
	binary.NativeEndian.PutUint32(b[8:], flags)
	binary.NativeEndian.PutUint32(b[12:], flags) // change mask: the flags set
	return b
}

func attr(typ uint16, data []byte) []byte {
	b, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: typ, Data: data}})
	return b
}

func nested(typ uint16, parts ...[]byte) []byte { return attr(typ|unix.NLA_F_NESTED, cat(parts...)) }
func strAttr(typ uint16, s string) []byte       { return attr(typ, append([]byte(s), 0)) }
func u32Attr(typ uint16, v uint32) []byte       { return attr(typ, binary.NativeEndian.AppendUint32(nil, v)) }

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// floorAttach times floor attaches into fresh sandboxes of w.
func floorAttach(b *testing.B, w *world) {
	f := openFloor(b, w)
	sbs := sandboxes(b, b.N)
	var lat latencies
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		_, err := f.attach(sbs[i], false, nil)
		lat = append(lat, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	lat.report(b, "attach")
}
