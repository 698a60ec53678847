package hostport

import (
	"errors"
	"io"
	"net/netip"
	"slices"
	"testing"

	"github.com/nlbridge/bridge/internal/kern"
)

func TestClashes(t *testing.T) {
	any4, any6 := netip.IPv4Unspecified(), netip.IPv6Unspecified()
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	for _, tc := range []struct {
		x, y Key
		want bool
	}{
		{Key{6, a, 80}, Key{6, a, 80}, true},
		{Key{6, any4, 80}, Key{6, a, 80}, true},
		{Key{6, a, 80}, Key{6, b, 80}, false},
		{Key{6, a, 80}, Key{17, a, 80}, false},
		{Key{6, a, 80}, Key{6, a, 81}, false},
		{Key{6, any4, 80}, Key{6, any6, 80}, false}, // v6-only sockets
	} {
		if got := tc.x.Clashes(tc.y); got != tc.want {
			t.Errorf("%v clashes %v = %v", tc.x, tc.y, got)
		}
	}
}

func TestCandidates(t *testing.T) {
	for _, tc := range []struct {
		port, end, prefer uint16
		want              []uint16
	}{
		{80, 0, 0, []uint16{80}},
		{80, 0, 81, []uint16{80}},
		{0, 0, 0, []uint16{0}},
		{0, 0, 40000, []uint16{40000, 0}},
		{9000, 9002, 0, []uint16{9000, 9001, 9002}},
		{9000, 9002, 9001, []uint16{9001, 9000, 9002}},
		{9000, 9002, 8000, []uint16{9000, 9001, 9002}},
	} {
		if got := Candidates(tc.port, tc.end, tc.prefer); !slices.Equal(got, tc.want) {
			t.Errorf("Candidates(%d, %d, %d) = %v, want %v", tc.port, tc.end, tc.prefer, got, tc.want)
		}
	}
}

type closer struct{ closed *int }

func (c closer) Close() error { *c.closed++; return nil }

// Hold takes the first candidate that binds and is unclaimed, and closes
// the sockets of those it passes over.
func TestHold(t *testing.T) {
	closed := 0
	bind := func(p uint16) (io.Closer, uint16, error) {
		if p == 1 {
			return nil, 0, kern.ErrPortTaken
		}
		if p == 0 {
			p = 50000
		}
		return closer{&closed}, p, nil
	}
	h, got, err := Hold([]uint16{1, 2, 3}, bind, func(p uint16) bool { return p == 3 })
	if err != nil || got != 3 || h == nil || closed != 1 {
		t.Errorf("Hold = %v %d %v, %d closed; want 3, one socket closed (port 2's)", h, got, err, closed)
	}
	_, _, err = Hold([]uint16{1}, bind, func(uint16) bool { return true })
	if !errors.Is(err, kern.ErrPortTaken) {
		t.Errorf("all taken: %v", err)
	}
	_, _, err = Hold([]uint16{2}, bind, func(uint16) bool { return false })
	if !errors.Is(err, kern.ErrPortTaken) {
		t.Errorf("all claimed: %v", err)
	}
	if _, got, _ := Hold([]uint16{0}, bind, func(uint16) bool { return true }); got != 50000 {
		t.Errorf("ephemeral: got %d", got)
	}
}

// Candidates stay within the mapping, hold no port twice, and put a
// permitted preference first.
func FuzzCandidates(f *testing.F) {
	f.Add(uint16(9000), uint16(9010), uint16(9005))
	f.Add(uint16(0), uint16(0), uint16(1))
	f.Fuzz(func(t *testing.T, port, end, prefer uint16) {
		if end != 0 && (port == 0 || end < port || end-port > 2000) {
			return // refused by validation; keep ranges small
		}
		c := Candidates(port, end, prefer)
		if len(c) == 0 {
			t.Fatal("no candidates")
		}
		seen := map[uint16]bool{}
		for _, p := range c {
			if seen[p] {
				t.Fatalf("%v: %d twice", c, p)
			}
			seen[p] = true
			switch {
			case end != 0 && (p < port || p > end):
				t.Fatalf("%v: %d outside %d-%d", c, p, port, end)
			case end == 0 && port != 0 && p != port:
				t.Fatalf("%v: want only %d", c, port)
			}
		}
		if end != 0 && len(c) != int(end-port)+1 {
			t.Fatalf("%v: want every port of %d-%d", c, port, end)
		}
		allowed := end != 0 && prefer >= port && prefer <= end || end == 0 && port == 0 && prefer != 0
		if allowed && c[0] != prefer {
			t.Fatalf("%v: the preference %d is allowed but not first", c, prefer)
		}
	})
}

// Clashes is symmetric, and every claim clashes with itself.
func FuzzClashes(f *testing.F) {
	f.Add(uint8(6), []byte{10, 0, 0, 1}, uint16(80), uint8(6), []byte{0, 0, 0, 0}, uint16(80))
	f.Fuzz(func(t *testing.T, p1 uint8, ip1 []byte, port1 uint16, p2 uint8, ip2 []byte, port2 uint16) {
		a1, ok1 := netip.AddrFromSlice(ip1)
		a2, ok2 := netip.AddrFromSlice(ip2)
		if !ok1 || !ok2 {
			return
		}
		x, y := Key{p1, a1, port1}, Key{p2, a2, port2}
		if x.Clashes(y) != y.Clashes(x) {
			t.Fatalf("%v, %v: not symmetric", x, y)
		}
		if !x.Clashes(x) {
			t.Fatalf("%v does not clash with itself", x)
		}
	})
}
