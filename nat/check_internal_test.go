package nat

import (
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/internal/nltestutil"
	"golang.org/x/sys/unix"
)

// ruleMsg is a rule as the kernel dumps it: nfgenmsg, chain and userdata.
func ruleMsg(family byte, chain string, tag string) netlink.Message {
	attrs, _ := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_RULE_TABLE, Data: []byte("t\x00")},
		{Type: unix.NFTA_RULE_CHAIN, Data: []byte(chain + "\x00")},
		{Type: unix.NFTA_RULE_HANDLE, Data: make([]byte, 8)},
		{Type: unix.NFTA_RULE_USERDATA, Data: []byte(tag)},
	})
	return netlink.Message{Header: netlink.Header{Flags: netlink.Multi,
		Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWRULE)},
		Data: append([]byte{family, unix.NFNETLINK_V0, 0, 0}, attrs...)}
}

func TestTableRulesIsOneDumpOfTheTable(t *testing.T) {
	r := &nltestutil.Recorder{Reply: func(m netlink.Message) ([]netlink.Message, int) {
		return []netlink.Message{
			ruleMsg(unix.NFPROTO_INET, "forward", "a"), ruleMsg(unix.NFPROTO_INET, "dnat", "b"),
			ruleMsg(unix.NFPROTO_INET, "forward", "c"),
			ruleMsg(unix.NFPROTO_BRIDGE, "forward", "x"), // another family's table of that name
			{Header: netlink.Header{Type: netlink.Done, Flags: netlink.Multi}, Data: make([]byte, 4)},
		}, 0
	}}
	f, err := New("t", func() (*nftables.Conn, *netlink.Conn, error) { return nil, r.Dial(), nil })
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.tableRules(&nftables.Table{Name: "t", Family: nftables.TableFamilyINet})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || len(got["forward"]) != 2 || string(got["forward"][0]) != "a" || string(got["forward"][1]) != "c" ||
		len(got["dnat"]) != 1 || string(got["dnat"][0]) != "b" {
		t.Errorf("rules %q, want forward [a c], dnat [b], and nothing of the bridge family", got)
	}
	if r.Sends != 1 || len(r.Reqs) != 1 {
		t.Fatalf("%d sendmsg, %d messages; want one dump", r.Sends, len(r.Reqs))
	}
	m := r.Reqs[0]
	if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETRULE) ||
		m.Header.Flags&netlink.Dump == 0 || m.Data[0] != unix.NFPROTO_INET {
		t.Errorf("request %+v family %d, want a GETRULE dump of the inet family", m.Header, m.Data[0])
	}
	a := nltestutil.Attrs(t, m.Data[4:])
	if len(a) != 1 || string(a[unix.NFTA_RULE_TABLE]) != "t\x00" {
		t.Errorf("request attributes %v, want only the table (every chain at once)", a)
	}
}
