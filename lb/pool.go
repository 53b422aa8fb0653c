package lb

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// PoolKind is the kind of an address pool (apiVersion netloom.io/v1alpha1).
const PoolKind = "AddressPool"

// FieldError is an invalid field of one object: one line, naming the
// object, the field and what is wrong. The agent may put the document
// number in front (it knows Kind, Namespace and Name).
type FieldError struct {
	Kind, Namespace, Name string
	Field                 string // e.g. "spec.addresses[1]"
	Msg                   string
}

func (e *FieldError) Error() string {
	obj := e.Name
	if e.Namespace != "" {
		obj = e.Namespace + "/" + e.Name
	}
	return fmt.Sprintf("%s %s: %s: %s", e.Kind, obj, e.Field, e.Msg)
}

func poolError(pool string, i int, format string, a ...any) *FieldError {
	return &FieldError{Kind: PoolKind, Name: pool, Field: fmt.Sprintf("spec.addresses[%d]", i), Msg: fmt.Sprintf(format, a...)}
}

// String returns "start-end", or the address alone when the range holds one.
func (r Range) String() string {
	if r.Start == r.End {
		return r.Start.String()
	}
	return r.Start.String() + "-" + r.End.String()
}

// Contains reports whether a is in r.
func (r Range) Contains(a netip.Addr) bool {
	a = a.Unmap()
	return a.BitLen() == r.Start.BitLen() && a.Compare(r.Start) >= 0 && a.Compare(r.End) <= 0
}

// Overlaps reports whether r and o share an address.
func (r Range) Overlaps(o Range) bool {
	return r.Start.BitLen() == o.Start.BitLen() && r.Start.Compare(o.End) <= 0 && o.Start.Compare(r.End) <= 0
}

// PrefixRange returns all addresses of p as a range.
func PrefixRange(p netip.Prefix) Range {
	p = p.Masked()
	return Range{Start: p.Addr(), End: lastAddr(p)}
}

// lastAddr returns the last address of p (the broadcast address for IPv4).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// ParseRange parses one entry of an AddressPool's spec.addresses:
//   - a CIDR ("192.168.1.240/28"): all its addresses, except that an IPv4
//     CIDR of /30 or shorter leaves out its network and broadcast address
//     (192.168.1.241-192.168.1.254 here);
//   - a range "a.b.c.d-a.b.c.e" (spaces around "-" allowed), both ends
//     included, both of one family;
//   - a single address.
//
// IPv4-mapped IPv6 addresses are taken as IPv4.
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return Range{}, fmt.Errorf("empty address; want a CIDR (192.168.1.240/28) or a range (192.168.1.240-192.168.1.250)")
	case strings.Contains(s, "/"):
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Range{}, fmt.Errorf("%q is not a CIDR; want e.g. 192.168.1.240/28", s)
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return Range{}, fmt.Errorf("%q is not a CIDR; want e.g. 192.168.1.240/28", s)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Masked() != p {
			return Range{}, fmt.Errorf("%s has host bits set; did you mean %s?", s, p.Masked())
		}
		r := PrefixRange(p)
		if p.Addr().Is4() && p.Bits() <= 30 {
			r.Start, r.End = r.Start.Next(), r.End.Prev()
		}
		return r, nil
	case strings.Contains(s, "-"):
		a, b, _ := strings.Cut(s, "-")
		start, err1 := netip.ParseAddr(strings.TrimSpace(a))
		end, err2 := netip.ParseAddr(strings.TrimSpace(b))
		if err1 != nil || err2 != nil || start.Zone() != "" || end.Zone() != "" {
			return Range{}, fmt.Errorf("%q is not a range of addresses; want e.g. 192.168.1.240-192.168.1.250", s)
		}
		start, end = start.Unmap(), end.Unmap()
		if start.BitLen() != end.BitLen() {
			return Range{}, fmt.Errorf("range %s mixes IPv4 and IPv6", s)
		}
		if start.Compare(end) > 0 {
			return Range{}, fmt.Errorf("range %s starts after it ends", s)
		}
		return Range{Start: start, End: end}, nil
	default:
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return Range{}, fmt.Errorf("%q is not a CIDR or a range; want e.g. 192.168.1.240/28 or 192.168.1.240-192.168.1.250", s)
		}
		a = a.Unmap()
		return Range{Start: a, End: a}, nil
	}
}

