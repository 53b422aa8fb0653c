package ipam

import (
	"errors"
	"fmt"
	"hash/fnv"
	"iter"
	"net/netip"
	"slices"
)

// ErrFull is matched (with errors.Is) by the error PickFree returns when the
// cluster CIDR has no free subnet of the wanted size.
var ErrFull = errors.New("cluster CIDR has no free subnet left")

type fullError struct {
	cidr netip.Prefix
	mask int
}

func (e *fullError) Error() string {
	return fmt.Sprintf("cluster CIDR %s has no free /%d subnet left", e.cidr, e.mask)
}

func (e *fullError) Is(target error) bool { return target == ErrFull }

// maxIndexBits bounds how many subnet-index bits PickFree works with: a
// cluster CIDR may be split in at most 2^63 node subnets.
const maxIndexBits = 63

// CheckMask reports whether node subnets of size /mask can be carved out of
// cidr: cidr must be valid, mask at least cidr's length and at most /30
// (IPv4) or /126 (IPv6), so each node subnet keeps a network address, a
// gateway, one pod address and a last address.
func CheckMask(cidr netip.Prefix, mask int) error {
	if !cidr.IsValid() {
		return errors.New("cluster CIDR is not set; set it to a prefix such as 10.244.0.0/16")
	}
	maxMask := 30
	if cidr.Addr().Is6() {
		maxMask = 126
	}
	if mask < cidr.Bits() || mask > maxMask {
		return fmt.Errorf("node subnet size /%d does not fit cluster CIDR %s; use a size between /%d and /%d", mask, cidr.Masked(), cidr.Bits(), maxMask)
	}
	if mask-cidr.Bits() > maxIndexBits {
		return fmt.Errorf("node subnet size /%d splits cluster CIDR %s in more than 2^%d subnets; use a size of at most /%d", mask, cidr.Masked(), maxIndexBits, cidr.Bits()+maxIndexBits)
	}
	return nil
}

// Gateway returns the first address of subnet (10.244.3.1 for 10.244.3.0/24),
// the address of the node's bridge. It returns the zero Addr for an invalid
// prefix.
func Gateway(subnet netip.Prefix) netip.Addr {
	if !subnet.IsValid() {
		return netip.Addr{}
	}
	return subnet.Masked().Addr().Next()
}

// Subnets yields the /mask subnets of cidr in address order. It yields
// nothing when CheckMask(cidr, mask) fails.
func Subnets(cidr netip.Prefix, mask int) iter.Seq[netip.Prefix] {
	return func(yield func(netip.Prefix) bool) {
		if CheckMask(cidr, mask) != nil {
			return
		}
		sp := newSpace(cidr, mask)
		for i := uint64(0); i < sp.n; i++ {
			if !yield(sp.subnet(i)) {
				return
			}
		}
	}
}

// PickFree returns the subnet node should hold: the one it already owns in t
// when that is a /mask inside cidr, otherwise the first /mask subnet of cidr
// that overlaps no subnet in t.Owner (reserved subnets are owners too),
// scanning from an offset derived from a hash of the node name and wrapping
// around. Subnets in t outside cidr are ignored. The error matches ErrFull
// when every subnet is taken; owners are never displaced.
func PickFree(cidr netip.Prefix, mask int, t Table, node string) (netip.Prefix, error) {
	if err := CheckMask(cidr, mask); err != nil {
		return netip.Prefix{}, fmt.Errorf("pick subnet: %w", err)
	}
	cidr = cidr.Masked()
	if own, ok := t.ByNode[node]; ok && fits(cidr, mask, own) {
		return own, nil
	}
	sp := newSpace(cidr, mask)
	taken := sp.takenRanges(t)
	i, ok := firstFree(taken, sp.n, sp.start(node))
	if !ok {
		return netip.Prefix{}, &fullError{cidr: cidr, mask: mask}
	}
	return sp.subnet(i), nil
}

// fits reports whether p is a proper /mask subnet inside cidr.
func fits(cidr netip.Prefix, mask int, p netip.Prefix) bool {
	return p.IsValid() && p.Bits() == mask && p == p.Masked() && cidr.Bits() <= mask && cidr.Contains(p.Addr())
}

// space is the set of /mask subnets of a cluster CIDR, numbered 0..n-1.
type space struct {
	cidr     netip.Prefix // masked
	mask     int
	hostBits uint // address bits below mask
	n        uint64
	base     u128
}

func newSpace(cidr netip.Prefix, mask int) space {
	cidr = cidr.Masked()
	return space{
		cidr:     cidr,
		mask:     mask,
		hostBits: uint(cidr.Addr().BitLen() - mask),
		n:        uint64(1) << uint(mask-cidr.Bits()),
		base:     u128From(cidr.Addr()),
	}
}

