package drain

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/netloom/netloom/nft"
	"golang.org/x/sys/unix"
)

// Marks, ip rules and routing tables of the drains.
const (
	// MarkMask holds the slot in a conntrack mark and a packet mark.
	MarkMask  uint32 = 0x00ff0000
	markShift        = 16
	// RulePriority is the priority of the drains' ip rules (before the
	// main table's 32766).
	RulePriority = 4200
	// TableBase + slot is the routing table of a slot.
	TableBase = 4200
)

// Names of what Fragment adds to table inet netloom; everything starts
// with "drain-".
const (
	MapVIPs        = "drain-vips"
	ChainMark      = "drain-prerouting"
	ChainNAT       = "drain-nat"
	PriorityMark   = nft.PriorityMangle
	PriorityNATPre = nft.PriorityDstNAT - 1
)

// Fragment is the drains' part of table inet netloom (empty when nothing
// drains): see the package documentation. It is pure.
func Fragment(s State) nft.Model {
	if len(s.Drains) == 0 {
		return nft.Model{}
	}
	vips := make([]netip.Addr, 0, len(s.Drains))
	for v := range s.Drains {
		vips = append(vips, v)
	}
	slices.SortFunc(vips, netip.Addr.Compare)
	m := nft.Set{
		Name: MapVIPs, Type: "ipv4_addr : verdict",
		Spec: nftables.Set{KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict, IsMap: true},
	}
	var slots []uint32
	for _, v := range vips {
		slot := s.Slots[s.Drains[v].From]
		if s.Drains[v].Returned {
			// Only the flows marked already are forwarded.
			continue
		}
		if !slices.Contains(slots, slot) {
			slots = append(slots, slot)
		}
		b := v.As4()
		m.Elements = append(m.Elements, nft.NewElement(fmt.Sprintf("%s : goto %s", v, slotChain(slot)),
			nftables.SetElement{Key: b[:], VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: slotChain(slot)}}))
	}
	slices.Sort(slots)
	out := nft.Model{
		Sets: []nft.Set{m},
		Chains: []nft.Chain{
			{
				Name: ChainMark, Type: "filter", Hook: "prerouting", Priority: PriorityMark, Policy: "accept",
				Rules: []nft.Rule{
					// A TCP packet conntrack took for a new connection
					// although it is no SYN: picked up mid-stream.
					nft.NewRule(tcpProto(), nft.CtState(nft.CtNew), ctMarkIs(false), tcpNoSYN(), nft.IPv4(), nft.Addr(nft.Daddr), nft.VmapLookup(MapVIPs)),
					// One conntrack refused (loose pickup off, a FIN or RST).
					nft.NewRule(l4protoTCP(), nft.CtState(nft.CtInvalid), nft.IPv4(), nft.Addr(nft.Daddr), nft.VmapLookup(MapVIPs)),
					// Later packets of a forwarded flow.
					nft.NewRule(ctMarkIs(true), metaMarkFromCt()),
				},
			},
			{
				Name: ChainNAT, Type: "nat", Hook: "prerouting", Priority: PriorityNATPre, Policy: "accept",
				Rules: []nft.Rule{nft.NewRule(ctMarkIs(true), identityDNAT())},
			},
		},
	}
	for _, slot := range slots {
		out.Chains = append(out.Chains, nft.Chain{Name: slotChain(slot), Rules: []nft.Rule{
			nft.NewRule(setMark(true, Mark(slot))),
			nft.NewRule(setMark(false, Mark(slot))),
		}})
	}
	return out
}

// slotChain names the chain that marks a flow for slot.
func slotChain(slot uint32) string { return fmt.Sprintf("drain-to-%d", slot) }

