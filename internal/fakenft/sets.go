package fakenft

import (
	"bytes"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Sets and their elements, and what rules refer to.

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
