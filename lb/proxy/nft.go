package proxy

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/netloom/netloom/nft"
	"golang.org/x/sys/unix"
)

// The building blocks of the proxy's rules that only the proxy uses; the
// shared ones (nft.Frag, NewRule, IPv4, PrefixMatch, DaddrProtoPort,
// verdicts...) are package nft's. Each Frag carries its nft text,
// as `nft list` prints it, next to the expressions sent to the kernel, so
// the two cannot drift apart. The root test compares nft's listing of an
// applied model with Model.String. The expressions are what nft 1.0.6
// generates for the same text (checked with `nft --debug=netlink` and by
// decoding nft's rules).

// l4proto is "meta l4proto tcp".
func l4proto(p proto) nft.Frag {
	return nft.Frag{Text: "meta l4proto " + p.String(), Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: nft.Reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: nft.Reg1, Data: []byte{byte(p)}},
	}}
}

// dispatch is "ip daddr . meta l4proto . th dport vmap @set": the one
// lookup per new connection that finds the service port.
func dispatch(set string) nft.Frag {
	return nft.Join(nft.IPv4(), nft.DaddrProtoPort(), nft.VmapLookup(set))
}

// dispatchNodePort is "ip daddr @svc-nodeport-addrs fib daddr type local
// meta l4proto . th dport vmap @set": the lookup of a node port, for local
// destinations where node ports are served.
func dispatchNodePort(set string) nft.Frag {
	return nft.Join(
		nft.IPv4(), nft.Addr(nft.Daddr), nft.Lookup(SetNodePortAddrs),
		fibDaddrLocal(),
		protoPort(),
		nft.VmapLookup(set),
	)
}

// protoPort is "meta l4proto . th dport", loaded from Reg1 on (Reg1,
// Reg9).
func protoPort() nft.Frag {
	return nft.Frag{Text: "meta l4proto . th dport", Exprs: nft.LoadL4ProtoDport(nft.Reg1, nft.Reg9)}
}

