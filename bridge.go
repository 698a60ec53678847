package bridge

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/internal/kern"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/nat"
	"golang.org/x/sys/unix"
)

// Options configure a Driver. The zero value manages bridges in the
// caller's network namespace.
type Options struct {
	// NetNS is the path of the namespace that holds the bridges (and the
	// host ends of the veth pairs); "" means the namespace of the thread
	// that calls Open.
	NetNS string

	// Table is the name of the nftables tables (families inet and bridge)
	// the firewall owns; "" = "nlbridge". Open adopts existing tables of
	// that name, repairing what differs from what it would create.
	Table string
	// NoFirewall leaves nftables and conntrack alone: no NAT, published
	// ports, isolation or gateway modes.
	NoFirewall bool

	// Logger receives errors of background work (reclaimer, firewall
	// repair) and records it ignores; nil = slog.Default().
	Logger *slog.Logger

	// NoPortHolds: published host ports are claimed through the records
	// only (no endpoint takes another's), never held by bound sockets:
	// neither those of endpoints read back from the kernel nor new ones,
	// so a host process holding a port is no conflict. For short-lived
	// processes such as a CNI plugin, whose sockets would close at exit
	// anyway; re-binding costs a socket per recovered port.
	NoPortHolds bool

	// Kernel is the kernel the driver works on; nil = the running
	// kernel. bridgetest.New gives an in-memory one, for tests without
	// root or namespaces.
	Kernel Kernel
}

// Kernel is a kernel a Driver can work on instead of the running one:
// its namespaces, their netlink conns, and the few operations that are
// not netlink messages (sysctls, sockets, the host lock, process
// liveness). Only this module implements it (*bridgetest.Kernel).
type Kernel interface {
	// System is the kernel's implementation, for this package.
	System() kern.Kernel
}

// Driver manages bridge networks in one network namespace. It is safe for
// concurrent use. Close it when done; networks and endpoints stay in the
// kernel until deleted.
type Driver struct {
	noHolds bool // Options.NoPortHolds

	k     kern.Kernel
	host  kern.NS
	lock  *hostLock // claims among processes on host
	self  owner     // this process, in records of objects being built
	log   *slog.Logger
	conns chan *netlink.Conn // idle NETLINK_ROUTE conns in host
	fw    *nat.Firewall      // nil with Options.NoFirewall
	ct    *netlink.Conn      // NETLINK_NETFILTER conn in host, for conntrack; guarded by ctMu
	ctMu  sync.Mutex

	portsMu sync.Mutex
	ports   map[portKey]bool // published host ports
	// published: the host ports in the firewall, as last read (see
	// withPublished); nil = unknown
	published map[portKey]bool

	ctx     context.Context // cancelled by Close: stops background work
	cancel  context.CancelFunc
	wg      sync.WaitGroup // background announcements and the reclaimer
	reclaim chan struct{}  // kicks the reclaimer

	mu       sync.Mutex
	networks map[string]*Network
	closed   bool
}

// maxIdleConns bounds the pool of idle netlink sockets in the host netns.
const maxIdleConns = 8

// Open opens a driver for the namespace in opts.
func Open(ctx context.Context, opts Options) (*Driver, error) {
	const op = "open driver"
	if err := ctx.Err(); err != nil {
		return nil, kernel(op, err)
	}
	var k kern.Kernel = kern.Real{}
	if opts.Kernel != nil {
		k = opts.Kernel.System()
	}
	ns, err := k.OpenNS(opts.NetNS)
	if err != nil {
		return nil, &Error{Op: op, Field: "NetNS", Value: opts.NetNS, Kind: ErrInvalid, Err: err}
	}
	d := &Driver{k: k, host: ns, conns: make(chan *netlink.Conn, maxIdleConns), networks: map[string]*Network{},
		ports: map[portKey]bool{}, reclaim: make(chan struct{}, 1),
		lock: newHostLock(k, ns.ID()), self: selfOwner(k), log: opts.Logger, noHolds: opts.NoPortHolds}
	if d.log == nil {
		d.log = slog.Default()
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	c, err := d.conn()
	if err != nil {
		ns.Close()
		return nil, kernel(op, err)
	}
	d.release(c, nil)
	if err := d.reclaimNow(ctx); err != nil { // what a crashed driver had retired
		d.Close()
		return nil, ctxError(ctx, op, err)
	}
	d.wg.Go(d.reclaimLoop)
	if !opts.NoFirewall {
		if d.fw, err = nat.New(opts.Table, ns.NFTables); err == nil {
			d.ct, err = dial(ns, unix.NETLINK_NETFILTER)
		}
		if err != nil {
			d.Close()
			return nil, kernel(op, err)
		}
	}
	// The networks (not yet their endpoints), and the firewall checked
	// against them. A driver's first lock always reads the records
	// (refresh), which loads the networks.
	err = d.locked(ctx, nil, func(c *netlink.Conn) (bool, error) { return d.checkFirewall(ctx, c) })
	if err != nil {
		d.Close()
		return nil, ctxError(ctx, op, err)
	}
	if d.fw != nil {
		d.wg.Go(d.watchFirewall)
	}
	return d, nil
}

// Close stops pending announcements, deletes the devices of detached
// endpoints, and releases the driver's sockets (those holding published
// host ports too: the next driver holds them again) and namespace handle; no
// goroutine of the driver outlives it. Networks and attached endpoints are
// left in the kernel.
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
	for _, n := range d.networkList() {
		n.closeHolds()
	}
	d.lock.release()
	if d.fw != nil {
		d.fw.Close()
	}
	if d.ct != nil {
		d.ct.Close()
	}
	for {
		select {
		case c := <-d.conns:
			c.Close()
		default:
			return asError("close driver", d.host.Close())
		}
	}
}

