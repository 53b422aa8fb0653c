package proxy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/google/nftables"
	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/nft"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Compiler compiles Inputs exactly as Compile does (the same Model, sets,
// elements, chains and order), but remembers what it compiled for each
// service port and reuses it when the next Input leaves that port
// unchanged. An agent keeps one Compiler and calls Compile on every
// reconcile pass: when one service changed, only that service's ports are
// compiled again, and the Model is assembled from the remembered fragments.
//
// A fragment is reused when everything it is made of is equal to what it
// was made of: the service's namespace/name and the port's protocol and
// number, the ClusterIP and VIP it serves (after the address conflicts of
// the whole Input are resolved, which is redone on every call), session
// affinity and its timeout, externalTrafficPolicy, the source ranges, the
// resolved backends (address and target port of the ready IPv4 endpoints,
// and which of them are on Input.Node), and Input.ClusterCIDR. These are
// compared exactly (no hashes), so the result never depends on the
// previous Inputs, and the Input may be built anew or modified in place
// between calls.
//
// The returned Model shares its elements with the Compiler and with the
// Models it returned before: neither the caller nor the Compiler modifies
// them (nft.Applier does not either). The Compiler holds its last
// Model's elements, not a copy of them.
//
// A Compiler is not safe for concurrent use.
type Compiler struct {
	// The fragments of each service of the last call, sorted by key, and
	// of this call while it runs (the services of svcs that are served).
	frags, next []*svcFrags
	cidr        netip.Prefix
	started     bool

	notes []string
	built int // fragments compiled by the last call (the others were reused)

	// last holds the element lists of the last Model, per map: the
	// fragments' elements are windows of them.
	last         [numMaps][]nft.Element
	hairpinAddrs []uint32
	hairpinElems []nft.Element

	// Scratch space, kept between calls.
	svcs   []*ServiceAddrs
	seen   map[uint64]int // address . proto . port -> index in svcs
	order  []*portFrag    // this call's service ports, in model order
	sig    portSig
	addrs  []uint32
	apAll  []netip.AddrPort
	apLoc  []netip.AddrPort
	store  elemStore
	shared map[sharedKey]bool
}

// NewCompiler returns a Compiler with nothing compiled yet.
func NewCompiler() *Compiler {
	return &Compiler{}
}

// Skipped lists what the last Compile left out and why (see the function
// Skipped). The slice is not modified afterwards.
func (c *Compiler) Skipped() []string { return c.notes }

// Indices of the element lists of a fragment (and of the Model's maps).
const (
	mapServices = iota
	mapFilter
	mapEndpoints
	mapLocalEndpoints
	mapEndpointChains
	mapLocalEndpointChains
	mapAllowed
	numMaps
)

// portSig is what a service port's fragment is made of, besides the
// service's key and Input.ClusterCIDR.
type portSig struct {
	proto       proto
	port        uint16
	cip, vip    netip.Addr // after conflicts; invalid when not served
	affinity    bool
	localPolicy bool          // externalTrafficPolicy Local
	timeout     time.Duration // with affinity: the effective timeout; else 0
	ranges      []netip.Prefix
	// Backends as address<<16 | port, sorted and unique: all of them, and
	// those on this node.
	all, local []uint64
}

func (s *portSig) equal(o *portSig) bool {
	return s.proto == o.proto && s.port == o.port && s.cip == o.cip && s.vip == o.vip &&
		s.affinity == o.affinity && s.localPolicy == o.localPolicy && s.timeout == o.timeout &&
		slices.Equal(s.ranges, o.ranges) && slices.Equal(s.all, o.all) && slices.Equal(s.local, o.local)
}

// portFrag is the compiled fragment of one service port.
type portFrag struct {
	portSig
	elems  [numMaps][]nft.Element
	sets   []nft.Set
	chains []chainOp
}

