package fakenft

import (
	"encoding/binary"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Get answers a GET request (a dump or one object) with the parts of the
// answer, without the final Done.
func (s *State) Get(m netlink.Message) ([]netlink.Message, syscall.Errno) {
	d, errno := decode(m)
	if errno != 0 {
		return nil, errno
	}
	switch uint16(m.Header.Type) & 0xff {
	case unix.NFT_MSG_GETTABLE:
		var out []netlink.Message
		for _, t := range s.tables {
			if d.family == unix.NFPROTO_UNSPEC || t.family == d.family {
				out = append(out, s.tableMsg(t))
			}
		}
		return out, 0
	case unix.NFT_MSG_GETCHAIN:
		var out []netlink.Message
		for _, t := range s.tables {
			if d.family != unix.NFPROTO_UNSPEC && t.family != d.family {
				continue
			}
			if name := d.str(unix.NFTA_CHAIN_TABLE); name != "" && name != t.name {
				continue
			}
			for _, c := range t.chains {
				out = append(out, s.chainMsg(t, c))
			}
		}
		return out, 0
	case unix.NFT_MSG_GETRULE:
		t := s.table(d.family, d.str(unix.NFTA_RULE_TABLE))
		if t == nil {
			return nil, unix.ENOENT
		}
		chains := t.chains
		if name := d.str(unix.NFTA_RULE_CHAIN); name != "" {
			c := t.chain(name)
			if c == nil {
				return nil, unix.ENOENT
			}
			chains = []*chain{c}
		}
		var out []netlink.Message
		for _, c := range chains {
			for _, r := range c.rules {
				out = append(out, s.ruleMsg(t, c, r))
			}
		}
		return out, 0
	case unix.NFT_MSG_GETSET:
		t := s.table(d.family, d.str(unix.NFTA_SET_TABLE))
		if t == nil {
			return nil, unix.ENOENT
		}
		var out []netlink.Message
		for _, st := range t.sets {
			if name := d.str(unix.NFTA_SET_NAME); name == "" || name == st.name {
				out = append(out, s.setMsg(t, st))
			}
		}
		return out, 0
	case unix.NFT_MSG_GETSETELEM:
		t := s.table(d.family, d.str(unix.NFTA_SET_ELEM_LIST_TABLE))
		if t == nil {
			return nil, unix.ENOENT
		}
		st := t.set(d.str(unix.NFTA_SET_ELEM_LIST_SET), 0)
		if st == nil {
			return nil, unix.ENOENT
		}
		return []netlink.Message{s.elemsMsg(t, st)}, 0
	case unix.NFT_MSG_GETGEN:
		return []netlink.Message{s.msg(unix.NFT_MSG_NEWGEN, 0, []netlink.Attribute{
			{Type: unix.NFTA_GEN_ID, Data: be32(s.gen)}})}, 0
	}
	return nil, unix.EOPNOTSUPP
}

func (s *State) msg(typ uint16, family uint8, attrs []netlink.Attribute) netlink.Message {
	b, _ := netlink.MarshalAttributes(attrs)
	hdr := []byte{family, 0, 0, 0}
	binary.BigEndian.PutUint16(hdr[2:], uint16(s.gen))
	return netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | typ)},
		Data: append(hdr, b...)}
}

func (s *State) tableMsg(t *table) netlink.Message {
	return s.msg(unix.NFT_MSG_NEWTABLE, t.family, []netlink.Attribute{
		{Type: unix.NFTA_TABLE_NAME, Data: cstr(t.name)},
		{Type: unix.NFTA_TABLE_FLAGS, Data: be32(t.flags)},
		{Type: unix.NFTA_TABLE_USE, Data: be32(uint32(len(t.chains) + len(t.sets)))},
		{Type: nftaTableHandle, Data: be64(t.handle)},
	})
}

func (s *State) chainMsg(t *table, c *chain) netlink.Message {
	attrs := []netlink.Attribute{
		{Type: unix.NFTA_CHAIN_TABLE, Data: cstr(t.name)},
		{Type: unix.NFTA_CHAIN_NAME, Data: cstr(c.name)},
		{Type: unix.NFTA_CHAIN_HANDLE, Data: be64(c.handle)},
	}
	return s.msg(unix.NFT_MSG_NEWCHAIN, t.family, append(attrs, c.attrs...))
}

func (s *State) ruleMsg(t *table, c *chain, r *rule) netlink.Message {
	attrs := []netlink.Attribute{
		{Type: unix.NFTA_RULE_TABLE, Data: cstr(t.name)},
		{Type: unix.NFTA_RULE_CHAIN, Data: cstr(c.name)},
		{Type: unix.NFTA_RULE_HANDLE, Data: be64(r.handle)},
		{Type: unix.NLA_F_NESTED | unix.NFTA_RULE_EXPRESSIONS, Data: r.exprs},
	}
	if r.userdata != nil {
		attrs = append(attrs, netlink.Attribute{Type: unix.NFTA_RULE_USERDATA, Data: r.userdata})
	}
	return s.msg(unix.NFT_MSG_NEWRULE, t.family, attrs)
}

func (s *State) setMsg(t *table, st *set) netlink.Message {
	attrs := []netlink.Attribute{
		{Type: unix.NFTA_SET_TABLE, Data: cstr(t.name)},
		{Type: unix.NFTA_SET_NAME, Data: cstr(st.name)},
		{Type: nftaSetHandle, Data: be64(st.handle)},
	}
	return s.msg(unix.NFT_MSG_NEWSET, t.family, append(attrs, st.attrs...))
}

func (s *State) elemsMsg(t *table, st *set) netlink.Message {
	var list []netlink.Attribute
	for _, e := range st.elems {
		list = append(list, netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_LIST_ELEM, Data: e.raw})
	}
	b, _ := netlink.MarshalAttributes(list)
	return s.msg(unix.NFT_MSG_NEWSETELEM, t.family, []netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: cstr(t.name)},
		{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: cstr(st.name)},
		{Type: unix.NLA_F_NESTED | unix.NFTA_SET_ELEM_LIST_ELEMENTS, Data: b},
	})
}

func cstr(s string) []byte { return append([]byte(s), 0) }

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// Attributes x/sys/unix lacks.
const (
	nftaTableHandle   = 4  // NFTA_TABLE_HANDLE
	nftaSetHandle     = 16 // NFTA_SET_HANDLE
	nftaSetElemKeyEnd = 10 // NFTA_SET_ELEM_KEY_END
)
