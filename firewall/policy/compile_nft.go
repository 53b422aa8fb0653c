package policy

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/netloom/netloom/firewall"
	"golang.org/x/sys/unix"
)

// The building blocks of the compiled rules. Like the firewall package's
// own, each frag carries its nft text (as `nft list` prints it; empty for
// the hidden `meta nfproto` dependency) next to the expressions sent to the
// kernel, so the two cannot drift apart. The root tests compare nft's
// listing of an applied model with Model.String.

type frag struct {
	text  string
	exprs []expr.Any
}

func rule(fs ...frag) firewall.Rule {
	var texts []string
	var exprs []expr.Any
	for _, f := range fs {
		if f.text != "" {
			texts = append(texts, f.text)
		}
		exprs = append(exprs, f.exprs...)
	}
	return firewall.Rule{Text: strings.Join(texts, " "), Exprs: exprs}
}

// Registers: NFT_REG_1 is the first 16-byte data register; 32-bit
// registers (NFT_REG32_00 = 8 ...) overlay the same storage, so a
// concatenation starting in reg 1 continues in reg 9, 10...
const (
	reg1    = 1
	reg32_1 = 9
	reg32_2 = 10
)

// ipv4 is the `meta nfproto ipv4` dependency nft adds before ip payload
// matches in an inet table (and hides when listing).
func ipv4() frag {
	return frag{exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.NFPROTO_IPV4}},
	}}
}

type addrField int

const (
	srcAddr addrField = iota
	dstAddr
)

// addr loads the IPv4 source or destination address into reg 1.
func addr(f addrField) frag {
	off, name := uint32(12), "ip saddr"
	if f == dstAddr {
		off, name = 16, "ip daddr"
	}
	return frag{text: name, exprs: []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
	}}
}

// l4protoDport loads `meta l4proto . th dport` from register first on.
func l4protoDport(first, second uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: first},
		&expr.Payload{DestRegister: second, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// protoPort is `meta l4proto . th dport` (key of the port sets).
func protoPort() frag {
	return frag{text: "meta l4proto . th dport", exprs: l4protoDport(reg1, reg32_1)}
}

// daddrProtoPort is `ip daddr . meta l4proto . th dport` (key of the
// named-port sets).
func daddrProtoPort() frag {
	f := addr(dstAddr)
	f.text += " . meta l4proto . th dport"
	f.exprs = append(f.exprs, l4protoDport(reg32_1, reg32_2)...)
	return f
}

func lookup(set string) frag {
	return frag{text: "@" + set, exprs: []expr.Any{&expr.Lookup{SourceRegister: reg1, SetName: set}}}
}

func vmapLookup(set string) frag {
	return frag{text: "vmap @" + set, exprs: []expr.Any{
		&expr.Lookup{SourceRegister: reg1, SetName: set, DestRegister: 0, IsDestRegSet: true},
	}}
}

func counterRef(name string) frag {
	return frag{text: fmt.Sprintf("counter name %q", name), exprs: []expr.Any{
		&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: name},
	}}
}

func verdict(kind string) frag {
	k := map[string]expr.VerdictKind{
		"accept": expr.VerdictAccept, "drop": expr.VerdictDrop, "return": expr.VerdictReturn,
	}[kind]
	return frag{text: kind, exprs: []expr.Any{&expr.Verdict{Kind: k}}}
}

// Conntrack state bits.
const (
	ctInvalid     = expr.CtStateBitINVALID
	ctEstablished = expr.CtStateBitESTABLISHED
	ctRelated     = expr.CtStateBitRELATED
)

func ctState(mask uint32) frag {
	var names []string
	for _, s := range []struct {
		bit  uint32
		name string
	}{{ctInvalid, "invalid"}, {ctEstablished, "established"}, {ctRelated, "related"}} {
		if mask&s.bit != 0 {
			names = append(names, s.name)
		}
	}
	return frag{
		text: "ct state " + strings.Join(names, ","),
		exprs: []expr.Any{
			&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
			&expr.Bitwise{
				SourceRegister: reg1, DestRegister: reg1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(mask),
				Xor:  binaryutil.NativeEndian.PutUint32(0),
			},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(0)},
		},
	}
}

// logLimited is `limit rate N/second log prefix "..."` (burst 5, nft's
// default, which it does not print).
func logLimited(rate uint64, prefix string) frag {
	return frag{
		text: fmt.Sprintf("limit rate %d/second log prefix %q", rate, prefix),
		exprs: []expr.Any{
			&expr.Limit{Type: expr.LimitTypePkts, Rate: rate, Unit: expr.LimitTimeSecond, Burst: 5},
			&expr.Log{Key: 1 << unix.NFTA_LOG_PREFIX, Data: []byte(prefix)},
		},
	}
}