func (s space) subnet(i uint64) netip.Prefix {
	a := s.base.or(u128{lo: i}.shl(s.hostBits)).addr(s.cidr.Addr().Is4())
	return netip.PrefixFrom(a, s.mask)
}

// index is the number of the subnet holding a, which must be inside cidr.
func (s space) index(a netip.Addr) uint64 {
	return u128From(a).shr(s.hostBits).lo & (s.n - 1)
}

func (s space) start(node string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(node))
	return h.Sum64() & (s.n - 1) // n is a power of two
}

// span is an inclusive range of subnet indexes.
type span struct{ first, last uint64 }

// takenRanges returns the merged, sorted index ranges covered by owners in t.
func (s space) takenRanges(t Table) []span {
	var spans []span
	add := func(p netip.Prefix) {
		if !p.IsValid() {
			return
		}
		p = p.Masked()
		if !p.Overlaps(s.cidr) {
			return
		}
		if p.Bits() <= s.cidr.Bits() { // p holds the whole CIDR
			spans = append(spans, span{0, s.n - 1})
			return
		}
		first := p.Addr()
		last := u128From(first).or(u128Ones(uint(first.BitLen() - p.Bits()))).addr(first.Is4())
		spans = append(spans, span{s.index(first), s.index(last)})
	}
	for p := range t.Owner {
		add(p)
	}
	for p := range t.Reserved {
		add(p)
	}
	slices.SortFunc(spans, func(a, b span) int {
		switch {
		case a.first < b.first:
			return -1
		case a.first > b.first:
			return 1
		}
		return 0
	})
	merged := spans[:0]
	for _, sp := range spans {
		if k := len(merged) - 1; k >= 0 && sp.first <= merged[k].last+1 { // last < 2^63: no overflow
			merged[k].last = max(merged[k].last, sp.last)
			continue
		}
		merged = append(merged, sp)
	}
	return merged
}

// firstFree returns the first index in [0,n) at or after start (wrapping)
// that lies in no span of taken (sorted, merged, disjoint).
func firstFree(taken []span, n, start uint64) (uint64, bool) {
	var covered uint64
	for _, sp := range taken {
		covered += sp.last - sp.first + 1
	}
	if covered >= n {
		return 0, false
	}
	// k = first span whose last >= start.
	k, _ := slices.BinarySearchFunc(taken, start, func(sp span, v uint64) int {
		if sp.last < v {
			return -1
		}
		return 1
	})
	i := start
	for range len(taken) + 1 {
		if k == len(taken) {
			if i < n {
				return i, true
			}
			i, k = 0, 0
			continue
		}
		if i < taken[k].first {
			return i, true
		}
		i = taken[k].last + 1
		k++
		if i == n {
			i, k = 0, 0
		}
	}
	// Unreachable when covered < n; be safe.
	return 0, false
}

// u128 is an address as a 128-bit number (IPv4 in the low 32 bits).
type u128 struct{ hi, lo uint64 }

func u128From(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{lo: uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])}
	}
	b := a.As16()
	var u u128
	for i := range 8 {
		u.hi = u.hi<<8 | uint64(b[i])
		u.lo = u.lo<<8 | uint64(b[8+i])
	}
	return u
}

func (u u128) addr(is4 bool) netip.Addr {
	if is4 {
		v := uint32(u.lo)
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	var b [16]byte
	for i := range 8 {
		b[7-i] = byte(u.hi >> (8 * i))
		b[15-i] = byte(u.lo >> (8 * i))
	}
	return netip.AddrFrom16(b)
}

func (u u128) shl(n uint) u128 {
	switch {
	case n == 0:
		return u
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{hi: u.lo << (n - 64)}
	}
	return u128{hi: u.hi<<n | u.lo>>(64-n), lo: u.lo << n}
}

func (u u128) shr(n uint) u128 {
	switch {
	case n == 0:
		return u
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{lo: u.hi >> (n - 64)}
	}
	return u128{hi: u.hi >> n, lo: u.lo>>n | u.hi<<(64-n)}
}

func (u u128) or(v u128) u128 { return u128{hi: u.hi | v.hi, lo: u.lo | v.lo} }

// u128Ones has the low n bits set.
func u128Ones(n uint) u128 {
	switch {
	case n == 0:
		return u128{}
	case n >= 128:
		return u128{hi: ^uint64(0), lo: ^uint64(0)}
	case n >= 64:
		return u128{hi: ^uint64(0) >> (128 - n), lo: ^uint64(0)}
	}
	return u128{lo: ^uint64(0) >> (64 - n)}
}