// setMark is "ct mark set ct mark & 0xff01ffff | 0x00010000" (ct) or the
// same for "meta mark": the slot's mark under MarkMask, the other bits
// kept. nft lists (x & m) ^ v as "x & (m|v) | v".
func setMark(ct bool, mark uint32) nft.Frag {
	kw, load, store := "meta mark", expr.Any(&expr.Meta{Key: expr.MetaKeyMARK, Register: nft.Reg1}), expr.Any(&expr.Meta{Key: expr.MetaKeyMARK, Register: nft.Reg1, SourceRegister: true})
	if ct {
		kw, load, store = "ct mark", &expr.Ct{Key: expr.CtKeyMARK, Register: nft.Reg1}, &expr.Ct{Key: expr.CtKeyMARK, Register: nft.Reg1, SourceRegister: true}
	}
	return nft.Frag{
		Text: fmt.Sprintf("%s set %s & 0x%08x | 0x%08x", kw, kw, ^MarkMask|mark, mark),
		Exprs: []expr.Any{
			load,
			&expr.Bitwise{
				SourceRegister: nft.Reg1, DestRegister: nft.Reg1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(^MarkMask),
				Xor:  binaryutil.NativeEndian.PutUint32(mark),
			},
			store,
		},
	}
}

// tcpProto is the hidden `meta l4proto tcp` dependency of a tcp header
// match (nft lists it only when nothing of the header follows).
func tcpProto() nft.Frag {
	f := l4protoTCP()
	f.Text = ""
	return f
}

// l4protoTCP is "meta l4proto tcp".
func l4protoTCP() nft.Frag {
	return nft.Frag{Text: "meta l4proto tcp", Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: nft.Reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: nft.Reg1, Data: []byte{unix.IPPROTO_TCP}},
	}}
}

// ctMarkIs is "ct mark & 0x00ff0000 != 0x00000000" (set) or "== ..."
// (not set): whether the connection carries a drain's mark.
func ctMarkIs(set bool) nft.Frag {
	op, text := expr.CmpOpEq, "=="
	if set {
		op, text = expr.CmpOpNeq, "!="
	}
	return nft.Frag{Text: fmt.Sprintf("ct mark & 0x%08x %s 0x00000000", MarkMask, text), Exprs: []expr.Any{
		&expr.Ct{Register: nft.Reg1, Key: expr.CtKeyMARK},
		&expr.Bitwise{
			SourceRegister: nft.Reg1, DestRegister: nft.Reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(MarkMask),
			Xor:  binaryutil.NativeEndian.PutUint32(0),
		},
		&expr.Cmp{Op: op, Register: nft.Reg1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}}
}

// tcpNoSYN is "tcp flags ! syn" (after the tcp dependency).
func tcpNoSYN() nft.Frag {
	return nft.Frag{Text: "tcp flags ! syn", Exprs: []expr.Any{
		&expr.Payload{DestRegister: nft.Reg1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: nft.Reg1, DestRegister: nft.Reg1, Len: 1, Mask: []byte{0x02}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: nft.Reg1, Data: []byte{0}},
	}}
}

// metaMarkFromCt is "meta mark set ct mark".
func metaMarkFromCt() nft.Frag {
	return nft.Frag{Text: "meta mark set ct mark", Exprs: []expr.Any{
		&expr.Ct{Register: nft.Reg1, Key: expr.CtKeyMARK},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: nft.Reg1, SourceRegister: true},
	}}
}

// identityDNAT is "dnat ip to ip daddr": binds the connection's
// destination NAT without changing it, so that no later nat chain of the
// hook (the service proxy's) translates it.
func identityDNAT() nft.Frag {
	f := nft.Join(nft.IPv4(), nft.Frag{Exprs: []expr.Any{nft.LoadAddr(nft.Daddr, nft.Reg1)}})
	f.Text = "dnat ip to ip daddr"
	f.Exprs = append(f.Exprs, &expr.NAT{
		Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4,
		RegAddrMin: nft.Reg1, RegAddrMax: nft.Reg1,
	})
	return f
}

// Guard is "meta mark & 0x00ff0000 != 0x00000000 accept": a rule for the
// top of another fragment's prerouting filter chain that must not act on
// the packets a drain forwards (they stay `ct state new` here, as this
// node never sees their replies). The service proxy's
// svc-filter-prerouting needs it, or it rejects the forwarded
// connections of a service that has no endpoint left (all of them were on
// the node that left).
func Guard() nft.Rule {
	return nft.NewRule(nft.Frag{Text: fmt.Sprintf("meta mark & 0x%08x != 0x00000000", MarkMask), Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: nft.Reg1},
		&expr.Bitwise{
			SourceRegister: nft.Reg1, DestRegister: nft.Reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(MarkMask),
			Xor:  binaryutil.NativeEndian.PutUint32(0),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: nft.Reg1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}}, nft.Accept())
}
