// Package kern is the seam between the bridge driver and the operating
// system: namespaces, netlink conns, sysctls, port-holding sockets,
// announcement sockets, the host lock and process liveness. Everything
// else the driver does is netlink messages on the conns it gets here.
//
// Real is the running kernel. Package bridgetest implements Kernel in
// memory, answering the same netlink messages, so that the driver's
// production code runs unchanged on it.
package kern

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/nsutil"
)

// Kernel is what a driver works on. Implementations are safe for
// concurrent use.
type Kernel interface {
	// OpenNS opens the network namespace at path; "" is the namespace
	// of the calling thread. A path that is not a namespace fails with
	// an error wrapping nsutil.ErrNotNetNS or os.ErrNotExist.
	OpenNS(path string) (NS, error)

	// Lock waits for and takes the exclusive lock on the records of the
	// namespace with that identity, among all processes. Closing the
	// LockFile releases it; so does the death of the holder. A wait that
	// ctx cuts short fails with an error wrapping ctx.Err() and holds
	// nothing.
	Lock(ctx context.Context, id nsutil.ID) (LockFile, error)
	// ReleaseLock frees what the lock of id keeps (its file) if nobody
	// holds it.
	ReleaseLock(id nsutil.ID)

	// Self is the PID of this process (as the driver's records name it).
	Self() int
	// StartTime is when the process pid started, in clock ticks after
	// boot; 0 if there is no such process.
	StartTime(pid int) uint64
}

// LockFile is a held lock with a few bytes of content (the change token).
type LockFile interface {
	io.ReaderAt
	io.WriterAt
	io.Closer // releases the lock
}

// NS is an open handle on a network namespace.
type NS interface {
	Path() string // as opened
	// ID identifies the namespace: equal IDs are the same namespace.
	ID() nsutil.ID
	// FD is the value to send in IFLA_NET_NS_FD for this namespace,
	// valid until Close.
	FD() int
	// NFTables opens a lasting nftables conn inside the namespace, and
	// sock, the socket it sends on: deadlines set on sock reach c's
	// requests, and sock takes requests of its own (see nat.New).
	NFTables() (c *nftables.Conn, sock *netlink.Conn, err error)
	// Do runs fn on a thread inside the namespace (see nsutil.NS.Do).
	Do(fn func(Thread) error) error
	// Announcer opens the sockets that announce ip4 and ip6 (either may
	// be zero) at mac on interface index of the namespace.
	Announcer(index int, mac net.HardwareAddr, ip4, ip6 netip.Addr) (Announcer, error)
	Close() error
}

// Thread is what code running on a thread inside a namespace (see
// NS.Do) can do there.
type Thread interface {
	// Dial opens a netlink socket of the family (unix.NETLINK_ROUTE or
	// unix.NETLINK_NETFILTER) in the thread's namespace; a NETLINK_ROUTE
	// one has extended acks, so refusals carry the kernel's reason. It is
	// the driver's one way to a netlink socket in a namespace.
	Dial(family int) (*netlink.Conn, error)
	// WriteSysctl writes a net.* parameter of the thread's namespace.
	// A key that does not exist there fails with os.ErrNotExist.
	WriteSysctl(s nsutil.Sysctl) error
	// Enter moves the thread to ns.
	Enter(ns NS) error
	// BindPort binds a socket of proto (IPPROTO_*) to ip:port (0 = an
	// ephemeral port) in the thread's namespace and returns it with the
	// port it got. A taken port fails with ErrPortTaken. A protocol the
	// kernel lacks gives no socket (nil) and no error for a fixed port.
	BindPort(proto uint8, ip netip.Addr, port uint16) (io.Closer, uint16, error)
}

// Announcer sends gratuitous ARPs and unsolicited NAs for one interface
// (see disco.Announcer).
type Announcer interface {
	// Send checks the interface's MAC through rt (a NETLINK_ROUTE conn in
	// its namespace; nil = the Announcer's own) and sends once.
	Send(rt *netlink.Conn) error
	Close() error
}

// ErrPortTaken is the error of BindPort for a port in use.
var ErrPortTaken = errors.New("host port in use")
