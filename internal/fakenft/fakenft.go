// Package fakenft keeps nf_tables state in memory for package bridgetest:
// tables, chains, rules (their expressions as sent) and sets with their
// elements. It applies batches as the kernel does (all or nothing, every
// message checked, one answer per message that asks for an ack) and
// answers the dumps google/nftables sends. A State is not safe for
// concurrent use; bridgetest serializes access.
package fakenft

import (
	"bytes"
	"encoding/binary"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// State is one namespace's nf_tables state. The zero value is empty and
// ready.
type State struct {
	tables []*table
	handle uint64            // last handle given
	gen    uint32            // generation, bumped per committed batch
	queue  []netlink.Message // answers Dump has yet to read
}

// New returns an empty state.
func New() *State { return &State{} }

type table struct {
	family uint8
	name   string
	flags  uint32
	handle uint64
	chains []*chain
	sets   []*set
}

type chain struct {
	name   string
	handle uint64
	attrs  []netlink.Attribute // as sent, without table, name and handle
	rules  []*rule
}

type rule struct {
	handle   uint64
	exprs    []byte // NFTA_RULE_EXPRESSIONS payload
	userdata []byte
}

type set struct {
	name    string
	id      uint32 // NFTA_SET_ID of the batch that made it
	handle  uint64
	flags   uint32
	keyLen  uint32
	dataLen uint32
	attrs   []netlink.Attribute // as sent, without table, name and handle
	elems   []*elem
}

type elem struct {
	key  []byte // NFTA_SET_ELEM_KEY value and NFTA_SET_ELEM_KEY_END value
	data []byte // NFTA_SET_ELEM_DATA payload (value or verdict), nil for sets
	raw  []byte // the NFTA_LIST_ELEM payload as sent
}

// clone copies the state deeply enough that a failed batch leaves s as
// it was.
func (s *State) clone() *State {
	c := &State{handle: s.handle, gen: s.gen}
	for _, t := range s.tables {
		nt := *t
		nt.chains = make([]*chain, len(t.chains))
		for i, ch := range t.chains {
			nc := *ch
			nc.rules = append([]*rule(nil), ch.rules...)
			nt.chains[i] = &nc
		}
		nt.sets = make([]*set, len(t.sets))
		for i, st := range t.sets {
			ns := *st
			ns.elems = append([]*elem(nil), st.elems...)
			nt.sets[i] = &ns
		}
		c.tables = append(c.tables, &nt)
	}
	return c
}

func (s *State) table(family uint8, name string) *table {
	for _, t := range s.tables {
		if t.family == family && t.name == name {
			return t
		}
	}
	return nil
}

func (t *table) chain(name string) *chain {
	for _, c := range t.chains {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (t *table) set(name string, id uint32) *set {
	for _, st := range t.sets {
		if name != "" && st.name == name || name == "" && id != 0 && st.id == id {
			return st
		}
	}
	return nil
}

// Batch applies the messages between a batch's begin and end. check, if
// not nil, may refuse a message before it is applied (an injected
// fault). It returns the errno of each message (0 = applied); if any is
// non-zero nothing was applied.
func (s *State) Batch(msgs []netlink.Message, check func(netlink.Message) syscall.Errno) []syscall.Errno {
	work := s.clone()
	errs := make([]syscall.Errno, len(msgs))
	failed := false
	for i, m := range msgs {
		var errno syscall.Errno
		if check != nil {
			errno = check(m)
		}
		if errno == 0 {
			errno = work.apply(m)
		}
		errs[i] = errno
		failed = failed || errno != 0
	}
	if !failed {
		work.gen++
		*s = *work
	}
	return errs
}

// msg is a decoded nf_tables request.
type msg struct {
	family uint8
	flags  netlink.HeaderFlags
	attrs  []netlink.Attribute
}

func decode(m netlink.Message) (msg, syscall.Errno) {
	if len(m.Data) < 4 {
		return msg{}, unix.EINVAL
	}
	as, err := netlink.UnmarshalAttributes(m.Data[4:])
	if err != nil {
		return msg{}, unix.EINVAL
	}
	return msg{family: m.Data[0], flags: m.Header.Flags, attrs: as}, 0
}

func (m msg) str(typ uint16) string {
	for _, a := range m.attrs {
		if a.Type&^unix.NLA_F_NESTED == typ {
			return string(bytes.TrimRight(a.Data, "\x00"))
		}
	}
	return ""
}

func (m msg) u32(typ uint16) uint32 {
	for _, a := range m.attrs {
		if a.Type&^unix.NLA_F_NESTED == typ && len(a.Data) == 4 {
			return binary.BigEndian.Uint32(a.Data)
		}
	}
	return 0
}

func (m msg) has(typ uint16) bool {
	for _, a := range m.attrs {
		if a.Type&^unix.NLA_F_NESTED == typ {
			return true
		}
	}
	return false
}

func (m msg) data(typ uint16) []byte {
	for _, a := range m.attrs {
		if a.Type&^unix.NLA_F_NESTED == typ {
			return a.Data
		}
	}
	return nil
}

// without is the attributes other than those types.
func (m msg) without(types ...uint16) []netlink.Attribute {
	var out []netlink.Attribute
next:
	for _, a := range m.attrs {
		for _, t := range types {
			if a.Type&^unix.NLA_F_NESTED == t {
				continue next
			}
		}
		out = append(out, a)
	}
	return out
}

func (s *State) nextHandle() uint64 {
	s.handle++
	return s.handle
}

// apply applies one message of a batch.
func (s *State) apply(m netlink.Message) syscall.Errno {
	if uint16(m.Header.Type)>>8 != unix.NFNL_SUBSYS_NFTABLES {
		return unix.EINVAL
	}
	d, errno := decode(m)
	if errno != 0 {
		return errno
	}
	switch uint16(m.Header.Type) & 0xff {
	case unix.NFT_MSG_NEWTABLE:
		return s.newTable(d)
	case unix.NFT_MSG_DELTABLE:
		return s.delTable(d)
	case unix.NFT_MSG_NEWCHAIN:
		return s.newChain(d)
	case unix.NFT_MSG_DELCHAIN:
		return s.delChain(d)
	case unix.NFT_MSG_NEWRULE:
		return s.newRule(d)
	case unix.NFT_MSG_DELRULE:
		return s.delRule(d)
	case unix.NFT_MSG_NEWSET:
		return s.newSet(d)
	case unix.NFT_MSG_DELSET:
		return s.delSet(d)
	case unix.NFT_MSG_NEWSETELEM:
		return s.setElems(d, true)
	case unix.NFT_MSG_DELSETELEM:
		return s.setElems(d, false)
	}
	return unix.EOPNOTSUPP
}

func (s *State) newTable(d msg) syscall.Errno {
	name := d.str(unix.NFTA_TABLE_NAME)
	if name == "" {
		return unix.EINVAL
	}
	if t := s.table(d.family, name); t != nil {
		if d.flags&netlink.Excl != 0 {
			return unix.EEXIST
		}
		return 0
	}
	s.tables = append(s.tables, &table{family: d.family, name: name, flags: d.u32(unix.NFTA_TABLE_FLAGS), handle: s.nextHandle()})
	return 0
}

// delTable deletes a table with everything in it; without a name and
// family (nft flush ruleset), every table.
func (s *State) delTable(d msg) syscall.Errno {
	name := d.str(unix.NFTA_TABLE_NAME)
	if name == "" && d.family == unix.NFPROTO_UNSPEC {
		s.tables = nil
		return 0
	}
	for i, t := range s.tables {
		if t.family == d.family && t.name == name {
			s.tables = append(s.tables[:i], s.tables[i+1:]...)
			return 0
		}
	}
	return unix.ENOENT
}

func (s *State) newChain(d msg) syscall.Errno {
	t := s.table(d.family, d.str(unix.NFTA_CHAIN_TABLE))
	name := d.str(unix.NFTA_CHAIN_NAME)
	switch {
	case t == nil:
		return unix.ENOENT
	case name == "":
		return unix.EINVAL
	}
	if c := t.chain(name); c != nil {
		if d.flags&netlink.Excl != 0 {
			return unix.EEXIST
		}
		return 0
	}
	t.chains = append(t.chains, &chain{name: name, handle: s.nextHandle(),
		attrs: d.without(unix.NFTA_CHAIN_TABLE, unix.NFTA_CHAIN_NAME, unix.NFTA_CHAIN_HANDLE)})
	return 0
}

func (s *State) delChain(d msg) syscall.Errno {
	t := s.table(d.family, d.str(unix.NFTA_CHAIN_TABLE))
	if t == nil {
		return unix.ENOENT
	}
	name := d.str(unix.NFTA_CHAIN_NAME)
	for i, c := range t.chains {
		if c.name == name {
			if t.jumpsTo(name) {
				return unix.EBUSY
			}
			t.chains = append(t.chains[:i], t.chains[i+1:]...)
			return 0
		}
	}
	return unix.ENOENT
}

func (s *State) newRule(d msg) syscall.Errno {
	t := s.table(d.family, d.str(unix.NFTA_RULE_TABLE))
	if t == nil {
		return unix.ENOENT
	}
	c := t.chain(d.str(unix.NFTA_RULE_CHAIN))
	if c == nil {
		return unix.ENOENT
	}
	exprs := d.data(unix.NFTA_RULE_EXPRESSIONS)
	refs, err := references(exprs)
	if err != nil {
		return unix.EINVAL
	}
	for _, r := range refs {
		if r.set != "" || r.setID != 0 {
			if t.set(r.set, r.setID) == nil {
				return unix.ENOENT // lookup in a missing set
			}
		}
		if r.chain != "" && t.chain(r.chain) == nil {
			return unix.ENOENT // jump to a missing chain
		}
	}
	r := &rule{handle: s.nextHandle(), exprs: exprs, userdata: d.data(unix.NFTA_RULE_USERDATA)}
	if d.flags&netlink.Append != 0 {
		c.rules = append(c.rules, r)
	} else {
		c.rules = append([]*rule{r}, c.rules...)
	}
	return 0
}

func (s *State) delRule(d msg) syscall.Errno {
	t := s.table(d.family, d.str(unix.NFTA_RULE_TABLE))
	if t == nil {
		return unix.ENOENT
	}
	c := t.chain(d.str(unix.NFTA_RULE_CHAIN))
	if c == nil {
		return unix.ENOENT
	}
	h := d.data(unix.NFTA_RULE_HANDLE)
	if h == nil {
		c.rules = nil
		return 0
	}
	for i, r := range c.rules {
		if len(h) == 8 && r.handle == binary.BigEndian.Uint64(h) {
			c.rules = append(c.rules[:i], c.rules[i+1:]...)
			return 0
		}
	}
	return unix.ENOENT
}

// Flush deletes every table (nft flush ruleset).
func (s *State) Flush() {
	s.tables = nil
	s.gen++
}
