package nat

import (
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Registers: reg 1 is the 16-byte NFT_REG_1, which spans the 32-bit
// registers 8-11; reg 2 spans 12-15. Concatenated keys are laid out in
// consecutive 32-bit registers starting at 8.
const (
	reg1 = 1
	reg2 = 2
	r32  = 8 // NFT_REG32_00
)

// Small builders for the expressions the rules are made of; each returns
// a slice so rules read as appends.

func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{p}},
	}
}

func ifnameIn(key expr.MetaKey, set string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: reg1},
		&expr.Lookup{SourceRegister: reg1, SetName: set},
	}
}

// iifOifIn matches "iifname . oifname @set".
func iifOifIn(set string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg2},
		&expr.Lookup{SourceRegister: reg1, SetName: set},
	}
}

// ctBits matches "ct <key> & mask != 0".
func ctBits(key expr.CtKey, mask uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: key, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
	}
}

// ipsDstNAT is IPS_DST_NAT: the connection was DNAT'ed (a published port).
const ipsDstNAT = 1 << 5

func ctDNAT() []expr.Any { return ctBits(expr.CtKeySTATUS, ipsDstNAT) }

func ctEstablished() []expr.Any {
	return ctBits(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED)
}

func daddrLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

// saddrNotLocal matches "fib saddr type != local".
func saddrNotLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: reg1, FlagSADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

// noIif matches "iif 0": no input device, as in postrouting for the
// host's own packets and for packets that br_netfilter bridges.
func noIif() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIF, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: make([]byte, 4)},
	}
}

// addrOffset returns the offset and length of the source or destination
// address in the network header.
func addrOffset(v6, dst bool) (off, n uint32) {
	switch {
	case !v6 && !dst:
		return 12, 4
	case !v6:
		return 16, 4
	case !dst:
		return 8, 16
	}
	return 24, 16
}

// addrProtoPort loads "ip daddr . meta l4proto . th dport" into consecutive
// registers from r32 and returns the register after the last.
func addrProtoPort(v6 bool) ([]expr.Any, uint32) {
	off, n := addrOffset(v6, true)
	next := uint32(r32 + n/4)
	return append([]expr.Any{
		&expr.Payload{DestRegister: r32, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n}},
		protoPort(next)...), next + 2
}

// protoPort loads "meta l4proto . th dport" into registers at and after r.
func protoPort(r uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r},
		&expr.Payload{DestRegister: r + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// dnatFromMap looks the key in reg 1.. up in map and DNATs to the
// address . port it maps to.
func dnatFromMap(m string, v6 bool) []expr.Any {
	fam, portReg := uint32(unix.NFPROTO_IPV4), uint32(r32+1)
	if v6 {
		fam, portReg = unix.NFPROTO_IPV6, r32+4
	}
	return []expr.Any{
		&expr.Lookup{SourceRegister: reg1, SetName: m, DestRegister: reg1, IsDestRegSet: true},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: fam, RegAddrMin: reg1, RegProtoMin: portReg},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
