package proxy

import (
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/netloom/netloom/nft"
)

// fragBuilder compiles one service port into its fragment: its elements of
// each map, its sets and chains, and the shared chains it uses. It runs
// the compilation twice: once counting the elements (to size the
// fragment's lists and the store's blocks), once making them.
type fragBuilder struct {
	f      *portFrag
	s      *elemStore
	cidrOK bool
	cidr   netip.Prefix
	end    int // of the last element in s.buf

	counting bool
	n        [numMaps]int
	at       [numMaps]int    // index in f.lists of map k's list
	made     map[string]bool // this fragment's own chains, made once
	entries  []entry
}

func (b *fragBuilder) servicePort(sp *servicePort) {
	var allowed []netip.Prefix
	hasRanges := sp.vip.IsValid() && len(b.f.ranges) > 0
	if hasRanges {
		allowed = allowedRanges(b.f.ranges)
	}
	b.entries = sp.entries(hasRanges, b.entries)
	b.counting = true
	b.body(sp, hasRanges, allowed)
	b.counting = false
	b.reserve()
	b.body(sp, hasRanges, allowed)
	b.finish()
}

func (b *fragBuilder) body(sp *servicePort, hasRanges bool, allowed []netip.Prefix) {
	for _, p := range allowed {
		b.allow(sp.vip, sp.proto, sp.port, p)
	}
	if len(sp.all) == 0 {
		// No endpoint at all (a local subset is then empty too): reject.
		for _, e := range b.entries {
			target := ChainReject
			if e.ranges {
				target = ChainAllowReject
			}
			b.dispatch(mapsOf(e.key.np()).filter, e.key, target)
		}
		return
	}
	if hasRanges {
		b.dispatch(mapFilter, svcKey{sp.vip, sp.proto, sp.port}, ChainAllowCheck)
	}
	if sp.affinity() {
		b.stickyServicePort(sp)
		return
	}

	n, m := len(sp.all), len(sp.local)
	for _, e := range b.entries {
		np := e.key.np()
		ids := mapsOf(np)
		if e.via != viaLocal {
			for i, ep := range sp.all {
				b.endpoint(ids.eps, e.key, uint32(i), ep)
			}
		}
		if e.via != viaAll {
			for i, ep := range sp.local {
				b.endpoint(ids.localEps, e.key, uint32(i), ep)
			}
		}
		var target string // "": drop
		switch {
		case e.via == viaAll:
			target = b.pick(np, n)
		case e.via == viaLocalShort:
			target = b.local(np, n, m)
		case m > 0:
			target = b.pickLocal(np, m)
		}
		b.dispatch(ids.dispatch, e.key, target)
	}
}

// stickyServicePort compiles a service port with sessionAffinity ClientIP.
func (b *fragBuilder) stickyServicePort(sp *servicePort) {
	f := b.f
	eps := sp.all
	if len(sp.local) > 0 && !isSubset(sp.local, sp.all) {
		// Local terminating endpoints, used while other nodes have
		// ready ones: they need their chains too.
		eps = slices.Concat(sp.all, sp.local)
		slices.SortFunc(eps, func(a, b netip.AddrPort) int { return a.Compare(b) })
		eps = slices.Compact(eps)
	}
	if !b.counting {
		for _, ep := range eps {
			set := sp.affinitySet(ep)
			f.sets = append(f.sets, nft.Set{
				Name: set, Type: "ipv4_addr", Flags: []string{"dynamic", "timeout"},
				Spec: nftables.Set{KeyType: nftables.TypeIPAddr, Dynamic: true, HasTimeout: true, Size: AffinitySetSize},
			})
			b.chain(nft.Chain{Name: sp.endpointChain(ep), Rules: []nft.Rule{
				nft.NewRule(updateSaddr(set, sp.affinityTimeout())),
				nft.NewRule(l4proto(sp.proto), dnatTo(ep)),
			}})
		}
	}
	remembered := func(eps []netip.AddrPort) []nft.Rule {
		rules := make([]nft.Rule, 0, len(eps)+1)
		for _, ep := range eps {
			rules = append(rules, nft.NewRule(saddrInSet(sp.affinitySet(ep)), nft.Goto(sp.endpointChain(ep))))
		}
		return rules
	}
	// sticky is the chain of every endpoint: remembered clients, then a
	// random one.
	sticky := func(np bool) string {
		name := sp.stickyChain(np)
		if b.once(name) {
			c := nft.Chain{Name: name, Rules: remembered(sp.all)}
			c.Rules = append(c.Rules, nft.NewRule(nft.Goto(b.affPick(np, len(sp.all), false))))
			b.chain(c)
		}
		return name
	}
	m := len(sp.local)
	for _, e := range b.entries {
		np := e.key.np()
		ids := mapsOf(np)
		if e.via != viaLocal {
			for i, ep := range sp.all {
				b.endpointChainElem(ids.epChains, e.key, uint32(i), sp.endpointChain(ep))
			}
		}
		if e.via != viaAll {
			for i, ep := range sp.local {
				b.endpointChainElem(ids.localEpChains, e.key, uint32(i), sp.endpointChain(ep))
			}
		}
		var target string // "": drop
		switch {
		case e.via == viaAll:
			target = sticky(np)
		case e.via == viaLocalShort:
			all := sticky(np)
			target = sp.stickyLocalChain(np)
			if b.once(target) {
				local := nft.Chain{Name: target}
				local.Rules = append(local.Rules, shortCircuit(b.cidrOK, b.cidr, all)...)
				local.Rules = append(local.Rules, remembered(sp.local)...)
				if m == 0 {
					local.Rules = append(local.Rules, nft.NewRule(nft.Drop()))
				} else {
					local.Rules = append(local.Rules, nft.NewRule(nft.Goto(b.affPick(np, m, true))))
				}
				b.chain(local)
			}
		case m > 0:
			target = sp.stickyInternalChain()
			if b.once(target) {
				c := nft.Chain{Name: target, Rules: remembered(sp.local)}
				c.Rules = append(c.Rules, nft.NewRule(nft.Goto(b.affPick(np, m, true))))
				b.chain(c)
			}
		}
		b.dispatch(ids.dispatch, e.key, target)
	}
}