// chainOp is a chain of a fragment, in the order the fragment adds them:
// one of its own, or the use of a shared chain (svc-pick-N...), which the
// first fragment that uses it adds.
type chainOp struct {
	chain *nft.Chain // nil: the shared chain kind(n, m)
	kind  uint8
	n, m  int
}

// sharedKey names a shared chain: kind(n, m).
type sharedKey struct {
	kind uint8
	n, m int
}

const (
	opPick = iota + 1
	opPickLocal
	opLocal
	opAffPick
	opAffPickLocal
)

// svcFrags are the fragments of one service's ports.
type svcFrags struct {
	key   lb.ServiceKey
	ports []*portFrag // this call's (or, before it, the last call's)
	old   []*portFrag // the last call's, during this call; nil when taken
}

// Compile returns the proxy's fragment of table inet netloom for in: the
// same Model as Compile(in).
func (c *Compiler) Compile(in Input) nft.Model {
	if !c.started || in.ClusterCIDR != c.cidr {
		// Local VIPs with session affinity have ClusterCIDR in their chains.
		clear(c.frags)
		c.frags = c.frags[:0]
		c.cidr, c.started = in.ClusterCIDR, true
	}
	c.notes = nil
	c.built = 0
	c.servicePorts(in)
	m := c.model(in)
	// Fragments that were not reused hold windows of older Models: drop
	// them, and the services that are gone with the last list.
	for _, e := range c.next {
		clear(e.old)
		e.old = e.old[:0]
	}
	clear(c.frags)
	c.frags, c.next = c.next, c.frags[:0]
	// Keep nothing of in.
	clear(c.svcs)
	c.svcs = c.svcs[:0]
	c.sig.ranges = nil
	clear(c.order)
	c.order = c.order[:0]
	return m
}

// servicePorts collects the service ports of in, sorted by service, into
// c.order, reusing the fragments of unchanged ones and compiling the
// others. Conflicts are resolved here, for the whole Input: a service
// address and port goes to the first service (by namespace/name) that
// asks for it.
func (c *Compiler) servicePorts(in Input) {
	svcs := c.svcs[:0]
	for i := range in.Services {
		svcs = append(svcs, &in.Services[i])
	}
	byKey := func(a, b *ServiceAddrs) int { return a.Service.Key().Compare(b.Service.Key()) }
	if !slices.IsSortedFunc(svcs, byKey) {
		slices.SortStableFunc(svcs, byKey)
	}
	c.svcs = svcs
	if c.seen == nil {
		c.seen = make(map[uint64]int, 2*len(svcs))
	} else {
		clear(c.seen)
	}

	c.next = c.next[:0]
	j := 0 // c.frags[j:] are the last call's services not seen yet
	for si, sa := range svcs {
		s := &sa.Service
		cip := c.servedAddr(si, sa.ClusterIP)
		vip := c.servedAddr(si, sa.VIP)
		if s.Type != lb.TypeLoadBalancer {
			vip = netip.Addr{}
		}
		if vip.IsValid() {
			for _, p := range s.SourceRanges {
				if p.IsValid() && !p.Addr().Is4() && !(p.Addr().Is4In6() && p.Bits() >= 96) {
					c.notes = append(c.notes, fmt.Sprintf("service %s: source range %s is IPv6, which the proxy does not serve yet; skipped", c.name(si), p))
				}
			}
		}
		if !cip.IsValid() && !vip.IsValid() {
			continue
		}
		key := s.Key()
		eps := in.Endpoints[key]
		var e *svcFrags
		for i := range s.Ports {
			p := &s.Ports[i]
			pr, ok := parseProto(p.Protocol)
			if !ok {
				c.notes = append(c.notes, fmt.Sprintf("service %s: port %d: protocol %q is not TCP, UDP or SCTP; skipped", c.name(si), p.Port, p.Protocol))
				continue
			}
			sig := &c.sig
			sig.proto, sig.port = pr, p.Port
			sig.cip, sig.vip = netip.Addr{}, netip.Addr{}
			if cip.IsValid() && c.claim(cip, pr, p.Port, si) {
				sig.cip = cip
			}
			if vip.IsValid() && c.claim(vip, pr, p.Port, si) {
				sig.vip = vip
			}
			if !sig.cip.IsValid() && !sig.vip.IsValid() {
				continue
			}
			sig.affinity, sig.timeout = s.SessionAffinity, 0
			if s.SessionAffinity {
				sig.timeout = DefaultAffinityTimeout
				if s.AffinityTimeout > 0 {
					sig.timeout = s.AffinityTimeout
				}
			}
			sig.localPolicy = s.ExternalTrafficPolicy == lb.PolicyLocal
			sig.ranges = nil
			if sig.vip.IsValid() && len(s.SourceRanges) > 0 {
				sig.ranges = s.SourceRanges
			}
			c.backends(in.Node, p, eps)

			if e == nil {
				e, j = c.entry(key, j)
			}
			f := e.take(sig)
			if f == nil {
				f = c.build(s, sig)
				f.keepSame(e.replaced(sig))
			}
			e.ports = append(e.ports, f)
			c.order = append(c.order, f)
		}
	}
}

