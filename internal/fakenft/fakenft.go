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

func (s *State) newSet(d msg) syscall.Errno {
	t := s.table(d.family, d.str(unix.NFTA_SET_TABLE))
	name := d.str(unix.NFTA_SET_NAME)
	switch {
	case t == nil:
		return unix.ENOENT
	case name == "" || !d.has(unix.NFTA_SET_KEY_LEN):
		return unix.EINVAL
	}
	flags := d.u32(unix.NFTA_SET_FLAGS)
	if old := t.set(name, 0); old != nil {
		if d.flags&netlink.Excl != 0 || old.flags != flags || old.keyLen != d.u32(unix.NFTA_SET_KEY_LEN) {
			return unix.EEXIST
		}
		return 0
	}
	if flags&unix.NFT_SET_MAP != 0 && d.u32(unix.NFTA_SET_DATA_LEN) == 0 && d.u32(unix.NFTA_SET_DATA_TYPE) != unix.NFT_DATA_VERDICT {
		return unix.EINVAL
	}
	t.sets = append(t.sets, &set{name: name, id: d.u32(unix.NFTA_SET_ID), handle: s.nextHandle(), flags: flags,
		keyLen: d.u32(unix.NFTA_SET_KEY_LEN), dataLen: d.u32(unix.NFTA_SET_DATA_LEN),
		attrs: d.without(unix.NFTA_SET_TABLE, unix.NFTA_SET_NAME, nftaSetHandle)})
	return 0
}

func (s *State) delSet(d msg) syscall.Errno {
	t := s.table(d.family, d.str(unix.NFTA_SET_TABLE))
	if t == nil {
		return unix.ENOENT
	}
	name := d.str(unix.NFTA_SET_NAME)
	for i, st := range t.sets {
		if st.name == name {
			if t.looksUp(name) {
				return unix.EBUSY
			}
			t.sets = append(t.sets[:i], t.sets[i+1:]...)
			return 0
		}
	}
	return unix.ENOENT
}

// setElems adds or deletes elements. Adding a key that is there with the
// same data is no change (an error with NLM_F_EXCL); with other data it
// is EEXIST. Deleting a missing element is ENOENT; a delete without
// elements flushes the set.
func (s *State) setElems(d msg, add bool) syscall.Errno {
	t := s.table(d.family, d.str(unix.NFTA_SET_ELEM_LIST_TABLE))
	if t == nil {
		return unix.ENOENT
	}
	st := t.set(d.str(unix.NFTA_SET_ELEM_LIST_SET), d.u32(unix.NFTA_SET_ELEM_LIST_SET_ID))
	if st == nil {
		return unix.ENOENT
	}
	list := d.data(unix.NFTA_SET_ELEM_LIST_ELEMENTS)
	if list == nil {
		if add {
			return unix.EINVAL
		}
		st.elems = nil
		return 0
	}
	items, err := netlink.UnmarshalAttributes(list)
	if err != nil {
		return unix.EINVAL
	}
	for _, it := range items {
		e, errno := st.parseElem(it.Data)
		if errno != 0 {
			return errno
		}
		i := st.find(e.key)
		switch {
		case add && i >= 0 && (!bytes.Equal(st.elems[i].data, e.data) || d.flags&netlink.Excl != 0):
			return unix.EEXIST
		case add && i < 0:
			st.elems = append(st.elems, e)
		case !add && i < 0:
			return unix.ENOENT
		case !add:
			st.elems = append(st.elems[:i:i], st.elems[i+1:]...)
		}
	}
	return 0
}

func (st *set) find(key []byte) int {
	for i, e := range st.elems {
		if bytes.Equal(e.key, key) {
			return i
		}
	}
	return -1
}

