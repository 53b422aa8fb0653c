package nft

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/netloom/netloom/nft/nfttest"
)

// ruleTexts are the texts of rules.
func ruleTexts(rs []Rule) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Text
	}
	return out
}

func textRules(texts ...string) []Rule {
	out := make([]Rule, len(texts))
	for i, t := range texts {
		out[i] = Rule{Text: t}
	}
	return out
}

// simulate applies plan to a chain of old rules with handles 1..n the way
// the kernel does and returns the texts of the result; new rules get the
// handles n+1...
func simulate(t *testing.T, old, new []Rule, plan *rulePlan) []string {
	t.Helper()
	type kr struct {
		h    uint64
		text string
	}
	chain := make([]kr, len(old))
	for i, r := range old {
		chain[i] = kr{uint64(i + 1), r.Text}
	}
	next := uint64(len(old) + 1)
	find := func(h uint64) int {
		for i, r := range chain {
			if r.h == h {
				return i
			}
		}
		t.Fatalf("handle %d not in the chain", h)
		return -1
	}
	for _, op := range plan.ops {
		switch op.kind {
		case opDelete:
			i := find(op.handle)
			chain = slices.Delete(chain, i, i+1)
		case opReplace:
			chain[find(op.handle)] = kr{next, new[op.index].Text}
		case opInsert:
			chain = slices.Insert(chain, find(op.handle), kr{next, new[op.index].Text})
		case opAppend:
			chain = append(chain, kr{next, new[op.index].Text})
		}
		next++
	}
	out := make([]string, len(chain))
	for i, r := range chain {
		out[i] = r.text
	}
	return out
}

func seqHandles(n int) []uint64 {
	hs := make([]uint64, n)
	for i := range hs {
		hs[i] = uint64(i + 1)
	}
	return hs
}

// randomEdit changes rules the way policy updates do: a few rules inserted,
// removed, replaced or moved, anywhere.
func randomEdit(r *rand.Rand, rules []string, pool func() string) []string {
	out := slices.Clone(rules)
	for k := r.IntN(4); k >= 0; k-- {
		switch op := r.IntN(5); {
		case op == 0 || len(out) == 0:
			out = slices.Insert(out, r.IntN(len(out)+1), pool())
		case op == 1:
			i := r.IntN(len(out))
			out = slices.Delete(out, i, i+1)
		case op == 2:
			out[r.IntN(len(out))] = pool()
		case op == 3:
			i := r.IntN(len(out))
			x := out[i]
			out = slices.Delete(out, i, i+1)
			out = slices.Insert(out, r.IntN(len(out)+1), x)
		default:
			i := r.IntN(len(out))
			j := min(len(out), i+r.IntN(5))
			out = slices.Delete(out, i, j)
		}
	}
	return out
}

func TestPlanRulesRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pool := func() string { return fmt.Sprintf("r%d", r.IntN(40)) } // duplicates too
	for iter := 0; iter < 3000; iter++ {
		var old []string
		for k := r.IntN(30); k > 0; k-- {
			old = append(old, pool())
		}
		new := randomEdit(r, old, pool)
		if iter%10 == 0 {
			new = nil
			for k := r.IntN(30); k > 0; k-- {
				new = append(new, pool())
			}
		}
		o, n := textRules(old...), textRules(new...)
		match, ok := diffRules(o, n, maxEditDistance)
		if !ok {
			t.Fatalf("diff of %v and %v failed", old, new)
		}
		last := -1
		for i, j := range match {
			if j < 0 {
				continue
			}
			if j <= last || old[i] != new[j] {
				t.Fatalf("bad match %v for %v -> %v", match, old, new)
			}
			last = j
		}
		plan, need := planRules(o, n, match, seqHandles(len(old)))
		if need {
			t.Fatalf("handles needed although all are known")
		}
		if plan == nil {
			if len(new)+1 > len(old)+len(new) && len(old) > 0 {
				t.Fatalf("refill chosen for %v -> %v", old, new)
			}
			continue
		}
		if got := simulate(t, o, n, plan); !slices.Equal(got, new) && !(len(got) == 0 && len(new) == 0) {
			t.Fatalf("edit of %v\n to %v\n gives %v\n (ops %+v)", old, new, got, plan.ops)
		}
	}
}