// servedAddr returns a unmapped, or nothing (with a note) when a is IPv6.
func (c *Compiler) servedAddr(si int, a netip.Addr) netip.Addr {
	if a.IsValid() && !a.Unmap().Is4() {
		c.notes = append(c.notes, fmt.Sprintf("service %s: %s is IPv6, which the proxy does not serve yet; skipped", c.name(si), a))
		return netip.Addr{}
	}
	return a.Unmap()
}

func (c *Compiler) name(si int) string { return c.svcs[si].Service.Key().String() }

// claim records that service si serves a, p, port, or notes that an
// earlier service does.
func (c *Compiler) claim(a netip.Addr, p proto, port uint16, si int) bool {
	b := a.As4()
	k := uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 | uint64(p)<<16 | uint64(port)
	if other, ok := c.seen[k]; ok {
		c.notes = append(c.notes, fmt.Sprintf("service %s: %s:%d/%s is already served for %s; skipped", c.name(si), a, port, p, c.name(other)))
		return false
	}
	c.seen[k] = si
	return true
}

// backends sets c.sig.all and c.sig.local to the backends of service port
// sp: lb.Backends, the IPv4 ones, sorted and without duplicates.
func (c *Compiler) backends(node string, sp *lb.ServicePort, eps []lb.Endpoint) {
	all, local := c.sig.all[:0], c.sig.local[:0]
	// A number, or nothing, is the same port for every endpoint.
	fixed := sp.TargetPort.Type == intstr.Int || sp.TargetPort.StrVal == ""
	fixedPort, _ := lb.TargetPort(*sp, lb.Endpoint{})
	for i := range eps {
		ep := &eps[i]
		if !ep.Ready || !ep.IP.IsValid() {
			continue
		}
		port, ok := fixedPort, true
		if !fixed {
			port, ok = lb.TargetPort(*sp, *ep)
		}
		if !ok {
			continue
		}
		a := ep.IP.Unmap()
		if !a.Is4() {
			continue
		}
		v := packAddrPort(a, port)
		all = append(all, v)
		if node != "" && ep.Node == node {
			local = append(local, v)
		}
	}
	slices.Sort(all)
	slices.Sort(local)
	c.sig.all, c.sig.local = slices.Compact(all), slices.Compact(local)
}

// packAddrPort packs an IPv4 address and port into a uint64 that sorts as
// netip.AddrPort.Compare does.
func packAddrPort(a netip.Addr, port uint16) uint64 {
	b := a.As4()
	return uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 | uint64(b[3])<<16 | uint64(port)
}

func unpackAddrPort(v uint64) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16)}), uint16(v))
}

