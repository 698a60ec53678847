package testenv

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

// Frame is one captured Ethernet frame.
type Frame struct {
	At   time.Time
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
	if err != nil {
		t.Fatalf("capture on %s: %v", ifname, err)
	}
	go func() {
		defer close(c.done)
		buf := make([]byte, 2048)
		for {
			n, _, err := c.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			c.mu.Lock()
			c.frames = append(c.frames, Frame{At: time.Now(), Data: append([]byte(nil), buf[:n]...)})
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
