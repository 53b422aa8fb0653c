package nft

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/netloom/netloom/nft/nfttest"
)

// Root benchmarks, each in a network namespace of its own.

// BenchmarkRuleEdit: one rule changed (back and forth) in a 10,000-rule
// chain. "edit" is the Applier as it is; "refill" flushes and refills the
// chain (the former behaviour) on the Applier's own socket, "refill-flush"
// also sends with nftables.Conn.Flush (the former behaviour exactly).
func BenchmarkRuleEdit(b *testing.B) {
	nfttest.NeedRoot(b)
	models := [2]Model{bigChainModel(10000, 5000), bigChainModel(10000)}
	for _, bm := range []struct {
		name string
		opts []Option
	}{
		{"edit", nil},
		{"refill", []Option{withRefillOnly()}},
		{"refill-flush", []Option{withRefillOnly(), withLibraryFlush()}},
	} {
		b.Run(bm.name, func(b *testing.B) {
			ns := nfttest.NewNS(b)
			a := NewApplier(append(bm.opts, WithNetNS(nfttest.NSHandle(b, ns)))...)
			b.Cleanup(func() { a.Close() })
			if err := a.Apply(models[1]); err != nil {
				b.Fatal(err)
			}
			i := 0
			for b.Loop() {
				if err := a.Apply(models[i%2]); err != nil {
					b.Fatal(err)
				}
				i++
				if st := a.LastApply(); !st.Incremental {
					b.Fatalf("not incremental: %+v", st)
				}
			}
			b.ReportMetric(float64(a.LastApply().Messages), "msgs")
		})
	}
}

// BenchmarkFullApply: the whole table replaced, for a table shaped like
// 10,000 NetworkPolicies' (some 1,800 chains, 16,000 rules, 1,200 sets of
// 20,000 elements): on the Applier's own socket ("own") and with
// nftables.Conn.Flush ("flush", the former behaviour).
func BenchmarkFullApply(b *testing.B) {
	nfttest.NeedRoot(b)
	m := policyLikeModel(1800, 9, 1200, 17)
	for _, bm := range []struct {
		name string
		opts []Option
	}{
		{"own", nil},
		{"flush", []Option{withLibraryFlush()}},
	} {
		b.Run(bm.name, func(b *testing.B) {
			ns := nfttest.NewNS(b)
			a := NewApplier(append(bm.opts, WithNetNS(nfttest.NSHandle(b, ns)))...)
			b.Cleanup(func() { a.Close() })
			for b.Loop() {
				a.Invalidate()
				if err := a.Apply(m); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(a.LastApply().Messages), "msgs")
		})
	}
}

// policyLikeModel has chains regular chains of rules rules each, jumped to
// from the forward chain; every other rule looks up one of sets sets of
// elems addresses.
func policyLikeModel(chains, rules, sets, elems int) Model {
	cs := map[string][]Rule{}
	for c := range chains {
		rs := make([]Rule, rules)
		for i := range rs {
			if i%2 == 0 {
				rs[i] = setRule(fmt.Sprintf("np-ns%04d-policy-ingress-peers", (c*rules+i)%sets))
			} else {
				rs[i] = ifRule(fmt.Sprintf("p%d-%d", c, i), i%3 == 0)
			}
		}
		cs[fmt.Sprintf("np-class-%04d", c)] = rs
	}
	m := editModel(cs, nil)
	base := netip.MustParseAddr("10.0.0.0").As4()
	n := 0
	for s := range sets {
		var addrs []string
		for range elems {
			a := base
			a[1], a[2], a[3] = byte(n>>16), byte(n>>8), byte(n)
			n++
			addrs = append(addrs, netip.AddrFrom4(a).String())
		}
		m.Sets = append(m.Sets, addrSet(fmt.Sprintf("np-ns%04d-policy-ingress-peers", s), addrs...))
	}
	return m
}
