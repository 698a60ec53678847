package testenv

import (
	"net/netip"
	"testing"
	"time"

	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

// HaveSCTP reports whether the kernel offers SCTP sockets (the module may
// be missing, and tests never load modules).
func HaveSCTP() bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
	if err == nil {
		unix.Close(fd)
	}
	return err == nil
}

func sctpAddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

func sctpSocket(ap netip.AddrPort) (int, error) {
	domain := unix.AF_INET
	if ap.Addr().Is6() {
		domain = unix.AF_INET6
	}
	return unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
}

// ServeSCTP accepts SCTP associations on ap inside ns and answers each with
// "hello", until the test ends.
func ServeSCTP(t testing.TB, ns *nsutil.NS, ap netip.AddrPort) {
	t.Helper()
	var fd int
	err := ns.Do(func() (err error) {
		if fd, err = sctpSocket(ap); err != nil {
			return err
		}
		if err = unix.Bind(fd, sctpAddr(ap)); err != nil {
			return err
		}
		return unix.Listen(fd, 8)
	})
	if err != nil {
		t.Fatalf("sctp listen %s: %v", ap, err)
	}
	t.Cleanup(func() { unix.Shutdown(fd, unix.SHUT_RDWR); unix.Close(fd) })
	go func() {
		for {
			c, _, err := unix.Accept(fd)
			if err != nil {
				return
			}
			unix.Write(c, []byte("hello"))
			unix.Close(c)
		}
	}()
}

// DialSCTP connects from ns to ap and returns what the server sent.
func DialSCTP(ns *nsutil.NS, ap netip.AddrPort, timeout time.Duration) (string, error) {
	var fd int
	err := ns.Do(func() (err error) {
		fd, err = sctpSocket(ap)
		return err
	})
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := unix.Connect(fd, sctpAddr(ap)); err != nil {
		return "", err
	}
	buf := make([]byte, 64)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
