package nft

import (
	"fmt"
	"slices"

	"github.com/google/nftables"
)

// An update is the difference between the model the kernel holds and the
// next one, expressed as the nf_tables operations that turn one into the
// other without touching what did not change (a chain whose rules changed
// is edited rule by rule, or flushed and refilled, see ruleedit.go).
// Applier.Apply sends it as ONE batch, so it commits atomically like a full replacement, but its size
// follows the change, not the table: a NetworkPolicy edit that adds a class
// chain and moves a few pods does not rebuild ten thousand policies' rules.
//
// planUpdate refuses (and Apply falls back to the full replacement) when
// the table itself, a base chain's hook, type, priority or policy, or the
// definition of a set that keeps its name changes: those are rare, and
// replacing the table is always correct.
type tableUpdate struct {
	newCounters []string
	newChains   []Chain     // created empty first, filled after the new sets
	newSets     []Set       // created with their elements
	editChains  []chainEdit // rules changed: edited rule by rule, or refilled
	elemDels    []setElems
	elemAdds    []setElems
	delChains   []string
	delMaps     []string // maps flushed before chains are deleted
	delSets     []string
	delCounters []string
}

// chainEdit is a chain of both models whose rules changed. Applier.Apply
// fills in plan (see ruleedit.go); without one the chain is flushed and
// filled again in the same batch.
type chainEdit struct {
	chain Chain  // the new chain
	old   []Rule // its rules in the old model
	plan  *rulePlan
}

type setElems struct {
	set   Set
	elems []Element
}

// empty reports whether the kernel already holds the new model.
func (u tableUpdate) empty() bool {
	return len(u.newCounters) == 0 && len(u.newChains) == 0 && len(u.newSets) == 0 &&
		len(u.editChains) == 0 && len(u.elemDels) == 0 && len(u.elemAdds) == 0 &&
		len(u.delChains) == 0 && len(u.delSets) == 0 && len(u.delCounters) == 0
}

// Summary counts the operations, for logs and tests.
func (u tableUpdate) summary() string {
	n := func(es []setElems) int {
		t := 0
		for _, e := range es {
			t += len(e.elems)
		}
		return t
	}
	return fmt.Sprintf("chains +%d -%d ~%d, sets +%d -%d, elements +%d -%d, counters +%d -%d",
		len(u.newChains), len(u.delChains), len(u.editChains),
		len(u.newSets), len(u.delSets), n(u.elemAdds), n(u.elemDels),
		len(u.newCounters), len(u.delCounters))
}