// Sets.

var (
	protoPortType     = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	addrProtoPortType = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
)

func verdictMap(name string, elems []firewall.Element) firewall.Set {
	return firewall.Set{
		Name: name, Type: "ipv4_addr : verdict", Elements: elems,
		Spec: nftables.Set{KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict, IsMap: true},
	}
}

func vmapElement(a interface{ As4() [4]byte }, chain string) firewall.Element {
	b := a.As4()
	return firewall.Element{
		Text: rangeText(ipRange{be32v(b), be32v(b)}) + " : jump " + chain,
		Kernel: []nftables.SetElement{{
			Key:         b[:],
			VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: chain},
		}},
	}
}

func addrIntervalSet(name string, elems []firewall.Element) *firewall.Set {
	return &firewall.Set{
		Name: name, Type: "ipv4_addr", Flags: []string{"interval"}, Elements: elems,
		Spec: nftables.Set{KeyType: nftables.TypeIPAddr, Interval: true},
	}
}

func protoPortSet(name string, elems []firewall.Element) *firewall.Set {
	return &firewall.Set{
		Name: name, Type: "inet_proto . inet_service", Flags: []string{"interval"}, Elements: elems,
		Spec: nftables.Set{KeyType: protoPortType, Interval: true, Concatenation: true},
	}
}

func addrProtoPortSet(name string, elems []firewall.Element) *firewall.Set {
	return &firewall.Set{
		Name: name, Type: "ipv4_addr . inet_proto . inet_service", Flags: []string{"interval"}, Elements: elems,
		Spec: nftables.Set{KeyType: addrProtoPortType, Interval: true, Concatenation: true},
	}
}

func be32v(b [4]byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func be32(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }

// rangeText prints an address range as nft does: an address, a prefix, or
// "first-last".
func rangeText(r ipRange) string {
	b := make([]byte, 0, 32)
	b = appendAddr(b, r.lo)
	if r.lo == r.hi {
		return string(b)
	}
	size := uint64(r.hi) - uint64(r.lo) + 1
	if size&(size-1) == 0 && uint64(r.lo)%size == 0 {
		b = append(b, '/')
		return string(strconv.AppendInt(b, int64(32-bits.TrailingZeros64(size)), 10))
	}
	b = append(b, '-')
	return string(appendAddr(b, r.hi))
}

func appendAddr(b []byte, v uint32) []byte {
	for i := 3; i >= 0; i-- {
		b = strconv.AppendUint(b, uint64(byte(v>>(8*i))), 10)
		if i > 0 {
			b = append(b, '.')
		}
	}
	return b
}

// addrIntervalElement is a range of an rbtree interval set: a start
// element and an end element one past the range (none when the range runs
// to the last address).
func addrIntervalElement(r ipRange) firewall.Element {
	k := []nftables.SetElement{{Key: be32(r.lo)}}
	if r.hi != ^uint32(0) {
		k = append(k, nftables.SetElement{Key: be32(r.hi + 1), IntervalEnd: true})
	}
	return firewall.Element{Text: rangeText(r), Kernel: k}
}

// Concatenated interval sets (pipapo) take each element as one key and one
// inclusive key end; every field is padded to 4 bytes.

func protoField(p uint8) []byte { return []byte{p, 0, 0, 0} }

func portField(p uint16) []byte { return []byte{byte(p >> 8), byte(p), 0, 0} }

func portText(pr portRange) string {
	if pr.from == pr.to {
		return fmt.Sprintf("%s . %d", protoName(pr.proto), pr.from)
	}
	return fmt.Sprintf("%s . %d-%d", protoName(pr.proto), pr.from, pr.to)
}

func protoPortElement(pr portRange) firewall.Element {
	key := append(protoField(pr.proto), portField(pr.from)...)
	end := append(protoField(pr.proto), portField(pr.to)...)
	return firewall.Element{Text: portText(pr), Kernel: []nftables.SetElement{{Key: key, KeyEnd: end}}}
}

func addrProtoPortElement(r ipRange, pr portRange) firewall.Element {
	key := append(append(be32(r.lo), protoField(pr.proto)...), portField(pr.from)...)
	end := append(append(be32(r.hi), protoField(pr.proto)...), portField(pr.to)...)
	return firewall.Element{
		Text:   rangeText(r) + " . " + portText(pr),
		Kernel: []nftables.SetElement{{Key: key, KeyEnd: end}},
	}
}