func TestPlanRulesMinimal(t *testing.T) {
	var old []string
	for i := range 10000 {
		old = append(old, fmt.Sprintf("r%d", i))
	}
	for _, tt := range []struct {
		name string
		edit func([]string) []string
		want int // messages
	}{
		{"one replaced", func(s []string) []string { s[5000] = "x"; return s }, 1},
		{"one inserted", func(s []string) []string { return slices.Insert(s, 5000, "x") }, 1},
		{"one deleted", func(s []string) []string { return slices.Delete(s, 5000, 5001) }, 1},
		{"one moved", func(s []string) []string { x := s[10]; s = slices.Delete(s, 10, 11); return slices.Insert(s, 9000, x) }, 2},
		{"first and last", func(s []string) []string { s[0], s[len(s)-1] = "a", "b"; return s }, 2},
		{"appended", func(s []string) []string { return append(s, "a", "b") }, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := textRules(old...)
			n := textRules(tt.edit(slices.Clone(old))...)
			match, ok := diffRules(o, n, maxEditDistance)
			if !ok {
				t.Fatal("diff failed")
			}
			plan, _ := planRules(o, n, match, seqHandles(len(old)))
			if plan == nil || len(plan.ops) != tt.want {
				t.Fatalf("plan %+v, want %d ops", plan, tt.want)
			}
			if got := simulate(t, o, n, plan); !slices.Equal(got, ruleTexts(n)) {
				t.Fatalf("wrong result")
			}
		})
	}
	// Unknown handles are reported; a rewrite refills.
	o := textRules(old[:10]...)
	n := textRules("a", "b", "c")
	match, _ := diffRules(o, n, maxEditDistance)
	if plan, _ := planRules(o, n, match, nil); plan != nil {
		t.Errorf("rewrite of the whole chain is an edit: %+v", plan)
	}
	n = textRules(append([]string{"x"}, old[1:10]...)...)
	match, _ = diffRules(o, n, maxEditDistance)
	if _, need := planRules(o, n, match, nil); !need {
		t.Errorf("edit without handles does not ask for them")
	}
}

// Kernel tests of rule-level edits.

// ifRule is `iifname "name" accept` (or drop).
func ifRule(name string, drop bool) Rule {
	if drop {
		return NewRule(Iifname(name), Drop())
	}
	return NewRule(Iifname(name), Accept())
}

// setRule is `ip saddr @set accept`.
func setRule(set string) Rule {
	return NewRule(IPv4(), Addr(Saddr), Lookup(set), Accept())
}

func addrSet(name string, addrs ...string) Set {
	s := Set{Name: name, Type: "ipv4_addr", Spec: nftables.Set{KeyType: nftables.TypeIPAddr}}
	for _, a := range addrs {
		ip := netip.MustParseAddr(a)
		s.Elements = append(s.Elements, NewElement(a, nftables.SetElement{Key: ip.AsSlice()}))
	}
	return s
}

// editModel is a table with a base chain jumping to regular chains of
// rules, some of which look up sets.
func editModel(chains map[string][]Rule, sets []string) Model {
	m := Model{Family: testFamily, Table: testTable}
	var jumps []Rule
	names := make([]string, 0, len(chains))
	for name := range chains {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		m.Chains = append(m.Chains, Chain{Name: name, Rules: chains[name]})
		jumps = append(jumps, Rule{Text: "jump " + name, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: name}}})
	}
	m.Chains = append(m.Chains, Chain{Name: chainForward, Type: "filter", Hook: "forward", Priority: PriorityFilter, Rules: jumps})
	for i, s := range sets {
		m.Sets = append(m.Sets, addrSet(s, fmt.Sprintf("10.0.%d.1", i)))
	}
	return m
}