// parseElem decodes one NFTA_LIST_ELEM, checking its key length (and
// data, for maps) against the set as the kernel does.
func (st *set) parseElem(b []byte) (*elem, syscall.Errno) {
	as, err := netlink.UnmarshalAttributes(b)
	if err != nil {
		return nil, unix.EINVAL
	}
	e := &elem{raw: b}
	var key, keyEnd []byte
	for _, a := range as {
		switch a.Type &^ unix.NLA_F_NESTED {
		case unix.NFTA_SET_ELEM_KEY:
			key = dataValue(a.Data)
		case nftaSetElemKeyEnd:
			keyEnd = dataValue(a.Data)
		case unix.NFTA_SET_ELEM_DATA:
			e.data = a.Data
		}
	}
	isMap := st.flags&unix.NFT_SET_MAP != 0
	switch {
	case key == nil || uint32(len(key)) != st.keyLen || keyEnd != nil && uint32(len(keyEnd)) != st.keyLen:
		return nil, unix.EINVAL
	case isMap && e.data == nil, !isMap && e.data != nil:
		return nil, unix.EINVAL
	case isMap && st.dataLen != 0 && uint32(len(dataValue(e.data))) != st.dataLen:
		return nil, unix.EINVAL
	}
	e.key = append(append([]byte{}, key...), keyEnd...)
	return e, 0
}

// dataValue is the NFTA_DATA_VALUE inside a nested data attribute.
func dataValue(b []byte) []byte {
	as, err := netlink.UnmarshalAttributes(b)
	if err != nil {
		return nil
	}
	for _, a := range as {
		if a.Type&^unix.NLA_F_NESTED == unix.NFTA_DATA_VALUE {
			return a.Data
		}
	}
	return nil
}

// ref is what one expression refers to: a set (lookup) or a chain (jump,
// goto).
type ref struct {
	set   string
	setID uint32
	chain string
}

// references lists the sets and chains a rule's expressions refer to.
func references(exprs []byte) ([]ref, error) {
	list, err := netlink.UnmarshalAttributes(exprs)
	if err != nil {
		return nil, err
	}
	var out []ref
	for _, el := range list {
		as, err := netlink.UnmarshalAttributes(el.Data)
		if err != nil {
			return nil, err
		}
		name, data := "", []byte(nil)
		for _, a := range as {
			switch a.Type &^ unix.NLA_F_NESTED {
			case unix.NFTA_EXPR_NAME:
				name = string(bytes.TrimRight(a.Data, "\x00"))
			case unix.NFTA_EXPR_DATA:
				data = a.Data
			}
		}
		inner, err := netlink.UnmarshalAttributes(data)
		if err != nil {
			return nil, err
		}
		m := msg{attrs: inner}
		switch name {
		case "lookup":
			out = append(out, ref{set: m.str(unix.NFTA_LOOKUP_SET), setID: m.u32(unix.NFTA_LOOKUP_SET_ID)})
		case "immediate":
			if v := m.data(unix.NFTA_IMMEDIATE_DATA); v != nil {
				if vd, err := netlink.UnmarshalAttributes(v); err == nil {
					if verdict := (msg{attrs: vd}).data(unix.NFTA_DATA_VERDICT); verdict != nil {
						if va, err := netlink.UnmarshalAttributes(verdict); err == nil {
							out = append(out, ref{chain: (msg{attrs: va}).str(unix.NFTA_VERDICT_CHAIN)})
						}
					}
				}
			}
		}
	}
	return out, nil
}

func (t *table) jumpsTo(name string) bool {
	for _, c := range t.chains {
		for _, r := range c.rules {
			refs, _ := references(r.exprs)
			for _, x := range refs {
				if x.chain == name {
					return true
				}
			}
		}
	}
	return false
}

func (t *table) looksUp(name string) bool {
	for _, c := range t.chains {
		for _, r := range c.rules {
			refs, _ := references(r.exprs)
			for _, x := range refs {
				if x.set == name {
					return true
				}
			}
		}
	}
	return false
}

// Flush deletes every table (nft flush ruleset).
func (s *State) Flush() {
	s.tables = nil
	s.gen++
}
