package bridgetest

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"github.com/nlbridge/bridge/internal/kern"
)

// portKey is a bound port.
type portKey struct {
	proto uint8
	ip    netip.Addr
	port  uint16
}

func (a portKey) clashes(b portKey) bool {
	return a.proto == b.proto && a.port == b.port && a.ip.Is4() == b.ip.Is4() &&
		(a.ip == b.ip || a.ip.IsUnspecified() || b.ip.IsUnspecified())
}

// bind binds a port-holding socket (IPv6 ones are v6-only).
func (k *Kernel) bind(ns *netns, proto uint8, ip netip.Addr, port uint16) (io.Closer, uint16, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if port == 0 {
		for p := uint16(32768); p < 61000; p++ {
			if !ns.bound(portKey{proto, ip, p}) {
				port = p
				break
			}
		}
	}
	key := portKey{proto, ip, port}
	if port == 0 || ns.bound(key) {
		return nil, 0, fmt.Errorf("%w: proto %d %s", kern.ErrPortTaken, proto, netip.AddrPortFrom(ip, port))
	}
	ns.ports[key] = true
	return &hold{k: k, ns: ns, key: key}, port, nil
}

func (ns *netns) bound(key portKey) bool {
	for o := range ns.ports {
		if o.clashes(key) {
			return true
		}
	}
	return false
}

// hold is a bound socket.
type hold struct {
	k    *Kernel
	ns   *netns
	key  portKey
	once sync.Once
}

func (h *hold) Close() error {
	h.once.Do(func() {
		h.k.mu.Lock()
		delete(h.ns.ports, h.key)
		h.k.mu.Unlock()
	})
	return nil
}

// HoldPort binds a port in the namespace at path as another process
// would (proto unix.IPPROTO_TCP, ...; an unspecified address is every
// address of its family), until the returned func is called.
func (k *Kernel) HoldPort(path string, proto uint8, ap netip.AddrPort) (release func(), err error) {
	if path == "" {
		path = HostNS
	}
	k.mu.Lock()
	ns := k.nss[path]
	k.mu.Unlock()
	if ns == nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: syscall.ENOENT}
	}
	h, _, err := k.bind(ns, proto, ap.Addr(), ap.Port())
	if err != nil {
		return nil, err
	}
	return func() { h.Close() }, nil
}