// checkKernelCanonical compares nft's listing with the model in canonical
// form (incremental updates create objects out of the model's order).
func checkKernelCanonical(t *testing.T, ns string, m Model) {
	t.Helper()
	got, err := listTable(ns)
	if err != nil {
		t.Fatalf("nft list table in %s: %v: %s", ns, err, got)
	}
	if diff := cmp.Diff(Canonical(m.String()), Canonical(got)); diff != "" {
		t.Fatalf("nft list table differs from the model (-model +nft):\n%s", diff)
	}
}

// applierModes are the ways an Applier talks to the kernel: its own socket
// (handles from the kernel's echo), a connection given with WithConn
// (handles read with GetRules), and the former flush-and-refill.
func applierModes(t *testing.T, ns string) map[string]*Applier {
	h := nfttest.NSHandle(t, ns)
	return map[string]*Applier{
		"own":      closing(t, NewApplier(WithNetNS(h))),
		"withconn": nsApplier(t, ns),
		"refill":   closing(t, NewApplier(WithNetNS(h), withRefillOnly())),
	}
}

func closing(t *testing.T, a *Applier) *Applier {
	t.Cleanup(func() { a.Close() })
	return a
}

// TestRuleEditsRandom applies random sequences of models whose chains get
// rules inserted, removed, replaced and moved (and chains and sets added
// and removed), and checks after each Apply that the kernel's table is the
// model, rule order included.
func TestRuleEditsRandom(t *testing.T) {
	nfttest.NeedRoot(t)
	for _, mode := range []string{"own", "withconn", "refill"} {
		t.Run(mode, func(t *testing.T) {
			ns := nfttest.NewNS(t)
			a := applierModes(t, ns)[mode]
			r := rand.New(rand.NewPCG(7, uint64(len(mode))))
			sets := []string{"s0", "s1", "s2"}
			pool := func() Rule {
				switch k := r.IntN(10); {
				case k < 2:
					return setRule(sets[r.IntN(len(sets))])
				default:
					return ifRule(fmt.Sprintf("if%d", r.IntN(60)), k == 9)
				}
			}
			chains := map[string][]Rule{}
			for c := range 4 {
				var rs []Rule
				for range 20 + r.IntN(40) {
					rs = append(rs, pool())
				}
				chains[fmt.Sprintf("c%d", c)] = rs
			}
			edits := 0
			for step := range 40 {
				switch {
				case step%13 == 12: // a new set, used in the middle of a chain
					s := fmt.Sprintf("n%d", step)
					sets = append(sets, s)
					rs := chains["c0"]
					chains["c0"] = slices.Insert(slices.Clone(rs), len(rs)/2, setRule(s))
				case step%17 == 16: // a chain goes, another comes
					delete(chains, "c3")
					chains[fmt.Sprintf("x%d", step)] = []Rule{pool(), pool()}
				}
				for name, rs := range chains {
					if r.IntN(3) > 0 {
						continue
					}
					texts := randomEdit(r, ruleTexts(rs), func() string { return "" })
					// Rebuild rules from the edited texts (new ones from the pool).
					byText := map[string]Rule{}
					for _, x := range rs {
						byText[x.Text] = x
					}
					var out []Rule
					for _, x := range texts {
						if x == "" {
							out = append(out, pool())
						} else {
							out = append(out, byText[x])
						}
					}
					chains[name] = out
				}
				m := editModel(maps(chains), sets)
				if err := a.Apply(m); err != nil {
					t.Fatalf("step %d: Apply: %v", step, err)
				}
				st := a.LastApply()
				if step > 0 && !st.Incremental {
					t.Fatalf("step %d: not incremental: %+v", step, st)
				}
				if strings.Contains(st.Change, "rules +") && !strings.Contains(st.Change, "rules +0 -0 ~0") {
					edits++
				}
				checkKernelCanonical(t, ns, m)
			}
			if mode != "refill" && edits < 10 {
				t.Errorf("only %d of 40 updates edited rules", edits)
			}
			if mode == "refill" && edits != 0 {
				t.Errorf("refill mode edited rules %d times", edits)
			}
		})
	}
}