// isSubset reports whether every element of a (sorted) is in b (sorted).
func isSubset(a, b []netip.AddrPort) bool {
	j := 0
	for _, x := range a {
		for j < len(b) && b[j].Compare(x) < 0 {
			j++
		}
		if j == len(b) || b[j] != x {
			return false
		}
	}
	return true
}

// once reports whether the fragment's own chain name is made for the first
// time (always false while counting: chains are made in the second run).
func (b *fragBuilder) once(name string) bool {
	if b.counting {
		return false
	}
	if b.made == nil {
		b.made = map[string]bool{}
	}
	if b.made[name] {
		return false
	}
	b.made[name] = true
	return true
}

// reserve sizes the fragment's element lists and the store for what body
// adds, as counted by its first run.
func (b *fragBuilder) reserve() {
	total, lists := 0, 0
	for _, c := range b.n {
		total += c
		if c > 0 {
			lists++
		}
	}
	elems := make([]nft.Element, total)
	b.f.lists = make([]fragList, 0, lists)
	off := 0
	for k, c := range b.n {
		if c > 0 {
			b.at[k] = len(b.f.lists)
			b.f.lists = append(b.f.lists, fragList{k: uint8(k), es: elems[off : off : off+c]})
			off += c
		}
	}
	b.s.buf, b.s.refs, b.end = b.s.buf[:0], b.s.refs[:0], 0
}

// The elements, counted or made.

func (b *fragBuilder) allow(vip netip.Addr, p proto, port uint16, src netip.Prefix) {
	if b.counting {
		b.n[mapAllowed]++
		return
	}
	b.s.allowElement(vip, p, port, src)
	b.add(mapAllowed)
}

// dispatch adds "key : goto target" to map k, "key : drop" when target is
// empty.
func (b *fragBuilder) dispatch(k int, key svcKey, target string) {
	if b.counting {
		b.n[k]++
		return
	}
	b.s.dispatchElement(key, target)
	b.add(k)
}

func (b *fragBuilder) endpoint(k int, key svcKey, i uint32, ep netip.AddrPort) {
	if b.counting {
		b.n[k]++
		return
	}
	b.s.endpointElement(key, i, ep)
	b.add(k)
}

func (b *fragBuilder) endpointChainElem(k int, key svcKey, i uint32, chain string) {
	if b.counting {
		b.n[k]++
		return
	}
	b.s.endpointChainElement(key, i, chain)
	b.add(k)
}

// add appends to the fragment's list k the element the store collected
// since the last add.
func (b *fragBuilder) add(k int) {
	s := b.s
	l := &b.f.lists[b.at[k]]
	s.refs = append(s.refs, elemRef{l: b.at[k], i: len(l.es), start: b.end, end: len(s.buf)})
	b.end = len(s.buf)
	l.es = append(l.es, nft.Element{})
}

// finish makes the elements, from one string.
func (b *fragBuilder) finish() {
	s := b.s
	all := string(s.buf)
	for _, r := range s.refs {
		b.f.lists[r.l].es[r.i] = nft.FormattedElement(all[r.start:r.end])
	}
}

func (b *fragBuilder) chain(c nft.Chain) {
	if b.counting {
		return
	}
	b.f.chains = append(b.f.chains, chainOp{chain: &c})
}

// shared records the use of the shared chain kind(n, m) (once when used
// twice in a row: the second use adds nothing).
func (b *fragBuilder) shared(kind uint8, np bool, n, m int) {
	if b.counting {
		return
	}
	op := chainOp{kind: kind, np: np, n: n, m: m}
	if k := len(b.f.chains); k > 0 && b.f.chains[k-1] == op {
		return
	}
	b.f.chains = append(b.f.chains, op)
}

// pick returns svc-pick-N (svc-np-pick-N).
func (b *fragBuilder) pick(np bool, n int) string {
	b.shared(opPick, np, n, 0)
	return pickChain(np, n)
}

// pickLocal returns svc-pick-local-M (svc-np-pick-local-M).
func (b *fragBuilder) pickLocal(np bool, m int) string {
	b.shared(opPickLocal, np, m, 0)
	return pickLocalChain(np, m)
}

// local returns svc-local-N-M (svc-np-local-N-M).
func (b *fragBuilder) local(np bool, n, m int) string {
	b.shared(opLocal, np, n, m)
	return localChain(np, n, m)
}

// affPick returns svc-aff-pick-N (or svc-aff-pick-local-N, and their
// svc-np- variants).
func (b *fragBuilder) affPick(np bool, n int, local bool) string {
	if local {
		b.shared(opAffPickLocal, np, n, 0)
		return affPickLocalChain(np, n)
	}
	b.shared(opAffPick, np, n, 0)
	return affPickChain(np, n)
}
