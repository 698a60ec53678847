// Package bridgetest is an in-memory kernel for tests of code that uses
// nlbridge, without root and without namespaces.
//
// A Driver opened with Options{Kernel: k} runs its production code on k:
// every netlink message it sends (rtnetlink, nf_tables, conntrack) is
// answered by k, which keeps namespaces, links, addresses, routes and the
// firewall's tables as the kernel would, and refuses what the kernel
// refuses for those requests (a duplicate link name, an address on a
// missing link, an element of a missing set). The few operations that are
// not netlink messages (sysctls, port-holding sockets, announcements, the
// host lock, process liveness) are modelled too.
//
//	k := bridgetest.New()
//	k.AddNS("/run/netns/c1")
//	d, _ := bridge.Open(ctx, bridge.Options{Kernel: k})
//	... // create networks, attach "/run/netns/c1"
//	fmt.Print(k.Dump())
//
// Opening another Driver on the same Kernel is a restart: it recovers from
// the kernel state, as after a real restart. Kill makes the processes that
// opened drivers so far dead, for tests of half-made state and GC.
// FailNext injects kernel errors; RemoveNS makes a namespace disappear.
//
// Use New; the zero Kernel is not usable. A Kernel is safe for concurrent
// use; its state changes atomically per request (per batch for nf_tables).
package bridgetest

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"sort"
	"sync"
	"syscall"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"github.com/nlbridge/bridge/internal/fakenft"
	"github.com/nlbridge/bridge/internal/kern"
	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

// HostNS is the path of the namespace a Driver manages by default
// (Options.NetNS ""): the fake's initial namespace.
const HostNS = "/proc/1/ns/net"

// Kernel is the in-memory kernel. See the package doc.
type Kernel struct {
	mu      sync.Mutex
	nss     map[string]*netns // by path
	all     []*netns          // also removed ones, in creation order
	fds     map[int]*netns    // namespace fds handed out by open handles
	nextFD  int
	nextIno uint64
	faults  []*Fault
	hooks   []func()     // of faults that fired, to run unlocked
	pids    map[int]bool // processes that opened drivers: alive?
	nextPID int
	locks   map[nsutil.ID]*lockState
}

// New returns a kernel with only the initial namespace (HostNS), which
// has lo, up.
func New() *Kernel {
	k := &Kernel{nss: map[string]*netns{}, fds: map[int]*netns{}, nextFD: 1 << 20, nextIno: 0xf0000000,
		pids: map[int]bool{}, nextPID: 1000, locks: map[nsutil.ID]*lockState{}}
	k.addNS(HostNS).links[1].up = true
	return k
}

// netns is one namespace.
type netns struct {
	path      string // as created (kept after removal, for Dump)
	gone      bool   // removed: its path no longer opens
	id        nsutil.ID
	links     map[uint32]*ifc
	next      uint32 // last ifindex given
	addrs     []*ifaddr
	routes    []*route
	sysctls   map[string]string // namespace-wide: "net.ipv4.ip_forward" -> "1"
	nft       *fakenft.State
	ports     map[portKey]bool // bound by port-holding sockets
	flushed   []string         // conntrack flush requests, as text
	announced []string         // gratuitous ARPs and NAs sent
	watchers  map[*sock]bool   // sockets in NFNLGRP_NFTABLES
}

func (k *Kernel) addNS(path string) *netns {
	k.nextIno++
	ns := &netns{path: path, id: nsutil.ID{Dev: 4, Ino: k.nextIno}, links: map[uint32]*ifc{},
		sysctls: map[string]string{}, nft: fakenft.New(), ports: map[portKey]bool{}, watchers: map[*sock]bool{}}
	ns.addLink(&ifc{name: "lo", kind: "loopback", mtu: 65536, mac: make(net.HardwareAddr, 6)})
	k.nss[path] = ns
	k.all = append(k.all, ns)
	return ns
}

