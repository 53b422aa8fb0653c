package proxy

import (
	"net/netip"

	"github.com/google/nftables"
	"github.com/netloom/netloom/nft"
)

// fragBuilder compiles one service port into its fragment: its elements of
// each map, its sets and chains, and the shared chains it uses.
type fragBuilder struct {
	f       *portFrag
	s       *elemStore
	cidrOK  bool
	cidr    netip.Prefix
	textEnd int
}

func (b *fragBuilder) servicePort(sp *servicePort) {
	var allowed []netip.Prefix
	hasRanges := sp.vip.IsValid() && len(b.f.ranges) > 0
	if hasRanges {
		allowed = allowedRanges(b.f.ranges)
	}
	b.reserve(sp, hasRanges, len(allowed))
	defer b.finish()

	for _, p := range allowed {
		b.add(mapAllowed, b.s.allowElement(sp.vip, sp.proto, sp.port, p))
	}
	if len(sp.all) == 0 {
		for _, a := range [2]netip.Addr{sp.cip, sp.vip} {
			if !a.IsValid() {
				continue
			}
			target := ChainReject
			if a == sp.vip && hasRanges {
				target = ChainAllowReject
			}
			b.add(mapFilter, b.s.dispatchElement(a, sp.proto, sp.port, target))
		}
		return
	}
	if hasRanges {
		b.add(mapFilter, b.s.dispatchElement(sp.vip, sp.proto, sp.port, ChainAllowCheck))
	}
	if sp.affinity() {
		b.stickyServicePort(sp)
		return
	}

	n, m := len(sp.all), len(sp.local)
	for _, a := range [2]netip.Addr{sp.cip, sp.vip} {
		if !a.IsValid() {
			continue
		}
		for i, ep := range sp.all {
			b.add(mapEndpoints, b.s.endpointElement(a, sp.proto, sp.port, uint32(i), ep))
		}
		target := b.pick(n)
		if a == sp.vip && sp.localPolicy() {
			for i, ep := range sp.local {
				b.add(mapLocalEndpoints, b.s.endpointElement(a, sp.proto, sp.port, uint32(i), ep))
			}
			target = b.local(n, m)
		}
		b.add(mapServices, b.s.dispatchElement(a, sp.proto, sp.port, target))
	}
}

