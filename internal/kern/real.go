package kern

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/disco"
	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

// Real is the running kernel. Its zero value keeps lock files in
// /run/nlbridge.
type Real struct {
	LockDir string // "" = /run/nlbridge
}

// DefaultLockDir holds one lock file per host namespace.
const DefaultLockDir = "/run/nlbridge"

// OpenNS opens a namespace with nsutil.
func (Real) OpenNS(path string) (NS, error) {
	var ns *nsutil.NS
	var err error
	if path == "" {
		ns, err = nsutil.Current()
	} else {
		ns, err = nsutil.Open(path)
	}
	if err != nil {
		return nil, err
	}
	return realNS{ns}, nil
}

// LockPath is the file of the lock of namespace id.
func (r Real) LockPath(id nsutil.ID) string {
	dir := r.LockDir
	if dir == "" {
		dir = DefaultLockDir
	}
	return fmt.Sprintf("%s/%x-%x.lock", dir, id.Dev, id.Ino)
}

// Lock takes an flock on the namespace's file, created if needed. The
// first try does not block (one syscall when nobody holds the lock); while
// another process holds it, Lock tries again after 1 ms, doubling up to
// lockPollMax, until ctx is done. A ctx that is never done (Background)
// waits in the kernel instead.
func (r Real) Lock(ctx context.Context, id nsutil.ID) (LockFile, error) {
	path := r.LockPath(id)
	dir := path[:bytes.LastIndexByte([]byte(path), '/')]
	for {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		if err := flockCtx(ctx, f); err != nil {
			f.Close()
			return nil, err
		}
		// A file removed (see ReleaseLock) between open and flock is not
		// the lock any more: start again on the current one.
		var held, cur unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(path, &cur) == nil && held.Ino == cur.Ino {
			return f, nil
		}
		f.Close()
	}
}

// lockPollMin and lockPollMax bound the pause between tries of a lock
// that another process holds: a waiter takes the lock at most
// lockPollMax after the holder lets go, and a long wait costs about 60
// tries a second.
const (
	lockPollMin = time.Millisecond
	lockPollMax = 16 * time.Millisecond
)

// flockCtx takes an exclusive flock on f, waiting until ctx is done.
func flockCtx(ctx context.Context, f *os.File) error {
	if ctx.Done() == nil {
		return flock(f, unix.LOCK_EX)
	}
	var t *time.Timer
	for pause := lockPollMin; ; pause = min(2*pause, lockPollMax) {
		err := flock(f, unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EWOULDBLOCK {
			return err
		}
		if t == nil {
			t = time.NewTimer(pause)
			defer t.Stop()
		} else {
			t.Reset(pause)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for lock %s: %w", f.Name(), ctx.Err())
		case <-t.C:
		}
	}
}

// ReleaseLock removes the lock file if no process holds the lock now. Safe
// against racing lockers: they check, after their flock, that they hold
// the file at the path.
func (r Real) ReleaseLock(id nsutil.ID) {
	path := r.LockPath(id)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer f.Close()
	if flock(f, unix.LOCK_EX|unix.LOCK_NB) == nil {
		os.Remove(path)
	}
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}

// Self is os.Getpid.
func (Real) Self() int { return os.Getpid() }

// StartTime is field 22 of /proc/PID/stat.
func (Real) StartTime(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(string(f[19]), 10, 64)
	return v
}

// realNS is an nsutil.NS.
type realNS struct{ ns *nsutil.NS }

func (n realNS) Path() string  { return n.ns.Path() }
func (n realNS) ID() nsutil.ID { return n.ns.ID() }
func (n realNS) FD() int       { return n.ns.FD() }
func (n realNS) Close() error  { return n.ns.Close() }

func (n realNS) NFTables() (c *nftables.Conn, sock *netlink.Conn, err error) {
	c, err = nftables.New(nftables.WithNetNSFd(n.ns.FD()), nftables.AsLasting(),
		nftables.WithSockOptions(func(nc *netlink.Conn) error { sock = nc; return nil }))
	return c, sock, err
}

func (n realNS) Do(fn func(Thread) error) error {
	return n.ns.Do(func() error { return fn(realThread{}) })
}

func (n realNS) Announcer(index int, mac net.HardwareAddr, ip4, ip6 netip.Addr) (Announcer, error) {
	return disco.Open(n.ns, index, mac, ip4, ip6)
}

// realThread acts on the calling thread's namespace.
type realThread struct{}

func (realThread) Dial(family int) (*netlink.Conn, error) {
	c, err := netlink.Dial(family, nil)
	if err != nil || family != unix.NETLINK_ROUTE {
		return c, err
	}
	if err := c.SetOption(netlink.ExtendedAcknowledge, true); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (realThread) WriteSysctl(s nsutil.Sysctl) error { return nsutil.WriteSysctl(s) }

func (realThread) Enter(ns NS) error {
	r, ok := ns.(realNS)
	if !ok {
		return fmt.Errorf("enter %s: not a namespace of the running kernel", ns.Path())
	}
	return r.ns.Enter()
}

func (realThread) BindPort(proto uint8, ip netip.Addr, port uint16) (io.Closer, uint16, error) {
	f, port, err := bindPort(proto, ip, port)
	if f == nil {
		return nil, port, err // no typed nil in the interface
	}
	return f, port, err
}

// bindPort binds a socket of the protocol to ip:port (0 = ephemeral). A
// protocol the kernel lacks (no SCTP module) cannot be held: a fixed port
// is then published without a socket.
func bindPort(proto uint8, ip netip.Addr, port uint16) (*os.File, uint16, error) {
	domain, typ := unix.AF_INET, unix.SOCK_STREAM
	if ip.Is6() {
		domain = unix.AF_INET6
	}
	if proto == unix.IPPROTO_UDP {
		typ = unix.SOCK_DGRAM
	}
	name := protoName(proto)
	fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		if port != 0 && (err == unix.EPROTONOSUPPORT || err == unix.ESOCKTNOSUPPORT) {
			return nil, port, nil
		}
		return nil, 0, fmt.Errorf("%s socket: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), "hold")
	var sa unix.Sockaddr
	if ip.Is6() {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			f.Close()
			return nil, 0, err
		}
		sa = &unix.SockaddrInet6{Addr: ip.As16(), Port: int(port)}
	} else {
		sa = &unix.SockaddrInet4{Addr: ip.As4(), Port: int(port)}
	}
	if err := unix.Bind(fd, sa); err != nil {
		f.Close()
		if err == unix.EADDRINUSE {
			return nil, 0, fmt.Errorf("%w: %s %s", ErrPortTaken, name, netip.AddrPortFrom(ip, port))
		}
		return nil, 0, fmt.Errorf("bind %s %s: %w", name, netip.AddrPortFrom(ip, port), err)
	}
	if port == 0 {
		got, err := unix.Getsockname(fd)
		if err != nil {
			f.Close()
			return nil, 0, err
		}
		switch a := got.(type) {
		case *unix.SockaddrInet4:
			port = uint16(a.Port)
		case *unix.SockaddrInet6:
			port = uint16(a.Port)
		}
	}
	return f, port, nil
}

func protoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_SCTP:
		return "sctp"
	}
	return fmt.Sprintf("proto(%d)", p)
}
