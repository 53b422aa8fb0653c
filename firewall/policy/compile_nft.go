package policy

import (
	"fmt"
	"math/bits"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/netloom/netloom/nft"
	"golang.org/x/sys/unix"
)

// The building blocks of the compiled rules that only NetworkPolicy uses;
// the shared ones (nft.Frag, NewRule, IPv4, Addr, Lookup, verdicts...)
// are package nft's. Each Frag carries its nft text (as `nft
// list` prints it) next to the expressions sent to the kernel, so the two
// cannot drift apart. The root tests compare nft's listing of an applied
// model with Model.String.

// protoPort is `meta l4proto . th dport` (key of the port sets).
func protoPort() nft.Frag {
	return nft.Frag{Text: "meta l4proto . th dport", Exprs: nft.LoadL4ProtoDport(nft.Reg1, nft.Reg9)}
}

func counterRef(name string) nft.Frag {
	return nft.Frag{Text: fmt.Sprintf("counter name %q", name), Exprs: []expr.Any{
		&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: name},
	}}
}

// logLimited is `limit rate N/second log prefix "..."` (burst 5, nft's
// default, which it does not print).
func logLimited(rate uint64, prefix string) nft.Frag {
	return nft.Frag{
		Text: fmt.Sprintf("limit rate %d/second log prefix %q", rate, prefix),
		Exprs: []expr.Any{
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

func verdictMap(name string, elems []nft.Element) nft.Set {
	return nft.Set{
		Name: name, Type: "ipv4_addr : verdict", Elements: elems,
		Spec: nftables.Set{KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict, IsMap: true},
	}
}

func vmapElement(a interface{ As4() [4]byte }, chain string) nft.Element {
	b := a.As4()
	return nft.NewElement(rangeText(ipRange{be32v(b), be32v(b)})+" : jump "+chain, nftables.SetElement{
		Key:         b[:],
		VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: chain},
	})
}

func addrIntervalSet(name string, elems []nft.Element) *nft.Set {
	return &nft.Set{
		Name: name, Type: "ipv4_addr", Flags: []string{"interval"}, Elements: elems,
		Spec: nftables.Set{KeyType: nftables.TypeIPAddr, Interval: true},
	}
}

func protoPortSet(name string, elems []nft.Element) *nft.Set {
	return &nft.Set{
		Name: name, Type: "inet_proto . inet_service", Flags: []string{"interval"}, Elements: elems,
		Spec: nftables.Set{KeyType: protoPortType, Interval: true, Concatenation: true},
	}
}

func addrProtoPortSet(name string, elems []nft.Element) *nft.Set {
	return &nft.Set{
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
func addrIntervalElement(r ipRange) nft.Element {
	k := []nftables.SetElement{{Key: be32(r.lo)}}
	if r.hi != ^uint32(0) {
		k = append(k, nftables.SetElement{Key: be32(r.hi + 1), IntervalEnd: true})
	}
	return nft.NewElement(rangeText(r), k...)
}

// Concatenated interval sets (pipapo) take each element as one key and one
// inclusive key end; every field is padded to 4 bytes.

func protoField(p uint8) []byte { return []byte{p, 0, 0, 0} }

func portField(p uint16) []byte { return []byte{byte(p >> 8), byte(p), 0, 0} }

func portText(pr portRange) string {
	if pr.from == pr.to {
		return fmt.Sprintf("%s . %d", nft.L4ProtoName(pr.proto), pr.from)
	}
	return fmt.Sprintf("%s . %d-%d", nft.L4ProtoName(pr.proto), pr.from, pr.to)
}

func protoPortElement(pr portRange) nft.Element {
	key := append(protoField(pr.proto), portField(pr.from)...)
	end := append(protoField(pr.proto), portField(pr.to)...)
	return nft.NewElement(portText(pr), nftables.SetElement{Key: key, KeyEnd: end})
}

func addrProtoPortElement(r ipRange, pr portRange) nft.Element {
	key := append(append(be32(r.lo), protoField(pr.proto)...), portField(pr.from)...)
	end := append(append(be32(r.hi), protoField(pr.proto)...), portField(pr.to)...)
	return nft.NewElement(rangeText(r)+" . "+portText(pr), nftables.SetElement{Key: key, KeyEnd: end})
}
