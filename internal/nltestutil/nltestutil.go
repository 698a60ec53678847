// Package nltestutil records the netlink requests a fake conn receives and
// decodes their attributes, for unit tests that assert exact messages.
package nltestutil

import (
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"github.com/mdlayher/netlink/nltest"
)

// Recorder is a fake NETLINK_ROUTE peer: it records every request and
// acknowledges each one flagged Acknowledge. Reply, if set, is called
// first for each request and may return answers (echoes, dump parts) or an
// errno to refuse it. Like the kernel, it delivers one answer per receive.
type Recorder struct {
	Reqs  []netlink.Message
	Sends int // sendmsg calls, i.e. round trips
	Reply func(req netlink.Message) (answers []netlink.Message, errno int)
	queue []netlink.Message
}

// Dial returns a conn backed by the recorder.
func (r *Recorder) Dial() *netlink.Conn { return nltest.Dial(r.Func()) }

// Func is the recorder as an nltest.Func, e.g. for nftables.WithTestDial.
func (r *Recorder) Func() nltest.Func {
	return func(reqs []netlink.Message) ([]netlink.Message, error) {
		if reqs != nil {
			r.queue = append(r.queue, r.answer(reqs)...)
		}
		if len(r.queue) == 0 {
			return nil, nil
		}
		m := r.queue[0]
		r.queue = r.queue[1:]
		return []netlink.Message{m}, nil
	}
}

func (r *Recorder) answer(reqs []netlink.Message) []netlink.Message {
	r.Sends++
	var out []netlink.Message
	for _, m := range reqs {
		r.Reqs = append(r.Reqs, m)
		var errno int
		if r.Reply != nil {
			var ans []netlink.Message
			ans, errno = r.Reply(m)
			for i := range ans {
				ans[i].Header.Sequence = m.Header.Sequence
			}
			out = append(out, ans...)
		}
		if errno != 0 || m.Header.Flags&netlink.Acknowledge != 0 {
			out = append(out, netlink.Message{Header: netlink.Header{Type: netlink.Error,
				Sequence: m.Header.Sequence, PID: m.Header.PID}, Data: nlenc.Int32Bytes(int32(-errno))})
		}
	}
	return out
}

// Attrs decodes a flat attribute list into type -> payload; it fails the
// test on malformed input or a repeated type.
func Attrs(t testing.TB, b []byte) map[uint16][]byte {
	t.Helper()
	as, err := netlink.UnmarshalAttributes(b)
	if err != nil {
		t.Fatalf("decode attributes: %v", err)
	}
	m := map[uint16][]byte{}
	for _, a := range as {
		typ := a.Type &^ netlink.Nested
		if _, dup := m[typ]; dup {
			t.Fatalf("attribute %d repeated", typ)
		}
		m[typ] = a.Data
	}
	return m
}