// entry returns the fragments of service k, ready for this call, with the
// position in c.frags to look for the next service from. Services come
// sorted, so this is a merge of two sorted lists.
func (c *Compiler) entry(k lb.ServiceKey, j int) (*svcFrags, int) {
	if n := len(c.next); n > 0 && c.next[n-1].key == k {
		return c.next[n-1], j // the same key twice in the Input
	}
	for j < len(c.frags) && c.frags[j].key.Compare(k) < 0 {
		j++
	}
	var e *svcFrags
	if j < len(c.frags) && c.frags[j].key == k {
		e = c.frags[j]
		j++
		e.old, e.ports = e.ports, e.old[:0]
	} else {
		e = &svcFrags{key: k}
	}
	c.next = append(c.next, e)
	return e, j
}

// take returns the last call's fragment made of sig, or nil.
func (e *svcFrags) take(sig *portSig) *portFrag {
	for i, f := range e.old {
		if f != nil && f.equal(sig) {
			e.old[i] = nil
			return f
		}
	}
	return nil
}

// replaced returns the last call's fragment of the same port as sig, or
// nil.
func (e *svcFrags) replaced(sig *portSig) *portFrag {
	for _, f := range e.old {
		if f != nil && f.proto == sig.proto && f.port == sig.port {
			return f
		}
	}
	return nil
}

// keepSame makes the element lists of f that are the same as old's (same
// texts, which are made of the same values as the kernel elements) old's:
// the windows of the last Model that concat can then keep.
func (f *portFrag) keepSame(old *portFrag) {
	if old == nil {
		return
	}
	for k, es := range f.elems {
		if len(es) > 0 && slices.EqualFunc(es, old.elems[k], func(a, b nft.Element) bool { return a.Text == b.Text }) {
			f.elems[k] = old.elems[k]
		}
	}
}

// build compiles the fragment of a service port of svc made of sig.
func (c *Compiler) build(svc *lb.Service, sig *portSig) *portFrag {
	c.built++
	f := &portFrag{portSig: portSig{
		proto: sig.proto, port: sig.port, cip: sig.cip, vip: sig.vip,
		affinity: sig.affinity, localPolicy: sig.localPolicy, timeout: sig.timeout,
		ranges: slices.Clone(sig.ranges),
		all:    slices.Clone(sig.all), local: slices.Clone(sig.local),
	}}
	c.apAll, c.apLoc = c.apAll[:0], c.apLoc[:0]
	for _, v := range f.all {
		c.apAll = append(c.apAll, unpackAddrPort(v))
	}
	for _, v := range f.local {
		c.apLoc = append(c.apLoc, unpackAddrPort(v))
	}
	sp := &servicePort{
		svc: svc, cip: f.cip, vip: f.vip, proto: f.proto, port: f.port,
		key: svc.Key().String() + "/" + f.proto.String() + "/" + strconv.Itoa(int(f.port)),
		all: c.apAll, local: c.apLoc,
	}
	b := fragBuilder{f: f, s: &c.store, cidrOK: c.cidr.IsValid() && c.cidr.Addr().Is4(), cidr: c.cidr}
	b.servicePort(sp)
	return f
}