// Network returns the network with that bridge name, if this driver made
// or adopted it.
func (d *Driver) Network(name string) (*Network, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.networks[name]
	return n, ok
}

// conn takes an idle netlink socket in the host namespace, or dials one.
func (d *Driver) conn() (*netlink.Conn, error) {
	select {
	case c := <-d.conns:
		return c, nil
	default:
	}
	return dial(d.host, unix.NETLINK_ROUTE)
}

// release returns a conn to the pool after use; err is the error of its
// last use. A conn whose socket failed (rather than the kernel refusing a
// request) is closed, as answers may still be queued on it.
func (d *Driver) release(c *netlink.Conn, err error) {
	var oe *netlink.OpError
	if errors.As(err, &oe) && oe.Sequence == 0 {
		c.Close()
		return
	}
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		c.Close()
		return
	}
	select {
	case d.conns <- c:
	default:
		c.Close()
	}
}

// flushConntrack deletes the conntrack entries of the addresses (inbound
// ones only unless outbound), if the firewall is on, with ctx's deadline
// on the conntrack conn. A conn whose socket failed (answers may still be
// queued on it, e.g. after a deadline) is replaced by a new one.
func (d *Driver) flushConntrack(ctx context.Context, outbound bool, addrs ...netip.Addr) error {
	if d.ct == nil || len(addrs) == 0 {
		return nil
	}
	d.ctMu.Lock()
	defer d.ctMu.Unlock()
	stop := watch(ctx, d.ct)
	err := nat.FlushConntrack(d.ct, outbound, addrs...)
	stop()
	var oe *netlink.OpError
	if errors.As(err, &oe) && oe.Sequence == 0 {
		if c, derr := dial(d.host, unix.NETLINK_NETFILTER); derr == nil {
			d.ct.Close()
			d.ct = c
		}
	}
	return err
}

// withConn runs fn with a host conn that has ctx's deadline (see watch).
func (d *Driver) withConn(ctx context.Context, fn func(c *netlink.Conn) error) error {
	c, err := d.conn()
	if err != nil {
		return err
	}
	stop := watch(ctx, c)
	err = fn(c)
	stop()
	d.release(c, err)
	return err
}

// undo runs fn, a step undoing part of a failed operation, with a host
// conn without deadline: the operation's own conn may have timed out with
// an answer still queued on it.
func (d *Driver) undo(fn func(c *netlink.Conn) error) error {
	return d.withConn(context.Background(), fn)
}

// undoLink deletes a link that a failed operation op made (see undo). The
// operation returns its own error, so a failure here is logged; a link
// gone already (with its sandbox) is none.
func (d *Driver) undoLink(op string, index uint32) {
	err := d.undo(func(c *netlink.Conn) error { return link.Delete(c, index) })
	if err != nil && !errors.Is(err, unix.ENODEV) {
		d.log.Error("nlbridge: undoing a failed operation", "op", op, "ifindex", index, "err", err)
	}
}

// dial opens a netlink socket of the family in ns, on a thread there
// (see kern.Thread.Dial). It is how the driver gets every netlink conn,
// except the nftables one (kern.NS.NFTables) and, on a thread that is in
// the namespace already, t.Dial itself.
func dial(ns kern.NS, family int) (c *netlink.Conn, err error) {
	err = ns.Do(func(t kern.Thread) error {
		c, err = t.Dial(family)
		return err
	})
	return c, err
}