// planUpdate computes the update from old to new. When it returns a
// non-empty reason, only a full replacement can make the kernel's table new.
// Rules are compared by Text: a Rule's Text and Exprs agree (see Rule), and
// Text names every set, chain and counter the expressions refer to.
func planUpdate(old, new Model) (tableUpdate, string) {
	var u tableUpdate
	if old.Family != new.Family || old.Table != new.Table {
		return u, "table changed"
	}

	oldChains := make(map[string]*Chain, len(old.Chains))
	for i := range old.Chains {
		oldChains[old.Chains[i].Name] = &old.Chains[i]
	}
	newChainNames := make(map[string]bool, len(new.Chains))
	for _, c := range sortedChains(new.Chains) {
		newChainNames[c.Name] = true
		oc, ok := oldChains[c.Name]
		if !ok {
			u.newChains = append(u.newChains, c)
			continue
		}
		if oc.BaseChain() != c.BaseChain() || (c.BaseChain() && !sameChainHead(*oc, c)) {
			return tableUpdate{}, fmt.Sprintf("chain %s changed its hook, type, priority or policy", c.Name)
		}
		if !sameRules(oc.Rules, c.Rules) {
			u.editChains = append(u.editChains, chainEdit{chain: c, old: oc.Rules})
		}
	}
	for _, c := range sortedChains(old.Chains) {
		if !newChainNames[c.Name] {
			u.delChains = append(u.delChains, c.Name)
		}
	}

	oldSets := make(map[string]*Set, len(old.Sets))
	for i := range old.Sets {
		oldSets[old.Sets[i].Name] = &old.Sets[i]
	}
	newSetNames := make(map[string]bool, len(new.Sets))
	for _, s := range sortedSets(new.Sets) {
		newSetNames[s.Name] = true
		os, ok := oldSets[s.Name]
		if !ok {
			u.newSets = append(u.newSets, s)
			continue
		}
		if !sameSetDef(*os, s) {
			return tableUpdate{}, fmt.Sprintf("set %s changed its type or flags", s.Name)
		}
		adds, dels := diffSets(os, &s)
		if (len(adds) > 0 || len(dels) > 0) && s.Spec.Constant {
			return tableUpdate{}, fmt.Sprintf("constant set %s changed", s.Name)
		}
		if len(dels) > 0 {
			u.elemDels = append(u.elemDels, setElems{s, dels})
		}
		if len(adds) > 0 {
			u.elemAdds = append(u.elemAdds, setElems{s, adds})
		}
	}
	for _, s := range sortedSets(old.Sets) {
		if !newSetNames[s.Name] {
			u.delSets = append(u.delSets, s.Name)
			if s.Spec.IsMap {
				u.delMaps = append(u.delMaps, s.Name)
			}
		}
	}

	oldCounters := make(map[string]bool, len(old.Counters))
	for _, n := range old.Counters {
		oldCounters[n] = true
	}
	newCounters := make(map[string]bool, len(new.Counters))
	for _, n := range sortedStrings(new.Counters) {
		newCounters[n] = true
		if !oldCounters[n] {
			u.newCounters = append(u.newCounters, n)
		}
	}
	for _, n := range sortedStrings(old.Counters) {
		if !newCounters[n] {
			u.delCounters = append(u.delCounters, n)
		}
	}
	return u, ""
}

func sameChainHead(a, b Chain) bool {
	return a.Type == b.Type && a.Hook == b.Hook && a.Priority == b.Priority &&
		policyText(a.Policy) == policyText(b.Policy)
}

func sameRules(a, b []Rule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Text != b[i].Text {
			return false
		}
	}
	return true
}

// sameSetDef compares what the kernel fixes when a set is created.
func sameSetDef(a, b Set) bool {
	if a.Type != b.Type || !slices.Equal(a.Flags, b.Flags) {
		return false
	}
	x, y := a.Spec, b.Spec
	return sameType(x.KeyType, y.KeyType) && sameType(x.DataType, y.DataType) &&
		x.IsMap == y.IsMap && x.Interval == y.Interval && x.Concatenation == y.Concatenation &&
		x.Constant == y.Constant && x.HasTimeout == y.HasTimeout && x.Timeout == y.Timeout &&
		x.Counter == y.Counter && x.Dynamic == y.Dynamic && x.AutoMerge == y.AutoMerge &&
		x.Size == y.Size && x.Comment == y.Comment && x.KeyByteOrder == y.KeyByteOrder
}

func sameType(a, b nftables.SetDatatype) bool {
	return a.Name == b.Name && a.Bytes == b.Bytes && a.GetNFTMagic() == b.GetNFTMagic()
}