// model assembles the Model from c.order.
func (c *Compiler) model(in Input) nft.Model {
	var elems [numMaps][]nft.Element
	for k := range elems {
		elems[k] = c.concat(k)
	}
	nsets, nchains := 0, 0
	for _, f := range c.order {
		nsets += len(f.sets)
		if f.affinity {
			nchains += len(f.chains) // most are its own
		}
	}
	sets := make([]nft.Set, 0, nsets+8)
	for _, f := range c.order {
		sets = append(sets, f.sets...)
	}
	dispatchMap := func(name string, elems []nft.Element) nft.Set {
		return nft.Set{
			Name: name, Type: "ipv4_addr . inet_proto . inet_service : verdict", Elements: elems,
			Spec: nftables.Set{KeyType: addrProtoPortType, DataType: nftables.TypeVerdict, IsMap: true, Size: mapSize(len(elems))},
		}
	}
	endpointMap := func(name string, elems []nft.Element) nft.Set {
		return nft.Set{
			Name: name, Type: "ipv4_addr . inet_proto . inet_service . mark : ipv4_addr . inet_service", Elements: elems,
			Spec: nftables.Set{KeyType: endpointKeyType, DataType: addrPortType, IsMap: true, Size: mapSize(len(elems))},
		}
	}
	endpointChainMap := func(name string, elems []nft.Element) nft.Set {
		return nft.Set{
			Name: name, Type: "ipv4_addr . inet_proto . inet_service . mark : verdict", Elements: elems,
			Spec: nftables.Set{KeyType: endpointKeyType, DataType: nftables.TypeVerdict, IsMap: true, Size: mapSize(len(elems))},
		}
	}
	sets = append(sets,
		dispatchMap(MapServices, elems[mapServices]),
		dispatchMap(MapFilter, elems[mapFilter]),
		endpointMap(MapEndpoints, elems[mapEndpoints]),
		endpointMap(MapLocalEndpoints, elems[mapLocalEndpoints]),
		endpointChainMap(MapEndpointChains, elems[mapEndpointChains]),
		endpointChainMap(MapLocalEndpointChains, elems[mapLocalEndpointChains]),
		nft.Set{
			Name: SetAllowed, Type: "ipv4_addr . inet_proto . inet_service . ipv4_addr", Flags: []string{"interval"},
			Elements: elems[mapAllowed],
			Spec:     nftables.Set{KeyType: addrProtoPortAddrType, Interval: true, Concatenation: true},
		},
		nft.Set{
			Name: SetHairpin, Type: "ipv4_addr . ipv4_addr", Elements: c.hairpin(),
			Spec: nftables.Set{KeyType: addrAddrType},
		},
	)

	static := staticChains(in)
	if c.shared == nil {
		c.shared = map[sharedKey]bool{}
	}
	clear(c.shared)
	a := assembler{
		cidrOK: in.ClusterCIDR.IsValid() && in.ClusterCIDR.Addr().Is4(), cidr: in.ClusterCIDR,
		chains: append(make([]nft.Chain, 0, len(static)+nchains+16), static...),
		shared: c.shared,
	}
	for _, f := range c.order {
		for _, op := range f.chains {
			a.replay(op)
		}
	}
	return nft.Model{
		Family: firewall.TableFamily,
		Table:  firewall.TableName,
		Sets:   sets,
		Chains: slices.Clip(a.chains),
	}
}

// concat returns the elements of map k of the fragments of c.order, in
// order: the last Model's list when they are the same (every reused
// fragment's elements are a window of it), else a new list, which the
// fragments' elements then become windows of.
func (c *Compiler) concat(k int) []nft.Element {
	old := c.last[k]
	n, same := 0, true
	for _, f := range c.order {
		es := f.elems[k]
		if len(es) == 0 {
			continue
		}
		if same && (n+len(es) > len(old) || &es[0] != &old[n]) {
			same = false
		}
		n += len(es)
	}
	switch {
	case n == 0 && (k == mapServices || k == mapEndpoints):
		// Compile always made these two lists, the others on first use.
		c.last[k] = []nft.Element{}
		return c.last[k]
	case n == 0:
		c.last[k] = nil
		return nil
	case same && n == len(old):
		return old
	}
	out := make([]nft.Element, n)
	n = 0
	for _, f := range c.order {
		es := f.elems[k]
		if len(es) == 0 {
			continue
		}
		copy(out[n:], es)
		f.elems[k] = out[n : n+len(es) : n+len(es)]
		n += len(es)
	}
	c.last[k] = out
	return out
}

