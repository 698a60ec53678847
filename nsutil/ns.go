// Package nsutil opens network namespaces and works inside them without
// moving the caller's thread: netlink sockets are dialled into a namespace,
// and code that needs a thread inside one runs on a throwaway goroutine.
//
// On its own it gives: Open, Current and Create (a named namespace under
// a directory such as DefaultNetNSDir) and Delete; an NS's Dial (a
// netlink socket inside it), Do (a function on a thread inside it),
// ReadSysctl and WriteSysctls, and ID (its identity, for comparing
// handles); ParseSysctl and the process's own ReadSysctl and WriteSysctl.
//
// An *NS is safe for concurrent use. Its zero value is not usable; get one
// from Open, Current or Create.
package nsutil

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ErrNotNetNS is returned by Open for a path that is not a network namespace.
var ErrNotNetNS = errors.New("not a network namespace")

// NS is an open handle on a network namespace. It keeps the namespace alive
// until Close.
type NS struct {
	f    *os.File
	path string
}

// Open opens the network namespace at path (e.g. /run/netns/c1 or
// /proc/PID/ns/net). It fails with ErrNotNetNS when path is something else.
func Open(path string) (*NS, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	t, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil || t != unix.CLONE_NEWNET {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, ErrNotNetNS)
	}
	return &NS{f: f, path: path}, nil
}

// Current opens the network namespace of the calling thread.
func Current() (*NS, error) {
	return Open("/proc/thread-self/ns/net")
}

// Path is the path the namespace was opened from.
func (ns *NS) Path() string { return ns.path }

// FD is the namespace's file descriptor, valid until Close.
func (ns *NS) FD() int { return int(ns.f.Fd()) }

// Close releases the handle. The namespace lives on while other references
// to it exist.
func (ns *NS) Close() error { return ns.f.Close() }

// ID identifies a namespace: two handles with equal IDs are the same
// namespace. The zero ID matches no namespace.
type ID struct{ Dev, Ino uint64 }

// ID returns the namespace's identity (the device and inode of its nsfs
// file).
func (ns *NS) ID() ID {
	var st unix.Stat_t
	if unix.Fstat(ns.FD(), &st) != nil {
		return ID{}
	}
	return ID{st.Dev, st.Ino}
}

// Dial opens a netlink socket of the given family (unix.NETLINK_ROUTE,
// unix.NETLINK_NETFILTER, ...) inside the namespace.
func (ns *NS) Dial(family int) (*netlink.Conn, error) {
	return netlink.Dial(family, &netlink.Config{NetNS: ns.FD()})
}

// Do runs fn on a new goroutine whose thread has entered the namespace, and
// returns fn's error. Sockets and files that fn opens stay bound to the
// namespace after Do returns. The caller's thread never changes namespace; if
// the helper thread cannot return to its own namespace it is discarded.
// Within fn, Enter moves the thread on to another namespace.
func (ns *NS) Do(fn func() error) error {
	return onThread(ns.Enter, fn)
}

// Enter moves the calling thread into ns. Call it only inside a Do callback,
// whose thread Do takes home afterwards: anywhere else it would leave a Go
// thread in the wrong namespace.
func (ns *NS) Enter() error {
	if err := unix.Setns(ns.FD(), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns %s: %w", ns.path, err)
	}
	return nil
}

// onThread runs enter and then fn on a fresh locked thread, and returns the
// thread to its namespace afterwards. A thread that cannot return stays
// locked, so the runtime discards it with the goroutine.
func onThread(enter, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer unix.Close(home)
		if err := enter(); err != nil {
			if unix.Setns(home, unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
			errc <- err
			return
		}
		ferr := fn()
		if err := unix.Setns(home, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("setns back: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Dup returns a second handle on the same namespace, closed independently.
func (ns *NS) Dup() (*NS, error) {
	fd, err := unix.FcntlInt(ns.f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup %s: %w", ns.path, err)
	}
	return &NS{f: os.NewFile(uintptr(fd), ns.path), path: ns.path}, nil
}