// diffSets returns the elements of b not in a and those of a not in b.
// Pieces (Set.Parts) that both hold are skipped: first the common run at
// each end, in order (the same slice, unread, or equal elements), then any
// others that are the same slice; what is left goes to diffElements.
func diffSets(a, b *Set) (adds, dels []Element) {
	if a.Parts == nil && b.Parts == nil {
		return diffElements(a.Elements, b.Elements)
	}
	pa, pb := a.pieces(), b.pieces()
	same := func(x, y []Element) bool {
		if len(x) != len(y) {
			return false
		}
		if len(x) == 0 || &x[0] == &y[0] {
			return true
		}
		return slices.Equal(x, y)
	}
	for len(pa) > 0 && len(pb) > 0 && same(pa[0], pb[0]) {
		pa, pb = pa[1:], pb[1:]
	}
	for len(pa) > 0 && len(pb) > 0 && same(pa[len(pa)-1], pb[len(pb)-1]) {
		pa, pb = pa[:len(pa)-1], pb[:len(pb)-1]
	}
	if len(pa) == 1 && len(pb) == 1 {
		return diffElements(pa[0], pb[0])
	}
	type id struct {
		first *Element
		n     int
	}
	unmatched := make(map[id]int, len(pa))
	for _, p := range pa {
		if len(p) > 0 {
			unmatched[id{&p[0], len(p)}]++
		}
	}
	var ra, rb []Element
	for _, p := range pb {
		if len(p) == 0 {
			continue
		}
		if k := (id{&p[0], len(p)}); unmatched[k] > 0 {
			unmatched[k]--
			continue
		}
		rb = append(rb, p...)
	}
	for _, p := range pa {
		if len(p) == 0 {
			continue
		}
		if k := (id{&p[0], len(p)}); unmatched[k] > 0 {
			unmatched[k]--
			ra = append(ra, p...)
		}
	}
	return diffElements(ra, rb)
}

// diffElements returns the elements of b not in a and those of a not in b
// (compared with ==: text or format, and kernel form). The common prefix and suffix of the two lists (elements are
// sorted and unique within a set, so a change is mostly a small window) are
// skipped before the rest is compared through maps.
func diffElements(a, b []Element) (adds, dels []Element) {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	ja, jb := len(a), len(b)
	for ja > i && jb > i && a[ja-1] == b[jb-1] {
		ja--
		jb--
	}
	a, b = a[i:ja], b[i:jb]
	if len(a) == 0 && len(b) == 0 {
		return nil, nil
	}
	in := func(es []Element) map[Element]bool {
		m := make(map[Element]bool, len(es))
		for _, e := range es {
			m[e] = true
		}
		return m
	}
	ina, inb := in(a), in(b)
	for _, e := range b {
		if !ina[e] {
			adds = append(adds, e)
		}
	}
	for _, e := range a {
		if !inb[e] {
			dels = append(dels, e)
		}
	}
	return adds, dels
}

// queueUpdate queues u on c in an order the kernel accepts within one
// batch: what is referenced exists before what refers to it, and nothing is
// deleted while a rule, a map element or a counter reference still uses it.
// It returns the number of netlink messages queued; rl records the rule
// each NEWRULE message creates.
func queueUpdate(c *nftables.Conn, t *nftables.Table, u tableUpdate, rl *ruleLog) (int, error) {
	n := 0
	for _, name := range u.newCounters {
		c.AddObj(&nftables.CounterObj{Table: t, Name: name})
		n++
	}
	chains := map[string]*nftables.Chain{}
	for _, ch := range u.newChains {
		chains[ch.Name] = c.AddChain(kernelChain(t, ch))
		n++
	}
	setIDs := map[string]uint32{}
	for _, s := range u.newSets {
		id, k, err := addSet(c, t, s)
		if err != nil {
			return n, err
		}
		setIDs[s.Name] = id
		n += k
	}
	for _, ch := range u.newChains {
		for i, r := range ch.Rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: chains[ch.Name], Exprs: withSetIDs(r.Exprs, setIDs)})
			rl.add(ch.Name, i)
			n++
		}
	}
	for _, e := range u.editChains {
		ch := e.chain
		kc := &nftables.Chain{Name: ch.Name, Table: t}
		if e.plan == nil {
			c.FlushChain(kc)
			n++
			for i, r := range ch.Rules {
				c.AddRule(&nftables.Rule{Table: t, Chain: kc, Exprs: withSetIDs(r.Exprs, setIDs)})
				rl.add(ch.Name, i)
				n++
			}
			continue
		}
		for _, op := range e.plan.ops {
			var r *nftables.Rule
			if op.kind != opDelete {
				r = &nftables.Rule{Table: t, Chain: kc, Exprs: withSetIDs(ch.Rules[op.index].Exprs, setIDs)}
			}
			switch op.kind {
			case opDelete:
				if err := c.DelRule(&nftables.Rule{Table: t, Chain: kc, Handle: op.handle}); err != nil {
					return n, fmt.Errorf("chain %s: %w", ch.Name, err)
				}
			case opReplace:
				r.Handle = op.handle
				c.ReplaceRule(r)
			case opInsert:
				r.Position = op.handle
				c.InsertRule(r)
			case opAppend:
				c.AddRule(r)
			}
			if op.kind != opDelete {
				rl.add(ch.Name, op.index)
			}
			n++
		}
	}
	for _, d := range u.elemDels {
		k, err := queueElems(c.SetDeleteElements, kernelSetRef(t, d.set), d.elems)
		n += k
		if err != nil {
			return n, err
		}
	}
	for _, a := range u.elemAdds {
		k, err := queueElems(c.SetAddElements, kernelSetRef(t, a.set), a.elems)
		n += k
		if err != nil {
			return n, err
		}
	}
	for _, name := range u.delMaps {
		c.FlushSet(&nftables.Set{Table: t, Name: name})
		n++
	}
	for _, name := range u.delChains {
		c.FlushChain(&nftables.Chain{Name: name, Table: t})
		n++
	}
	for _, name := range u.delChains {
		c.DelChain(&nftables.Chain{Name: name, Table: t})
		n++
	}
	for _, name := range u.delSets {
		c.DelSet(&nftables.Set{Table: t, Name: name})
		n++
	}
	for _, name := range u.delCounters {
		c.DeleteObject(&nftables.CounterObj{Table: t, Name: name})
		n++
	}
	return n, nil
}

