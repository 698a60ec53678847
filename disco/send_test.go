package disco

import (
	"errors"
	"net"
	"testing"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/internal/nltestutil"
	"golang.org/x/sys/unix"
)

func TestSendStopsWhenTheMACChanged(t *testing.T) {
	mac := net.HardwareAddr{2, 0x42, 10, 0, 0, 2}
	for _, tc := range []struct {
		now  net.HardwareAddr
		want error
	}{{mac, nil}, {net.HardwareAddr{2, 0, 0, 0, 0, 7}, ErrMACChanged}} {
		r := &nltestutil.Recorder{Reply: func(m netlink.Message) ([]netlink.Message, int) {
			b, _ := (&rtnetlink.LinkMessage{Index: 3, Attributes: &rtnetlink.LinkAttributes{Name: "eth0", Address: tc.now}}).MarshalBinary()
			return []netlink.Message{{Header: netlink.Header{Type: unix.RTM_NEWLINK}, Data: b}}, 0
		}}
		a := &Announcer{index: 3, mac: mac} // no sockets: sends nothing
		if err := a.Send(r.Dial()); !errors.Is(err, tc.want) {
			t.Errorf("MAC now %s: err = %v, want %v", tc.now, err, tc.want)
		}
		var req rtnetlink.LinkMessage
		if len(r.Reqs) != 1 || r.Reqs[0].Header.Type != unix.RTM_GETLINK || req.UnmarshalBinary(r.Reqs[0].Data) != nil || req.Index != 3 {
			t.Errorf("want one RTM_GETLINK for index 3, got %+v", r.Reqs)
		}
	}
}
