package testenv

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

// Frame is one captured Ethernet frame.
type Frame struct {
	At   time.Time // when the kernel received it (SO_TIMESTAMPNS)
	Data []byte
}

// Capture records every frame seen on one interface.
type Capture struct {
	conn   *packet.Conn
	mu     sync.Mutex
	frames []Frame
	done   chan struct{}
}

// Capture starts recording all frames on interface ifname in ns; it stops
// when the test ends or on Stop.
func StartCapture(t testing.TB, ns *nsutil.NS, ifname string) *Capture {
	t.Helper()
	c := &Capture{done: make(chan struct{})}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		c.conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	})
	var rc syscall.RawConn
	if err == nil {
		rc, err = c.conn.SyscallConn()
	}
	if err == nil {
		cerr := rc.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
		})
		err = errors.Join(cerr, err)
	}
	if err != nil {
		t.Fatalf("capture on %s: %v", ifname, err)
	}
	go func() {
		defer close(c.done)
		buf, oob := make([]byte, 2048), make([]byte, 128)
		for {
			var n, oobn int
			var rerr error
			err := rc.Read(func(fd uintptr) bool {
				n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
				return rerr != unix.EAGAIN
			})
			if err != nil || rerr != nil {
				return
			}
			c.mu.Lock()
			c.frames = append(c.frames, Frame{At: stamp(oob[:oobn]), Data: append([]byte(nil), buf[:n]...)})
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Stop() })
	return c
}

// Frames returns what was captured so far.
func (c *Capture) Frames() []Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Frame(nil), c.frames...)
}

// Stop ends the capture and returns every frame seen.
func (c *Capture) Stop() []Frame {
	c.conn.Close()
	<-c.done
	return c.Frames()
}

// stamp is the kernel's receive time from a recvmsg's control data, or now
// if it carries none.
func stamp(oob []byte) time.Time {
	msgs, _ := unix.ParseSocketControlMessage(oob)
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
			sec, nsec := binary.NativeEndian.Uint64(m.Data), binary.NativeEndian.Uint64(m.Data[8:]) // struct timespec, 64-bit
			return time.Unix(int64(sec), int64(nsec))
		}
	}
	return time.Now()
}