// AddNS creates a namespace at path, as `ip netns add` does (a sandbox),
// with lo down.
func (k *Kernel) AddNS(path string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if path == "" {
		return &fs.PathError{Op: "create netns", Path: path, Err: syscall.EINVAL}
	}
	if _, ok := k.nss[path]; ok {
		return &fs.PathError{Op: "create netns", Path: path, Err: syscall.EEXIST}
	}
	k.addNS(path)
	return nil
}

// RemoveNS makes the namespace at path gone, as when its last process
// exits and its mount is removed: the path no longer opens, and its
// devices are destroyed (a veth end there takes its peer with it). Conns
// already open in it keep answering, on an empty namespace.
func (k *Kernel) RemoveNS(path string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	ns, ok := k.nss[path]
	if !ok || path == HostNS {
		return &fs.PathError{Op: "remove netns", Path: path, Err: syscall.ENOENT}
	}
	delete(k.nss, path)
	ns.gone = true
	for _, l := range ns.sortedLinks() {
		if l.index != 1 {
			ns.deleteLink(l)
		}
	}
	return nil
}

// Kill makes every process that opened a driver on k so far dead, as if
// they had been killed: records naming them as owners count as half-made
// (see Driver.GC). Kill a process between its operations: a driver holds
// the host lock only during one, and Kill does not take it away.
func (k *Kernel) Kill() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for pid := range k.pids {
		k.pids[pid] = false
	}
}

// system is the Kernel as package bridge uses it (kern.Kernel): the
// methods a driver calls, kept out of the Kernel's own API.
type system struct{ k *Kernel }

// System is the kernel for package bridge (Options.Kernel); tests have no
// use for it.
func (k *Kernel) System() kern.Kernel { return system{k} }

// OpenNS implements the seam: the namespace at path ("" = HostNS).
func (s system) OpenNS(path string) (kern.NS, error) {
	k := s.k
	if path == "" {
		path = HostNS
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	ns, ok := k.nss[path]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: path, Err: syscall.ENOENT}
	}
	k.nextFD++
	k.fds[k.nextFD] = ns
	return &nsHandle{k: k, ns: ns, path: path, fd: k.nextFD}, nil
}

// Self implements the seam: every driver opened is a process of its own.
func (s system) Self() int {
	k := s.k
	k.mu.Lock()
	defer k.mu.Unlock()
	k.nextPID++
	k.pids[k.nextPID] = true
	return k.nextPID
}

// StartTime implements the seam: 1 for a live process, 0 otherwise.
func (s system) StartTime(pid int) uint64 {
	k := s.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.pids[pid] {
		return 1
	}
	return 0
}

// lockState is a host lock: a one-token channel and the file's bytes.
type lockState struct {
	held chan struct{}
	data [8]byte
}

// Lock implements the seam: it waits for the lock until ctx is done, as
// the real one does.
func (s system) Lock(ctx context.Context, id nsutil.ID) (kern.LockFile, error) {
	k := s.k
	k.mu.Lock()
	st := k.locks[id]
	if st == nil {
		st = &lockState{held: make(chan struct{}, 1)}
		k.locks[id] = st
	}
	k.mu.Unlock()
	select {
	case st.held <- struct{}{}:
	default:
		select {
		case st.held <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for the lock of %x-%x: %w", id.Dev, id.Ino, ctx.Err())
		}
	}
	return &lockFile{k: k, st: st}, nil
}

// ReleaseLock implements the seam; the fake's locks take no space.
func (s system) ReleaseLock(nsutil.ID) {}

type lockFile struct {
	k      *Kernel
	st     *lockState
	closed bool
}

func (f *lockFile) ReadAt(b []byte, off int64) (int, error) {
	f.k.mu.Lock()
	defer f.k.mu.Unlock()
	if off >= int64(len(f.st.data)) {
		return 0, io.EOF
	}
	return copy(b, f.st.data[off:]), nil
}

func (f *lockFile) WriteAt(b []byte, off int64) (int, error) {
	f.k.mu.Lock()
	defer f.k.mu.Unlock()
	if off+int64(len(b)) > int64(len(f.st.data)) {
		return 0, syscall.EFBIG
	}
	return copy(f.st.data[off:], b), nil
}