// fibDaddrLocal is "fib daddr type local": the destination is an address
// of this node.
func fibDaddrLocal() nft.Frag {
	return nft.Frag{Text: "fib daddr type local", Exprs: []expr.Any{
		&expr.Fib{Register: nft.Reg1, ResultADDRTYPE: true, FlagDADDR: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: nft.Reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}}
}

// notAllowed is "ip daddr . meta l4proto . th dport . ip saddr != @set".
func notAllowed(set string) nft.Frag {
	f := nft.Join(nft.IPv4(), nft.DaddrProtoPort())
	f.Text += " . ip saddr != @" + set
	f.Exprs = append(f.Exprs,
		nft.LoadAddr(nft.Saddr, nft.Reg11),
		&expr.Lookup{SourceRegister: nft.Reg1, SetName: set, Invert: true},
	)
	return f
}

// saddrDaddrIn is "ip saddr . ip daddr @set".
func saddrDaddrIn(set string) nft.Frag {
	return nft.Join(
		nft.IPv4(),
		nft.Frag{Text: "ip saddr . ip daddr", Exprs: []expr.Any{
			nft.LoadAddr(nft.Saddr, nft.Reg1),
			nft.LoadAddr(nft.Daddr, nft.Reg9),
		}},
		nft.Lookup(set),
	)
}

// saddrInSet is "ip saddr @set".
func saddrInSet(set string) nft.Frag {
	return nft.Join(nft.IPv4(), nft.Addr(nft.Saddr), nft.Lookup(set))
}

// fibSaddrLocal is "fib saddr type local": the packet comes from an
// address of this node.
func fibSaddrLocal() nft.Frag {
	return nft.Frag{Text: "fib saddr type local", Exprs: []expr.Any{
		&expr.Fib{Register: nft.Reg1, ResultADDRTYPE: true, FlagSADDR: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: nft.Reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}}
}

// ipsDstNAT is IPS_DST_NAT of linux/netfilter/nf_conntrack_common.h.
const ipsDstNAT = 1 << 5

// ctStatusDNAT is "ct status dnat": the connection's destination was
// translated.
func ctStatusDNAT() nft.Frag {
	return nft.Frag{Text: "ct status dnat", Exprs: []expr.Any{
		&expr.Ct{Register: nft.Reg1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{
			SourceRegister: nft.Reg1, DestRegister: nft.Reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT),
			Xor:  binaryutil.NativeEndian.PutUint32(0),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: nft.Reg1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}}
}

// pickKey loads "ip daddr . meta l4proto . th dport . numgen random mod N"
// from reg 1 on: the service address and port the client asked for and a
// random index, the key of the endpoint maps. For node ports (np) it is
// "meta l4proto . th dport . numgen random mod N".
func pickKey(np bool, n uint32) nft.Frag {
	var f nft.Frag
	numgenReg := uint32(nft.Reg11)
	if np {
		f = protoPort()
		numgenReg = nft.Reg10
	} else {
		f = nft.Join(nft.IPv4(), nft.DaddrProtoPort())
	}
	f.Text += fmt.Sprintf(" . numgen random mod %d", n)
	f.Exprs = append(f.Exprs, &expr.Numgen{Register: numgenReg, Modulus: n, Type: unix.NFT_NG_RANDOM})
	return f
}

// pickVmap is "ip daddr . meta l4proto . th dport . numgen random mod N
// vmap @set".
func pickVmap(np bool, n uint32, set string) nft.Frag {
	return nft.Join(pickKey(np, n), nft.VmapLookup(set))
}

// pickDNAT is "dnat ip to ip daddr . meta l4proto . th dport . numgen
// random mod N map @set": the map gives address and port of the chosen
// endpoint (reg 1 and reg 9).
func pickDNAT(np bool, n uint32, set string) nft.Frag {
	f := pickKey(np, n)
	f.Text = "dnat ip to " + f.Text + " map @" + set
	f.Exprs = append(f.Exprs,
		&expr.Lookup{SourceRegister: nft.Reg1, DestRegister: nft.Reg1, IsDestRegSet: true, SetName: set},
		&expr.NAT{
			Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4,
			RegAddrMin: nft.Reg1, RegAddrMax: nft.Reg1, RegProtoMin: nft.Reg9, RegProtoMax: nft.Reg9,
			Specified: true,
		},
	)
	return f
}

// dnatTo is "dnat ip to 10.244.1.5:8080".
func dnatTo(ap netip.AddrPort) nft.Frag {
	return nft.Frag{Text: "dnat ip to " + ap.String(), Exprs: []expr.Any{
		&expr.Immediate{Register: nft.Reg1, Data: ap.Addr().AsSlice()},
		&expr.Immediate{Register: nft.Reg2, Data: binaryutil.BigEndian.PutUint16(ap.Port())},
		&expr.NAT{
			Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4,
			RegAddrMin: nft.Reg1, RegAddrMax: nft.Reg1, RegProtoMin: nft.Reg2, RegProtoMax: nft.Reg2,
			Specified: true,
		},
	}}
}

// snatTo is "snat ip to 10.244.3.1".
func snatTo(a netip.Addr) nft.Frag {
	return nft.Frag{Text: "snat ip to " + a.String(), Exprs: []expr.Any{
		&expr.Immediate{Register: nft.Reg1, Data: a.AsSlice()},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: nft.Reg1, RegAddrMax: nft.Reg1},
	}}
}

// updateSaddr is "update @set { ip saddr timeout 3h }": remember the client
// in a dynamic set, refreshing its timeout.
func updateSaddr(set string, timeout time.Duration) nft.Frag {
	f := nft.IPv4()
	f.Text = fmt.Sprintf("update @%s { ip saddr timeout %s }", set, nftDuration(timeout))
	f.Exprs = append(f.Exprs, nft.LoadAddr(nft.Saddr, nft.Reg1), &expr.Dynset{
		SrcRegKey: nft.Reg1, SetName: set, Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: timeout,
	})
	return f
}

// rejectTCPReset is "reject with tcp reset" (after a meta l4proto tcp).
func rejectTCPReset() nft.Frag {
	return nft.Frag{Text: "reject with tcp reset", Exprs: []expr.Any{
		&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
	}}
}

// rejectPortUnreachable is "reject": icmpx port unreachable, which the
// inet family turns into ICMP port unreachable for IPv4.
func rejectPortUnreachable() nft.Frag {
	return nft.Frag{Text: "reject", Exprs: []expr.Any{
		&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH},
	}}
}

// nftDuration prints a duration as nft does: days, hours, minutes,
// seconds and milliseconds, each when not zero ("3h", "1m30s").
func nftDuration(d time.Duration) string {
	ms := d.Milliseconds()
	if ms <= 0 {
		return "0s"
	}
	var b strings.Builder
	for _, u := range []struct {
		ms   int64
		name string
	}{{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}} {
		if n := ms / u.ms; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.name)
			ms -= n * u.ms
		}
	}
	return b.String()
}

