// Package hostport decides which host port a published mapping takes:
// the candidate ports of a mapping, which claims clash, and holding the
// first candidate that both binds and is not claimed by another endpoint.
package hostport

import (
	"fmt"
	"io"
	"net/netip"

	"github.com/nlbridge/bridge/internal/kern"
)

// Key is a claimed host port. An unspecified IP claims the port on every
// address of its family.
type Key struct {
	Proto uint8 // IPPROTO_*
	IP    netip.Addr
	Port  uint16
}

// Clashes reports whether two claims cannot both hold: same protocol,
// port and family, and the same address or an unspecified one.
func (k Key) Clashes(o Key) bool {
	return k.Proto == o.Proto && k.Port == o.Port && k.IP.Is4() == o.IP.Is4() &&
		(k.IP == o.IP || k.IP.IsUnspecified() || o.IP.IsUnspecified())
}

// Candidates lists the ports a mapping of port (0 = any) to end (0 = just
// port; else the range port-end) may take, in the order to try them.
// prefer, the port chosen for the mapping's other address family (0 =
// none), comes first when the mapping allows it. 0 stands for an
// ephemeral port.
func Candidates(port, end, prefer uint16) []uint16 {
	switch {
	case end != 0:
		var c []uint16
		if prefer >= port && prefer <= end {
			c = append(c, prefer)
		}
		for p := int(port); p <= int(end); p++ {
			if uint16(p) != prefer {
				c = append(c, uint16(p))
			}
		}
		return c
	case port != 0:
		return []uint16{port}
	case prefer != 0:
		return []uint16{prefer, 0}
	}
	return []uint16{0}
}

// Hold tries the candidates in order: bind (which may return no socket,
// and for port 0 returns the port it got), then claim; it returns the
// first port for which both succeed, with its socket. If none does, the
// error is the last failure, wrapping kern.ErrPortTaken when the port was
// taken.
func Hold(cands []uint16, bind func(port uint16) (io.Closer, uint16, error), claim func(port uint16) bool) (io.Closer, uint16, error) {
	var last error = kern.ErrPortTaken
	for _, port := range cands {
		h, got, err := bind(port)
		if err != nil {
			last = err
			continue
		}
		if claim(got) {
			return h, got, nil
		}
		if h != nil {
			h.Close()
		}
		last = fmt.Errorf("%w: published by another endpoint", kern.ErrPortTaken)
	}
	return nil, 0, last
}