func (f *lockFile) Close() error {
	if f.closed {
		return fs.ErrClosed
	}
	f.closed = true
	<-f.st.held
	return nil
}

// nsHandle is an open namespace.
type nsHandle struct {
	k    *Kernel
	ns   *netns
	path string
	fd   int
}

func (h *nsHandle) Path() string  { return h.path }
func (h *nsHandle) ID() nsutil.ID { return h.ns.id }
func (h *nsHandle) FD() int       { return h.fd }

func (h *nsHandle) Close() error {
	h.k.mu.Lock()
	defer h.k.mu.Unlock()
	delete(h.k.fds, h.fd)
	return nil
}

// NFTables gives an nftables conn whose requests go to a socket of the
// fake, and that socket, so deadlines set on it hold up the conn's
// requests as the kernel's socket does.
func (h *nsHandle) NFTables() (*nftables.Conn, *netlink.Conn, error) {
	s := h.k.newSock(h.ns, unix.NETLINK_NETFILTER)
	var fn nltest.Func = func(reqs []netlink.Message) ([]netlink.Message, error) {
		if reqs != nil {
			return nil, s.SendMessages(reqs) // the answers come one per receive
		}
		return s.Receive()
	}
	c, err := nftables.New(nftables.WithTestDial(fn), nftables.AsLasting())
	if err != nil {
		return nil, nil, err
	}
	return c, netlink.NewConn(s, nltest.PID), nil
}

func (h *nsHandle) Do(fn func(kern.Thread) error) error {
	return fn(&thread{k: h.k, ns: h.ns})
}

func (h *nsHandle) Announcer(index int, mac net.HardwareAddr, ip4, ip6 netip.Addr) (kern.Announcer, error) {
	return h.k.announcer(h.ns, index, mac, ip4, ip6)
}

// thread is code running "inside" a namespace.
type thread struct {
	k  *Kernel
	ns *netns
}

func (t *thread) Dial(family int) (*netlink.Conn, error) { return t.k.dial(t.ns, family) }

func (t *thread) Enter(ns kern.NS) error {
	h, ok := ns.(*nsHandle)
	if !ok || h.k != t.k {
		return fmt.Errorf("setns %s: %w", ns.Path(), syscall.EINVAL)
	}
	t.ns = h.ns
	return nil
}

func (t *thread) WriteSysctl(s nsutil.Sysctl) error { return t.k.writeSysctl(t.ns, s) }

func (t *thread) BindPort(proto uint8, ip netip.Addr, port uint16) (io.Closer, uint16, error) {
	return t.k.bind(t.ns, proto, ip, port)
}

// sortedLinks is the namespace's links by index.
func (ns *netns) sortedLinks() []*ifc {
	out := make([]*ifc, 0, len(ns.links))
	for _, l := range ns.links {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].index < out[j].index })
	return out
}

// name is how Dump and errors show the namespace.
func (ns *netns) name() string {
	if ns.gone {
		return ns.path + " (removed)"
	}
	return ns.path
}

// Dial opens a netlink conn of the family (unix.NETLINK_ROUTE or
// unix.NETLINK_NETFILTER) in the namespace at path ("" = HostNS), for a
// test to set up state the driver finds (a bridge someone else made) or
// to read state with the library's own packages (link.List, ...).
func (k *Kernel) Dial(path string, family int) (*netlink.Conn, error) {
	if path == "" {
		path = HostNS
	}
	k.mu.Lock()
	ns := k.nss[path]
	k.mu.Unlock()
	if ns == nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: syscall.ENOENT}
	}
	return k.dial(ns, family)
}

// FlushRuleset deletes every nf_tables table in the namespace at path
// ("" = HostNS), as `nft flush ruleset` does.
func (k *Kernel) FlushRuleset(path string) error {
	if path == "" {
		path = HostNS
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	ns := k.nss[path]
	if ns == nil {
		return &fs.PathError{Op: "open", Path: path, Err: syscall.ENOENT}
	}
	ns.nft.Flush()
	ns.notify(netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_DELTABLE))
	return nil
}