// proto is an L4 protocol number.
type proto byte

const (
	protoTCP  proto = unix.IPPROTO_TCP
	protoUDP  proto = unix.IPPROTO_UDP
	protoSCTP proto = unix.IPPROTO_SCTP
)

func (p proto) String() string { return nft.L4ProtoName(byte(p)) }

// parseProto maps a Kubernetes protocol name ("" is TCP) to its number.
func parseProto(s string) (proto, bool) {
	switch strings.ToUpper(s) {
	case "", "TCP":
		return protoTCP, true
	case "UDP":
		return protoUDP, true
	case "SCTP":
		return protoSCTP, true
	}
	return 0, false
}

// Set types and elements. Concatenated keys pad every field to 4 bytes.

var (
	protoPortType         = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	npEndpointKeyType     = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeMark)
	addrProtoPortType     = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	addrProtoPortAddrType = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeIPAddr)
	addrAddrType          = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr)
	addrPortType          = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	endpointKeyType       = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeMark)
)

// appendAddrProtoPort appends "10.96.0.10 . tcp . 80".
func appendAddrProtoPort(buf []byte, a netip.Addr, p proto, port uint16) []byte {
	buf = a.AppendTo(buf)
	buf = append(buf, " . "...)
	buf = append(buf, p.String()...)
	buf = append(buf, " . "...)
	return strconv.AppendUint(buf, uint64(port), 10)
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= uint32(1)<<(32-p.Bits()) - 1
	if p.Bits() == 0 {
		v = ^uint32(0)
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// elemStore collects the elements of one fragment in one buffer, in the
// packed form nft.AppendFormatted writes, each element's range of it in
// refs. The fragBuilder makes the buffer one string, so a fragment's
// elements cost one allocation and hold no other fragment's memory; the
// buffer is reused for the next fragment. The elements keep no text: their
// formats (below) print them from their keys and values when asked.
type elemStore struct {
	buf  []byte
	refs []elemRef
}

// elemRef is element i of a fragment's list l (its index in
// portFrag.lists), buf[start:end].
type elemRef struct {
	l, i, start, end int
}

// add appends an element of format f whose kernel form is k.
func (s *elemStore) add(f nft.Format, k nftables.SetElement) {
	s.buf = nft.AppendFormatted(s.buf, f, k)
}

// The formats of the elements the compiler makes: each prints what the
// element's maker wrote, from the key and value alone (as nft prints them).
var (
	// formatDispatch is "10.96.0.10 . tcp . 80 : goto chain" ("tcp .
	// 30080 : goto chain" for a node port), or "... : drop".
	formatDispatch = nft.NewFormat(func(k []nftables.SetElement) string {
		e := k[0]
		b := readSvcKey(e.Key, len(e.Key) == 8).appendText(nil)
		return string(appendVerdictText(b, e.VerdictData))
	})
	// formatEndpoint is "10.96.0.10 . tcp . 80 . 0x00000001 : 10.244.1.5
	// . 8080".
	formatEndpoint = nft.NewFormat(func(k []nftables.SetElement) string {
		e := k[0]
		b := appendEndpointKeyOf(nil, e.Key)
		b = append(b, " : "...)
		b = netip.AddrFrom4([4]byte(e.Val[:4])).AppendTo(b)
		b = append(b, " . "...)
		return string(strconv.AppendUint(b, uint64(e.Val[4])<<8|uint64(e.Val[5]), 10))
	})
	// formatEndpointChain is "10.96.0.10 . tcp . 80 . 0x00000001 : goto
	// chain".
	formatEndpointChain = nft.NewFormat(func(k []nftables.SetElement) string {
		e := k[0]
		return string(appendVerdictText(appendEndpointKeyOf(nil, e.Key), e.VerdictData))
	})
	// formatAllow is "VIP . tcp . 80 . 192.0.2.0/24" (an address for a
	// single source).
	formatAllow = nft.NewFormat(func(k []nftables.SetElement) string {
		e := k[0]
		sk := readSvcKey(e.Key, false)
		b := appendAddrProtoPort(nil, sk.a, sk.p, sk.port)
		b = append(b, " . "...)
		lo, hi := binary.BigEndian.Uint32(e.Key[12:16]), binary.BigEndian.Uint32(e.KeyEnd[12:16])
		a := netip.AddrFrom4([4]byte(e.Key[12:16]))
		if lo == hi {
			return string(a.AppendTo(b))
		}
		return string(netip.PrefixFrom(a, 32-bits.Len32(hi-lo)).AppendTo(b))
	})
)

// appendVerdictText appends " : goto chain", or " : drop".
func appendVerdictText(b []byte, v *expr.Verdict) []byte {
	if v == nil || v.Kind != expr.VerdictGoto {
		return append(b, " : drop"...)
	}
	b = append(b, " : goto "...)
	return append(b, v.Chain...)
}

// readSvcKey reads the key svcKey.put wrote (np: a node port's).
func readSvcKey(b []byte, np bool) svcKey {
	if np {
		return svcKey{p: proto(b[0]), port: uint16(b[4])<<8 | uint16(b[5])}
	}
	return svcKey{a: netip.AddrFrom4([4]byte(b[:4])), p: proto(b[4]), port: uint16(b[8])<<8 | uint16(b[9])}
}

// appendEndpointKeyOf appends the text of an endpoint key as endpointKey
// wrote it (12 bytes for a node port's, 16 for an address's).
func appendEndpointKeyOf(buf, key []byte) []byte {
	n := len(key) - 4
	return appendEndpointKey(buf, readSvcKey(key[:n], n == 8), binary.NativeEndian.Uint32(key[n:]))
}

func putAddrProtoPort(b []byte, a netip.Addr, p proto, port uint16) {
	a4 := a.As4()
	copy(b, a4[:])
	b[4] = byte(p)
	b[8], b[9] = byte(port>>8), byte(port)
}

// svcKey is what a way in to a service port is looked up by: address,
// protocol and port, or for the node port (a invalid) protocol and port.
type svcKey struct {
	a    netip.Addr
	p    proto
	port uint16
}

func (k svcKey) np() bool { return !k.a.IsValid() }

// size is the length of the key in the dispatch maps.
func (k svcKey) size() int {
	if k.np() {
		return 8
	}
	return 12
}

// put writes the key (k.size() bytes).
func (k svcKey) put(b []byte) {
	if k.np() {
		b[0] = byte(k.p)
		b[4], b[5] = byte(k.port>>8), byte(k.port)
		return
	}
	putAddrProtoPort(b, k.a, k.p, k.port)
}

// appendText appends "10.96.0.10 . tcp . 80", or "tcp . 30080".
func (k svcKey) appendText(buf []byte) []byte {
	if k.np() {
		buf = append(buf, k.p.String()...)
		buf = append(buf, " . "...)
		return strconv.AppendUint(buf, uint64(k.port), 10)
	}
	return appendAddrProtoPort(buf, k.a, k.p, k.port)
}

// dispatchElement is "10.96.0.10 . tcp . 80 : goto chain" ("tcp . 30080
// : goto chain" for a node port), or "... : drop" when chain is empty.
func (s *elemStore) dispatchElement(k svcKey, chain string) {
	var b [12]byte
	v := expr.Verdict{Kind: expr.VerdictGoto, Chain: chain}
	if chain == "" {
		v.Kind = expr.VerdictDrop
	}
	k.put(b[:])
	s.add(formatDispatch, nftables.SetElement{Key: b[:k.size()], VerdictData: &v})
}

// allowElement is "VIP . tcp . 80 . 192.0.2.0/24": a pipapo element with an
// inclusive key end.
func (s *elemStore) allowElement(vip netip.Addr, p proto, port uint16, src netip.Prefix) {
	src = src.Masked()
	lo := src.Addr().As4()
	hi := lastAddr(src).As4()
	var b [32]byte
	putAddrProtoPort(b[:16], vip, p, port)
	copy(b[12:16], lo[:])
	putAddrProtoPort(b[16:], vip, p, port)
	copy(b[28:32], hi[:])
	s.add(formatAllow, nftables.SetElement{Key: b[:16], KeyEnd: b[16:32]})
}

func hairpinElement(a netip.Addr) nft.Element {
	b := a.As4()
	buf := make([]byte, 0, 32)
	buf = a.AppendTo(buf)
	buf = append(buf, " . "...)
	buf = a.AppendTo(buf)
	return nft.NewElement(string(buf), nftables.SetElement{Key: []byte{b[0], b[1], b[2], b[3], b[0], b[1], b[2], b[3]}})
}

// endpointKey writes the key of the endpoint maps: address . proto . port
// . index (the index host-endian, as numgen writes it), or proto . port .
// index for a node port; it returns its length.
func endpointKey(b []byte, k svcKey, index uint32) int {
	n := k.size()
	k.put(b)
	binary.NativeEndian.PutUint32(b[n:n+4], index)
	return n + 4
}

// appendEndpointKey appends "10.96.0.10 . tcp . 80 . 0x00000002" (the
// index printed as nft prints a mark).
func appendEndpointKey(buf []byte, k svcKey, index uint32) []byte {
	const digits = "0123456789abcdef"
	buf = k.appendText(buf)
	buf = append(buf, " . 0x"...)
	for shift := 28; shift >= 0; shift -= 4 {
		buf = append(buf, digits[(index>>shift)&0xf])
	}
	return buf
}

// endpointElement is "10.96.0.10 . tcp . 80 . 0x00000001 : 10.244.1.5 . 8080".
func (s *elemStore) endpointElement(k svcKey, index uint32, ep netip.AddrPort) {
	var b [24]byte
	n := endpointKey(b[:], k, index)
	e4 := ep.Addr().As4()
	copy(b[n:n+4], e4[:])
	b[n+4], b[n+5] = byte(ep.Port()>>8), byte(ep.Port())
	s.add(formatEndpoint, nftables.SetElement{Key: b[:n], Val: b[n : n+8]})
}

// endpointChainElement is "10.96.0.10 . tcp . 80 . 0x00000001 : goto chain".
func (s *elemStore) endpointChainElement(k svcKey, index uint32, chain string) {
	var b [16]byte
	n := endpointKey(b[:], k, index)
	s.add(formatEndpointChain, nftables.SetElement{Key: b[:n], VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain}})
}

// addrRange is an inclusive range of IPv4 addresses, as numbers.
type addrRange struct{ lo, hi uint32 }

func u32Bytes(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }

func appendU32Addr(b []byte, v uint32) []byte {
	return netip.AddrFrom4([4]byte(u32Bytes(v))).AppendTo(b)
}

// rangeElement is a range of an rbtree interval set, printed as nft does
// (an address, a prefix, or "first-last"): a start element and an end
// element one past the range (none when the range runs to the last
// address).
func rangeElement(r addrRange) nft.Element {
	b := appendU32Addr(nil, r.lo)
	if size := uint64(r.hi) - uint64(r.lo) + 1; r.lo == r.hi {
	} else if size&(size-1) == 0 && uint64(r.lo)%size == 0 {
		b = append(b, '/')
		b = strconv.AppendInt(b, int64(32-bits.TrailingZeros64(size)), 10)
	} else {
		b = append(b, '-')
		b = appendU32Addr(b, r.hi)
	}
	k := []nftables.SetElement{{Key: u32Bytes(r.lo)}}
	if r.hi != ^uint32(0) {
		k = append(k, nftables.SetElement{Key: u32Bytes(r.hi + 1), IntervalEnd: true})
	}
	return nft.NewElement(string(b), k...)
}
