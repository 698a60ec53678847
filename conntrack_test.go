package bridge

import (
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/internal/nltestutil"
	"golang.org/x/sys/unix"
)

// With no conntrack entry in the host namespace, flushConntrack sends
// nothing; with some, or when the count cannot be read, the flushes go in
// one sendmsg.
func TestFlushConntrackSkipsEmptyTable(t *testing.T) {
	a := netip.MustParseAddr("172.29.0.2")
	for _, tc := range []struct {
		count       io.ReaderAt
		reqs, sends int
	}{
		{strings.NewReader("0\n"), 0, 0},
		{strings.NewReader("3\n"), 2, 1},
		{strings.NewReader(""), 2, 1},
		{nil, 2, 1},
	} {
		r := &nltestutil.Recorder{}
		d := &Driver{ct: r.Dial(), ctCount: tc.count}
		if err := d.flushConntrack(true, a); err != nil {
			t.Fatal(err)
		}
		if len(r.Reqs) != tc.reqs || r.Sends != tc.sends {
			t.Errorf("count %v: %d requests in %d sends, want %d in %d", tc.count, len(r.Reqs), r.Sends, tc.reqs, tc.sends)
		}
		for _, m := range r.Reqs {
			if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK<<8|2) { // IPCTNL_MSG_CT_DELETE
				t.Errorf("request type %#x, want a conntrack delete", m.Header.Type)
			}
		}
	}
}

func TestReadCount(t *testing.T) {
	for in, want := range map[string]uint64{"0\n": 0, "262144\n": 262144} {
		if n, ok := readCount(strings.NewReader(in)); !ok || n != want {
			t.Errorf("readCount(%q) = %d, %v", in, n, ok)
		}
	}
	for _, in := range []string{"", "x\n", "-1\n"} {
		if _, ok := readCount(strings.NewReader(in)); ok {
			t.Errorf("readCount(%q) ok", in)
		}
	}
}