// kernelChain is the nftables chain for ch in table t.
func kernelChain(t *nftables.Table, ch Chain) *nftables.Chain {
	kc := &nftables.Chain{Name: ch.Name, Table: t}
	if ch.BaseChain() {
		hook, _ := chainHook(ch.Hook) // checked by Validate
		policy := nftables.ChainPolicyAccept
		if ch.Policy == "drop" {
			policy = nftables.ChainPolicyDrop
		}
		kc.Type = nftables.ChainType(ch.Type)
		kc.Hooknum = hook
		kc.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(ch.Priority))
		kc.Policy = &policy
	}
	return kc
}

// addSet queues the creation of s with its elements and returns the set's
// transaction ID and the number of messages.
func addSet(c *nftables.Conn, t *nftables.Table, s Set) (uint32, int, error) {
	spec := s.Spec
	spec.Table, spec.Name, spec.ID = t, s.Name, 0
	if err := c.AddSet(&spec, nil); err != nil {
		return 0, 0, fmt.Errorf("set %s: %w", s.Name, err)
	}
	k, err := queueElems(c.SetAddElements, &spec, s.Flat())
	return spec.ID, 1 + k, err
}

// elemsPerMessage bounds the elements of one message: the element list is
// one netlink attribute, whose length must fit in 16 bits (nft splits its
// lists the same way). A kernel element is at most some 90 bytes here (a
// verdict map element with a chain name, a concatenated key and key end).
const elemsPerMessage = 512

// queueElems queues es in messages of at most elemsPerMessage kernel
// elements, keeping an element's kernel parts (interval start and end)
// together, and returns the number of messages.
func queueElems(op func(*nftables.Set, []nftables.SetElement) error, s *nftables.Set, es []Element) (int, error) {
	n := 0
	var batch []nftables.SetElement
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := op(s, batch); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		n++
		batch = nil
		return nil
	}
	for _, e := range es {
		if len(batch)+e.KernelLen() > elemsPerMessage {
			if err := flush(); err != nil {
				return n, err
			}
		}
		batch = e.AppendKernel(batch)
	}
	return n, flush()
}

// kernelSetRef names an existing set for element operations (by name: its
// ID belongs to the transaction that created it).
func kernelSetRef(t *nftables.Table, s Set) *nftables.Set {
	spec := s.Spec
	spec.Table, spec.Name, spec.ID = t, s.Name, 0
	return &spec
}