// maps copies the chain map (models keep their slices).
func maps(in map[string][]Rule) map[string][]Rule {
	out := make(map[string][]Rule, len(in))
	for k, v := range in {
		out[k] = slices.Clone(v)
	}
	return out
}

// bigChainModel has one regular chain of n rules; rule i of the chain is
// ifRule("p<i>"), with rule at changed to a drop.
func bigChainModel(n int, changed ...int) Model {
	rs := make([]Rule, n)
	for i := range rs {
		rs[i] = ifRule(fmt.Sprintf("p%d", i), slices.Contains(changed, i))
	}
	return editModel(map[string][]Rule{"class": rs}, nil)
}

// One rule changed in a 10,000-rule chain is a message or two, and the
// chain is right afterwards; with handles unknown (WithConn) or stale
// (rules deleted by hand) the Applier still gets it right.
func TestRuleEditBigChain(t *testing.T) {
	nfttest.NeedRoot(t)
	for _, mode := range []string{"own", "withconn"} {
		t.Run(mode, func(t *testing.T) {
			ns := nfttest.NewNS(t)
			a := applierModes(t, ns)[mode]
			const n = 10000
			m := bigChainModel(n)
			if err := a.Apply(m); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			steps := []struct {
				name string
				m    Model
				max  int
			}{
				{"one rule changed", bigChainModel(n, 5000), 1},
				{"another one", bigChainModel(n, 5000, 7000), 1},
				{"back", bigChainModel(n, 7000), 1},
			}
			// One inserted in the middle, one removed at the front.
			ins := bigChainModel(n, 7000)
			for i := range ins.Chains {
				if ins.Chains[i].Name == "class" {
					rs := ins.Chains[i].Rules
					rs = slices.Insert(slices.Clone(rs), 3333, ifRule("new", false))
					ins.Chains[i].Rules = rs[1:]
				}
			}
			steps = append(steps, struct {
				name string
				m    Model
				max  int
			}{"inserted and removed", ins, 2})
			for _, s := range steps {
				if err := a.Apply(s.m); err != nil {
					t.Fatalf("%s: Apply: %v", s.name, err)
				}
				st := a.LastApply()
				t.Logf("%s: %+v", s.name, st)
				if !st.Incremental || st.Messages > s.max {
					t.Errorf("%s: %+v, want incremental with at most %d messages", s.name, st, s.max)
				}
				checkKernelCanonical(t, ns, s.m)
			}

			// Stale handles: a rule the Applier knows is deleted by hand.
			// The batch that deletes it is refused and the table replaced.
			out := nfttest.Run(t, "ip", "netns", "exec", ns, "nft", "-a", "list", "chain", testFamily, testTable, "class")
			var handle string
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, `"p7000" drop`) {
					handle = l[strings.LastIndex(l, " ")+1:]
				}
			}
			if handle == "" {
				t.Fatalf("rule p7000 not found:\n%.500s", out)
			}
			nfttest.Run(t, "ip", "netns", "exec", ns, "nft", "delete", "rule", testFamily, testTable, "class", "handle", handle)
			back := bigChainModel(n)
			if err := a.Apply(back); err != nil {
				t.Fatalf("Apply after a hand edit: %v", err)
			}
			// With its own socket the Applier knows the handle and the
			// kernel refuses it; with WithConn it reads the handles and
			// finds a rule missing: it refills the chain.
			st := a.LastApply()
			t.Logf("after a hand edit: %+v", st)
			if mode == "own" && (st.Incremental || !strings.Contains(st.FullReason, "refused")) {
				t.Errorf("stale handle: %+v, want a refused update and a replacement", st)
			}
			checkKernelCanonical(t, ns, back)
			// And editing works again afterwards.
			next := bigChainModel(n, 1)
			if err := a.Apply(next); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if st := a.LastApply(); !st.Incremental || st.Messages > 1 {
				t.Errorf("edit after replacement: %+v", st)
			}
			checkKernelCanonical(t, ns, next)
		})
	}
}