// ParsePool builds a pool from its name, spec.addresses and spec.autoAssign.
// Ranges[i] is spec.addresses[i]. Errors are *FieldError naming the pool and
// the entry: bad syntax, a range that starts after it ends, no addresses,
// two entries that overlap.
func ParsePool(name string, addresses []string, autoAssign bool) (Pool, error) {
	p := Pool{Name: name, AutoAssign: autoAssign, Ranges: make([]Range, 0, len(addresses))}
	if len(addresses) == 0 {
		return Pool{}, &FieldError{Kind: PoolKind, Name: name, Field: "spec.addresses", Msg: "no addresses; give at least one CIDR or range"}
	}
	for i, s := range addresses {
		r, err := ParseRange(s)
		if err != nil {
			return Pool{}, poolError(name, i, "%v", err)
		}
		for j, o := range p.Ranges {
			if r.Overlaps(o) {
				return Pool{}, poolError(name, i, "%s overlaps spec.addresses[%d] (%s)", r, j, o)
			}
		}
		p.Ranges = append(p.Ranges, r)
	}
	return p, nil
}

// Contains reports whether a is in one of the pool's ranges.
func (p Pool) Contains(a netip.Addr) bool {
	for _, r := range p.Ranges {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

// Size returns the number of addresses in the pool, capped at max uint64.
func (p Pool) Size() uint64 {
	var n uint64
	for _, r := range p.Ranges {
		n = satAdd(n, rangeSize(r))
	}
	return n
}

func satAdd(a, b uint64) uint64 {
	if a+b < a {
		return ^uint64(0)
	}
	return a + b
}

// rangeSize returns the number of addresses of r, capped at max uint64.
func rangeSize(r Range) uint64 {
	s, e := u128From(r.Start), u128From(r.End)
	hi, lo := e.hi-s.hi, e.lo-s.lo
	if e.lo < s.lo {
		hi--
	}
	if hi != 0 || lo == ^uint64(0) {
		return ^uint64(0)
	}
	return lo + 1
}

type u128 struct{ hi, lo uint64 }

func u128From(a netip.Addr) u128 {
	b := a.As16()
	var u u128
	for i := range 8 {
		u.hi = u.hi<<8 | uint64(b[i])
		u.lo = u.lo<<8 | uint64(b[8+i])
	}
	return u
}

// checkPool checks the ranges of p against the cluster and service CIDRs
// (when valid) and against the ranges of others (pools with other names).
func checkPool(p Pool, others []Pool, clusterCIDR, serviceCIDR netip.Prefix) error {
	for i, r := range p.Ranges {
		if clusterCIDR.IsValid() && r.Overlaps(PrefixRange(clusterCIDR)) {
			return poolError(p.Name, i, "%s overlaps the cluster CIDR %s; use addresses of the hosts' network outside it", r, clusterCIDR.Masked())
		}
		if serviceCIDR.IsValid() && r.Overlaps(PrefixRange(serviceCIDR)) {
			return poolError(p.Name, i, "%s overlaps the service CIDR %s; use addresses of the hosts' network outside it", r, serviceCIDR.Masked())
		}
		for _, o := range others {
			if o.Name == p.Name {
				continue
			}
			for _, or := range o.Ranges {
				if r.Overlaps(or) {
					return poolError(p.Name, i, "%s overlaps AddressPool %s (%s); pools must not share addresses", r, o.Name, or)
				}
			}
		}
	}
	return nil
}

// ValidatePools checks that no pool overlaps another pool, the cluster CIDR
// or the service CIDR (either may be the zero Prefix to skip it). Pools are
// checked in name order; the first problem is returned as a *FieldError.
func ValidatePools(pools []Pool, clusterCIDR, serviceCIDR netip.Prefix) error {
	sorted := slices.SortedFunc(slices.Values(pools), func(a, b Pool) int { return cmp.Compare(a.Name, b.Name) })
	for i, p := range sorted {
		if err := checkPool(p, sorted[:i], clusterCIDR, serviceCIDR); err != nil {
			return err
		}
		// Only the earlier pools: an overlap is reported once, on the
		// later name; the CIDRs are checked for every pool.
	}
	return nil
}

// CheckPool checks p against the pools accepted before it and the cluster
// and service CIDRs (the zero Prefix skips one), as ValidatePools does:
// for sources that take pools one at a time (Kubernetes AddressPools,
// oldest first).
func CheckPool(p Pool, accepted []Pool, clusterCIDR, serviceCIDR netip.Prefix) error {
	return checkPool(p, accepted, clusterCIDR, serviceCIDR)
}