// hairpin returns the elements of svc-hairpin: every local backend's
// address, sorted, reusing the last list (or its elements) when it can.
func (c *Compiler) hairpin() []nft.Element {
	addrs := c.addrs[:0]
	for _, f := range c.order {
		for _, v := range f.local {
			addrs = append(addrs, uint32(v>>16))
		}
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	if c.hairpinElems != nil && slices.Equal(addrs, c.hairpinAddrs) {
		c.addrs = addrs
		return c.hairpinElems
	}
	out := make([]nft.Element, 0, len(addrs))
	old, oldElems := c.hairpinAddrs, c.hairpinElems
	j := 0
	for _, v := range addrs {
		for j < len(old) && old[j] < v {
			j++
		}
		if j < len(old) && old[j] == v {
			out = append(out, oldElems[j])
			continue
		}
		out = append(out, hairpinElement(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})))
	}
	c.hairpinElems = out
	c.addrs, c.hairpinAddrs = c.hairpinAddrs[:0], addrs
	return out
}

// assembler adds the fragments' chains to the Model, each shared chain
// (and the shared chains it uses) where the first fragment uses it.
type assembler struct {
	cidrOK bool
	cidr   netip.Prefix
	chains []nft.Chain
	shared map[sharedKey]bool
}

func (a *assembler) replay(op chainOp) {
	if op.chain != nil {
		a.chains = append(a.chains, *op.chain)
		return
	}
	switch op.kind {
	case opPick:
		a.pick(op.n)
	case opLocal:
		a.local(op.n, op.m)
	case opAffPick:
		a.affPick(op.n, false)
	case opAffPickLocal:
		a.affPick(op.n, true)
	}
}

// first reports whether the shared chain kind(n, m) is used for the first
// time.
func (a *assembler) first(kind uint8, n, m int) bool {
	k := sharedKey{kind, n, m}
	if a.shared[k] {
		return false
	}
	a.shared[k] = true
	return true
}

// pick adds svc-pick-N on first use.
func (a *assembler) pick(n int) {
	if a.first(opPick, n, 0) {
		a.chains = append(a.chains, nft.Chain{Name: pickChain(n), Rules: []nft.Rule{nft.NewRule(pickDNAT(uint32(n), MapEndpoints))}})
	}
}

// local adds svc-local-N-M (after what it uses) on first use.
func (a *assembler) local(n, m int) {
	if !a.first(opLocal, n, m) {
		return
	}
	a.pick(n)
	rules := shortCircuit(a.cidrOK, a.cidr, pickChain(n))
	if m == 0 {
		rules = append(rules, nft.NewRule(nft.Drop()))
	} else {
		pl := pickLocalChain(m)
		if a.first(opPickLocal, m, 0) {
			a.chains = append(a.chains, nft.Chain{Name: pl, Rules: []nft.Rule{nft.NewRule(pickDNAT(uint32(m), MapLocalEndpoints))}})
		}
		rules = append(rules, nft.NewRule(nft.Goto(pl)))
	}
	a.chains = append(a.chains, nft.Chain{Name: localChain(n, m), Rules: rules})
}

// affPick adds svc-aff-pick-N (or svc-aff-pick-local-N) on first use.
func (a *assembler) affPick(n int, local bool) {
	kind, name, set := uint8(opAffPick), affPickChain(n), MapEndpointChains
	if local {
		kind, name, set = opAffPickLocal, affPickLocalChain(n), MapLocalEndpointChains
	}
	if a.first(kind, n, 0) {
		a.chains = append(a.chains, nft.Chain{Name: name, Rules: []nft.Rule{nft.NewRule(pickVmap(uint32(n), set))}})
	}
}

// shortCircuit are the rules of a Local VIP's chain that send this node's
// own connections and its pods' to every endpoint (to chain).
func shortCircuit(cidrOK bool, cidr netip.Prefix, chain string) []nft.Rule {
	var rules []nft.Rule
	if cidrOK {
		rules = append(rules, nft.NewRule(nft.IPv4(), nft.PrefixMatch(nft.Saddr, cidr, false), nft.Goto(chain)))
	}
	return append(rules, nft.NewRule(fibSaddrLocal(), nft.Goto(chain)))
}
