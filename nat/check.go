package nat

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/internal/nl"
	"golang.org/x/sys/unix"
)

// Every rule carries a comment with a hash of what it should be (its chain,
// position and expressions), so Check can tell a table as this package
// builds it from one that was changed, with one rule dump per table and
// without decoding expressions back.

// udataRuleComment is NFTNL_UDATA_RULE_COMMENT (libnftnl's udata.h), which
// nft(8) prints as the rule's comment.
const udataRuleComment userdata.Type = 0

// taggedChain is a chain, its rules and each rule's tag (rule userdata).
type taggedChain struct {
	chain
	tags [][]byte
}

func taggedChains(t *nftables.Table) []taggedChain { return tagged(chains(t)) }

func tagged(chs []chain) []taggedChain {
	var out []taggedChain
	for _, ch := range chs {
		tc := taggedChain{chain: ch}
		for i, r := range ch.rules {
			h := fnv.New64a()
			fmt.Fprintf(h, "%s/%d", ch.c.Name, i)
			for _, e := range r {
				fmt.Fprintf(h, "|%T%+v", e, e)
			}
			tc.tags = append(tc.tags, userdata.AppendString(nil, udataRuleComment,
				fmt.Sprintf("nlbridge %016x", h.Sum64())))
		}
		out = append(out, tc)
	}
	return out
}

// Check reports whether the inet table exists (found) and both tables
// have exactly the sets, chains and rules that Rebuild creates (intact).
// It reads; it changes nothing. An error means a table could not be read.
func (f *Firewall) Check(ctx context.Context) (found, intact bool, err error) {
	defer f.use(ctx)(&err)
	have, err := f.c.GetSets(f.t)
	if err != nil {
		if nl.Done(ctx) != nil { // cut short, not missing
			return false, false, err
		}
		return false, false, nil // no table (google/nftables does not wrap the errno here)
	}
	intact, err = f.check(f.t, sets(f.t), taggedChains(f.t), have)
	if !intact || err != nil {
		return true, false, err
	}
	if have, err = f.c.GetSets(f.bt); err != nil {
		if nl.Done(ctx) != nil { // cut short, not missing
			return true, false, err
		}
		return true, false, nil // no guard table
	}
	intact, err = f.check(f.bt, guardSets(f.bt), tagged(guardChains(f.bt)), have)
	return true, intact, err
}

func (f *Firewall) check(t *nftables.Table, want []*nftables.Set, tcs []taggedChain, have []*nftables.Set) (bool, error) {
	if len(have) != len(want) {
		return false, nil
	}
	names := map[string]bool{}
	for _, s := range have {
		names[s.Name] = true
	}
	for _, s := range want {
		if !names[s.Name] {
			return false, nil
		}
	}
	all, err := f.c.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return false, err
	}
	chainsHave := map[string]*nftables.Chain{}
	for _, c := range all {
		if c.Table != nil && c.Table.Name == t.Name {
			chainsHave[c.Name] = c
		}
	}
	if len(chainsHave) != len(tcs) {
		return false, nil
	}
	rules, err := f.tableRules(t)
	if err != nil {
		return false, err
	}
	for _, tc := range tcs {
		c := chainsHave[tc.c.Name]
		if c == nil || !sameHook(c, tc.c) {
			return false, nil
		}
		have := rules[tc.c.Name]
		if len(have) != len(tc.tags) {
			return false, nil
		}
		for i, tag := range have {
			if !bytes.Equal(tag, tc.tags[i]) {
				return false, nil
			}
		}
	}
	return true, nil
}

// tableRules reads the tags (userdata) of the rules of table t, in order,
// per chain name: one dump for the table, where google/nftables reads one
// chain at a time.
func (f *Firewall) tableRules(t *nftables.Table) (map[string][][]byte, error) {
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_RULE_TABLE, Data: []byte(t.Name + "\x00")},
	})
	if err != nil {
		return nil, err
	}
	msgs, err := f.sock.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETRULE),
			Flags: netlink.Request | netlink.Dump},
		Data: append([]byte{byte(t.Family), unix.NFNETLINK_V0, 0, 0}, attrs...), // nfgenmsg
	})
	if err != nil {
		return nil, fmt.Errorf("list rules of %s: %w", t.Name, err)
	}
	out := map[string][][]byte{}
	for _, m := range msgs {
		if len(m.Data) < 4 || m.Data[0] != byte(t.Family) {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return nil, fmt.Errorf("decode rule: %w", err)
		}
		var chain string
		tag := []byte{}
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_RULE_CHAIN:
				chain = ad.String()
			case unix.NFTA_RULE_USERDATA:
				tag = ad.Bytes()
			}
		}
		if err := ad.Err(); err != nil {
			return nil, fmt.Errorf("decode rule: %w", err)
		}
		out[chain] = append(out[chain], tag)
	}
	return out, nil
}

func sameHook(a, b *nftables.Chain) bool {
	if (a.Hooknum == nil) != (b.Hooknum == nil) || (a.Priority == nil) != (b.Priority == nil) {
		return false
	}
	if a.Hooknum != nil && (*a.Hooknum != *b.Hooknum || *a.Priority != *b.Priority || a.Type != b.Type) {
		return false
	}
	return a.Policy == nil || b.Policy == nil || *a.Policy == *b.Policy
}
