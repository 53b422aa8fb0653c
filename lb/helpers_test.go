package lb

import (
	"net/netip"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var cmpOpts = []cmp.Option{cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}), cmpopts.EquateEmpty()}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func rng(a, b string) Range { return Range{Start: ip(a), End: ip(b)} }

func mustPool(name string, auto bool, addrs ...string) Pool {
	p, err := ParsePool(name, addrs, auto)
	if err != nil {
		panic(err)
	}
	return p
}
