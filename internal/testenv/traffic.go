package testenv

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Listen opens a TCP server on addr:port inside ns (see Serve) and closes
// it when the test ends.
func Listen(t testing.TB, ns *nsutil.NS, ap netip.AddrPort) <-chan netip.AddrPort {
	t.Helper()
	peers, stop, err := Serve(ns, ap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return peers
}

// Serve opens a TCP listener on addr:port inside ns that answers every
// connection with "hello from <addr>\n". It sends the remote address of
// each connection it served on the channel; stop closes it.
func Serve(ns *nsutil.NS, ap netip.AddrPort) (peers <-chan netip.AddrPort, stop func(), err error) {
	var ln net.Listener
	err = ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", ap.String())
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("listen %s in %s: %w", ap, ns.Path(), err)
	}
	ch := make(chan netip.AddrPort, 64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case ch <- netip.MustParseAddrPort(c.RemoteAddr().String()):
			default:
			}
			fmt.Fprintf(c, "hello from %s\n", ap.Addr())
			c.Close()
		}
	}()
	return ch, func() { ln.Close() }, nil
}

// Dial connects over TCP from inside ns to ap and returns the greeting
// line, or an error (e.g. a timeout when the flow is blocked).
func Dial(ns *nsutil.NS, ap netip.AddrPort, timeout time.Duration) (string, error) {
	return Exchange(ns, ap, "", timeout)
}

// Exchange is Dial that sends msg first (e.g. an HTTP request) and returns
// the first line of the answer.
func Exchange(ns *nsutil.NS, ap netip.AddrPort, msg string, timeout time.Duration) (string, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", ap.String(), timeout)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if msg != "" {
		if _, err := io.WriteString(c, msg); err != nil {
			return "", err
		}
	}
	return bufio.NewReader(c).ReadString('\n')
}

// Ping sends one ICMP or ICMPv6 echo request from inside ns to dst and
// waits for the reply.
func Ping(ns *nsutil.NS, dst netip.Addr, timeout time.Duration) error {
	network, proto, typ := "ip4:icmp", 1, icmp.Type(ipv4.ICMPTypeEcho)
	if dst.Is6() {
		network, proto, typ = "ip6:ipv6-icmp", 58, ipv6.ICMPTypeEchoRequest
	}
	var pc *icmp.PacketConn
	err := ns.Do(func() (err error) {
		pc, err = icmp.ListenPacket(network, "")
		return err
	})
	if err != nil {
		return err
	}
	defer pc.Close()
	id := os.Getpid() & 0xffff
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: 1, Data: []byte("nlbridge")}}
	b, _ := msg.Marshal(nil)
	if _, err := pc.WriteTo(b, &net.IPAddr{IP: dst.AsSlice(), Zone: dst.Zone()}); err != nil {
		return err
	}
	pc.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("ping %s: %w", dst, err)
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && (m.Type == ipv4.ICMPTypeEchoReply || m.Type == ipv6.ICMPTypeEchoReply) &&
			e.Seq == 1 && string(e.Data) == "nlbridge" {
			if a, ok := netip.AddrFromSlice(from.(*net.IPAddr).IP); ok && a.Unmap() == dst.WithZone("") {
				return nil
			}
		}
	}
}

// ServeUDP answers every datagram to ap inside ns with "echo <payload>"
// until the test ends.
func ServeUDP(t testing.TB, ns *nsutil.NS, ap netip.AddrPort) {
	t.Helper()
	var pc net.PacketConn
	err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", ap.String())
		return err
	})
	if err != nil {
		t.Fatalf("listen udp %s in %s: %v", ap, ns.Path(), err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo "), buf[:n]...), from)
		}
	}()
}

// DialUDP sends msg from inside ns to ap and returns the answer.
func DialUDP(ns *nsutil.NS, ap netip.AddrPort, msg string, timeout time.Duration) (string, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = net.Dial("udp", ap.String())
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}