// stickyServicePort compiles a service port with sessionAffinity ClientIP.
func (b *fragBuilder) stickyServicePort(sp *servicePort) {
	f := b.f
	for _, ep := range sp.all {
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
	remembered := func(eps []netip.AddrPort) []nft.Rule {
		rules := make([]nft.Rule, 0, len(eps)+1)
		for _, ep := range eps {
			rules = append(rules, nft.NewRule(saddrInSet(sp.affinitySet(ep)), nft.Goto(sp.endpointChain(ep))))
		}
		return rules
	}

	sticky := nft.Chain{Name: sp.stickyChain(), Rules: remembered(sp.all)}
	sticky.Rules = append(sticky.Rules, nft.NewRule(nft.Goto(b.affPick(len(sp.all), false))))
	b.chain(sticky)
	for _, a := range [2]netip.Addr{sp.cip, sp.vip} {
		if !a.IsValid() {
			continue
		}
		for i, ep := range sp.all {
			b.add(mapEndpointChains, b.s.endpointChainElement(a, sp.proto, sp.port, uint32(i), sp.endpointChain(ep)))
		}
		target := sticky.Name
		if a == sp.vip && sp.localPolicy() {
			local := nft.Chain{Name: sp.stickyLocalChain()}
			local.Rules = append(local.Rules, shortCircuit(b.cidrOK, b.cidr, sticky.Name)...)
			local.Rules = append(local.Rules, remembered(sp.local)...)
			if len(sp.local) == 0 {
				local.Rules = append(local.Rules, nft.NewRule(nft.Drop()))
			} else {
				local.Rules = append(local.Rules, nft.NewRule(nft.Goto(b.affPick(len(sp.local), true))))
			}
			for i, ep := range sp.local {
				b.add(mapLocalEndpointChains, b.s.endpointChainElement(a, sp.proto, sp.port, uint32(i), sp.endpointChain(ep)))
			}
			b.chain(local)
			target = local.Name
		}
		b.add(mapServices, b.s.dispatchElement(a, sp.proto, sp.port, target))
	}
}

// reserve sizes the fragment's element lists and the store for what
// servicePort adds (a wrong count costs allocations, not correctness).
func (b *fragBuilder) reserve(sp *servicePort, hasRanges bool, nAllowed int) {
	naddr := 0
	for _, a := range [2]netip.Addr{sp.cip, sp.vip} {
		if a.IsValid() {
			naddr++
		}
	}
	var n [numMaps]int
	n[mapAllowed] = nAllowed
	nbytes, nverdicts := 32*nAllowed, 0
	if len(sp.all) == 0 {
		n[mapFilter] = naddr
	} else {
		if hasRanges {
			n[mapFilter] = 1
		}
		n[mapServices] = naddr
		eps, local := naddr*len(sp.all), 0
		if sp.vip.IsValid() && sp.localPolicy() {
			local = len(sp.local)
		}
		if sp.affinity() {
			n[mapEndpointChains], n[mapLocalEndpointChains] = eps, local
			nbytes += 16 * (eps + local)
			nverdicts += eps + local
		} else {
			n[mapEndpoints], n[mapLocalEndpoints] = eps, local
			nbytes += 24 * (eps + local)
		}
	}
	nbytes += 12 * (n[mapFilter] + n[mapServices])
	nverdicts += n[mapFilter] + n[mapServices]
	total := 0
	for _, k := range n {
		total += k
	}
	elems := make([]nft.Element, total)
	off := 0
	for k, c := range n {
		b.f.elems[k] = elems[off : off : off+c]
		off += c
	}
	b.s.reserve(total, nbytes, nverdicts)
	b.s.text, b.s.refs, b.textEnd = b.s.text[:0], b.s.refs[:0], 0
}

// add appends e, whose text is the store's text since the last add, to the
// fragment's list k.
func (b *fragBuilder) add(k int, e nft.Element) {
	s := b.s
	s.refs = append(s.refs, textRef{k: k, i: len(b.f.elems[k]), start: b.textEnd, end: len(s.text)})
	b.textEnd = len(s.text)
	b.f.elems[k] = append(b.f.elems[k], e)
}

// finish gives the elements their texts, all in one string, and releases
// the store's blocks.
func (b *fragBuilder) finish() {
	s := b.s
	text := string(s.text)
	for _, r := range s.refs {
		b.f.elems[r.k][r.i].Text = text[r.start:r.end]
	}
	for k, es := range b.f.elems {
		if len(es) == 0 {
			b.f.elems[k] = nil
		}
	}
	s.reserve(0, 0, 0)
}

func (b *fragBuilder) chain(c nft.Chain) {
	b.f.chains = append(b.f.chains, chainOp{chain: &c})
}

// shared records the use of the shared chain kind(n, m) (once when used
// twice in a row: the second use adds nothing).
func (b *fragBuilder) shared(kind uint8, n, m int) {
	op := chainOp{kind: kind, n: n, m: m}
	if k := len(b.f.chains); k > 0 && b.f.chains[k-1] == op {
		return
	}
	b.f.chains = append(b.f.chains, op)
}

// pick returns svc-pick-N.
func (b *fragBuilder) pick(n int) string {
	b.shared(opPick, n, 0)
	return pickChain(n)
}

// local returns svc-local-N-M.
func (b *fragBuilder) local(n, m int) string {
	b.shared(opLocal, n, m)
	return localChain(n, m)
}

// affPick returns svc-aff-pick-N (or svc-aff-pick-local-N).
func (b *fragBuilder) affPick(n int, local bool) string {
	if local {
		b.shared(opAffPickLocal, n, 0)
		return affPickLocalChain(n)
	}
	b.shared(opAffPick, n, 0)
	return affPickChain(n)
}
