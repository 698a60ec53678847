package bench

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"runtime"
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
//  3. in the host: the veth create (host end on the bridge, in a link
//     group; the peer born in the sandbox as eth0 with its MAC) and the
//     host end up with addrgenmode none, in one sendmsg;
//  4. in the sandbox: lo up, the IPv4 address, eth0 up, the default route,
//     in one sendmsg;
//  5. in the host: one nftables batch adding the port's map element;
//  6. in the host: the host end's alias rewritten (nlbridge's endpoint
//     record: the create batch gives it the pending one).
//
// The requested ifindexes (a fresh one for the host end, 2 for the peer)
// stand in for the echo nlbridge reads the peer's index from.
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

// attach is one floor attach of sandbox sb.
func (f *floor) attach(sb *nsutil.NS) error {
	n := floorSeq.Add(1)
	sc, err := f.sandboxSocket(sb)
	if err != nil {
		return err
	}
	defer unix.Close(sc)
	if err := nlExec(sc, nlMsg(unix.RTM_GETROUTE, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, make([]byte, unix.SizeofRtMsg))); err != nil {
		return fmt.Errorf("route dump: %w", err)
	}
	host := 100000 + n
	mac := []byte{0x02, 0x46, 0x4c, byte(n >> 16), byte(n >> 8), byte(n)}
	peer := cat(ifinfo(2, 0), strAttr(unix.IFLA_IFNAME, "eth0"), attr(unix.IFLA_ADDRESS, mac), u32Attr(unix.IFLA_NET_NS_FD, uint32(sb.FD())))
	linkinfo := nested(unix.IFLA_LINKINFO, strAttr(unix.IFLA_INFO_KIND, "veth"), nested(unix.IFLA_INFO_DATA, attr(1 /* VETH_INFO_PEER */, peer)))
	create := nlMsg(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL,
		ifinfo(host, 0), strAttr(unix.IFLA_IFNAME, fmt.Sprintf("vfl%07x", n)), u32Attr(unix.IFLA_MASTER, f.bridge),
		u32Attr(unix.IFLA_GROUP, floorGroup), linkinfo)
	up := nlMsg(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, ifinfo(host, unix.IFF_UP), attr(unix.IFLA_IFALIAS, record(n, false)),
		nested(unix.IFLA_AF_SPEC, nested(unix.AF_INET6, attr(unix.IFLA_INET6_ADDR_GEN_MODE, []byte{1}))))
	if err := nlExec(f.route, create, up); err != nil {
		return fmt.Errorf("veth: %w", err)
	}
	a := netip.AddrFrom4([4]byte{10, 96, byte(100 + n/250%100), byte(1 + n%250)}).AsSlice()
	ifa := []byte{unix.AF_INET, 16, 0, 0, 2, 0, 0, 0}
	rt := []byte{unix.AF_INET, 0, 0, 0, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST, 0, 0, 0, 0}
	create4 := unix.NLM_F_REQUEST | unix.NLM_F_ACK | unix.NLM_F_CREATE | unix.NLM_F_EXCL
	if err := nlExec(sc,
		nlMsg(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, ifinfo(1, unix.IFF_UP)),
		nlMsg(unix.RTM_NEWADDR, create4, ifa, attr(unix.IFA_LOCAL, a), attr(unix.IFA_ADDRESS, a)),
		nlMsg(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, ifinfo(2, unix.IFF_UP)),
		nlMsg(unix.RTM_NEWROUTE, create4, rt, attr(unix.RTA_GATEWAY, []byte{10, 96, 0, 1}), u32Attr(unix.RTA_OIF, 2), u32Attr(unix.RTA_PRIORITY, 100)),
	); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	// portsany4: tcp . hostport -> addr . 80, each field padded to 4 bytes.
	hp := 20000 + n%10000
	key := []byte{unix.IPPROTO_TCP, 0, 0, 0, byte(hp >> 8), byte(hp), 0, 0}
	val := append(a, 0, 80, 0, 0)
	elem := nested(3 /* NFTA_SET_ELEM_LIST_ELEMENTS */, nested(1, /* NFTA_LIST_ELEM */
		nested(1 /* NFTA_SET_ELEM_KEY */, attr(1 /* NFTA_DATA_VALUE */, key)),
		nested(2 /* NFTA_SET_ELEM_DATA */, attr(1, val))))
	nfgen := func(family byte, res uint16) []byte { return []byte{family, 0, byte(res >> 8), byte(res)} }
	if err := nlExec(f.nft,
		nlMsg(unix.NFNL_MSG_BATCH_BEGIN, unix.NLM_F_REQUEST, nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)),
		nlMsg(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWSETELEM, unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE,
			nfgen(unix.NFPROTO_INET, 0), strAttr(1 /* TABLE */, "nlbridge"), strAttr(2 /* SET */, "portsany4"), elem),
		nlMsg(unix.NFNL_MSG_BATCH_END, unix.NLM_F_REQUEST, nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)),
	); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if err := nlExec(f.route, nlMsg(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, ifinfo(host, 0), attr(unix.IFLA_IFALIAS, record(n, true)))); err != nil {
		return fmt.Errorf("alias: %w", err)
	}
	return nil
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
func nlExec(fd int, msgs ...rawMsg) error {
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
				if e := int32(binary.NativeEndian.Uint32(b[unix.NLMSG_HDRLEN:])); e != 0 {
					return unix.Errno(-e)
				}
			case unix.NLMSG_DONE:
				pending--
			}
			b = b[min(len(b), (l+3)&^3):]
		}
	}
	return nil
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
		err := f.attach(sbs[i])
		lat = append(lat, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	lat.report(b, "attach")
}
