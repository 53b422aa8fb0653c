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
// number, the ClusterIP, VIP, external IPs and node port it serves (after
// the conflicts of the whole Input are resolved, which is redone on every
// call), session affinity and its timeout, the external and internal
// traffic policies, the source ranges, the resolved backends (address and
// target port of the IPv4 endpoints that take new connections, and of
// those on Input.Node), and Input.ClusterCIDR. These are
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

	hairpinAddrs []uint32
	hairpinElems []nft.Element

	// Scratch space, kept between calls.
	svcs   []*ServiceAddrs
	seen   map[uint64]int // address . proto . port -> index in svcs
	seenNP map[uint32]int // proto . node port -> index in svcs
	ext    []netip.Addr   // a service's external IPs, sorted
	term   [2][]uint64    // terminating backends, all and local
	npIn   []netip.Prefix // the last NodePortAddresses
	npEls  []nft.Element  // and the elements of svc-nodeport-addrs
	npV6   []netip.Prefix
	order  []*portFrag // this call's service ports, in model order
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
	mapNodePorts
	mapFilterNodePorts
	mapNPEndpoints
	mapNPLocalEndpoints
	mapNPEndpointChains
	mapNPLocalEndpointChains
	numMaps
)

// portSig is what a service port's fragment is made of, besides the
// service's key and Input.ClusterCIDR.
type portSig struct {
	proto         proto
	port          uint16
	cip, vip      netip.Addr   // after conflicts; invalid when not served
	ext           []netip.Addr // external IPs served, after conflicts, sorted
	nodePort      uint16       // after conflicts; 0 when not served
	affinity      bool
	localPolicy   bool          // externalTrafficPolicy Local
	internalLocal bool          // internalTrafficPolicy Local
	timeout       time.Duration // with affinity: the effective timeout; else 0
	ranges        []netip.Prefix
	// Backends as address<<16 | port, sorted and unique: those that take
	// new connections (lb.Backends), and those of this node
	// (lb.LocalBackends).
	all, local []uint64
}

func (s *portSig) equal(o *portSig) bool {
	return s.proto == o.proto && s.port == o.port && s.cip == o.cip && s.vip == o.vip &&
		slices.Equal(s.ext, o.ext) && s.nodePort == o.nodePort &&
		s.affinity == o.affinity && s.localPolicy == o.localPolicy && s.internalLocal == o.internalLocal &&
		s.timeout == o.timeout &&
		slices.Equal(s.ranges, o.ranges) && slices.Equal(s.all, o.all) && slices.Equal(s.local, o.local)
}

// portFrag is the compiled fragment of one service port.
type portFrag struct {
	portSig
	// lists are the fragment's element lists that are not empty, by map
	// index: two or three of the numMaps (an array of all numMaps lists
	// was 312 bytes a service port).
	lists  []fragList
	sets   []nft.Set
	chains []chainOp
}

// fragList is a fragment's elements of map k.
type fragList struct {
	k  uint8
	es []nft.Element
}

// elems is the fragment's element list of map k (nil when empty).
func (f *portFrag) elems(k int) []nft.Element {
	for _, l := range f.lists {
		if int(l.k) == k {
			return l.es
		}
	}
	return nil
}

// chainOp is a chain of a fragment, in the order the fragment adds them:
// one of its own, or the use of a shared chain (svc-pick-N...), which the
// first fragment that uses it adds.
type chainOp struct {
	chain *nft.Chain // nil: the shared chain kind(n, m)
	kind  uint8
	np    bool // the node-port variant
	n, m  int
}

// sharedKey names a shared chain: kind(n, m).
type sharedKey struct {
	kind uint8
	np   bool
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
	c.nodePortAddrs(in.NodePortAddresses)
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
		c.seenNP = make(map[uint32]int)
	} else {
		clear(c.seen)
		clear(c.seenNP)
	}

	c.next = c.next[:0]
	j := 0 // c.frags[j:] are the last call's services not seen yet
	for si, sa := range svcs {
		s := &sa.Service
		if !s.Proxied() || s.ProxyElsewhere {
			continue
		}
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
		ext := c.ext[:0]
		for _, a := range s.ExternalIPs {
			if a = c.servedAddr(si, a); a.IsValid() {
				ext = append(ext, a)
			}
		}
		slices.SortFunc(ext, netip.Addr.Compare)
		ext = slices.Compact(ext)
		c.ext = ext
		hasNP := false
		if s.NodePorts {
			for i := range s.Ports {
				if i < len(sa.NodePorts) && sa.NodePorts[i] != 0 {
					hasNP = true
				}
			}
		}
		if !cip.IsValid() && !vip.IsValid() && len(ext) == 0 && !hasNP {
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
			if c.portTwice(s, i, pr) {
				c.notes = append(c.notes, fmt.Sprintf("service %s: port %d/%s is listed twice; skipped", c.name(si), p.Port, pr))
				continue
			}
			sig := &c.sig
			sig.proto, sig.port = pr, p.Port
			sig.cip, sig.vip, sig.ext, sig.nodePort = netip.Addr{}, netip.Addr{}, sig.ext[:0], 0
			if cip.IsValid() && c.claim(cip, pr, p.Port, si) {
				sig.cip = cip
			}
			if vip.IsValid() && c.claim(vip, pr, p.Port, si) {
				sig.vip = vip
			}
			for _, a := range ext {
				if c.claimExternal(a, pr, p.Port, si) {
					sig.ext = append(sig.ext, a)
				}
			}
			if hasNP && i < len(sa.NodePorts) && sa.NodePorts[i] != 0 && c.claimNodePort(pr, sa.NodePorts[i], si) {
				sig.nodePort = sa.NodePorts[i]
			}
			if !sig.cip.IsValid() && !sig.vip.IsValid() && len(sig.ext) == 0 && sig.nodePort == 0 {
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
			sig.internalLocal = s.InternalTrafficPolicy == lb.PolicyLocal
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
	k := addrKey(a, p, port)
	if other, ok := c.seen[k]; ok {
		c.notes = append(c.notes, fmt.Sprintf("service %s: %s:%d/%s is already served for %s; skipped", c.name(si), a, port, p, c.name(other)))
		return false
	}
	c.seen[k] = si
	return true
}

// portTwice reports whether a port of s before i has the same protocol
// and number as port i (Kubernetes refuses such a service).
func (c *Compiler) portTwice(s *lb.Service, i int, pr proto) bool {
	for j := range i {
		if pj, ok := parseProto(s.Ports[j].Protocol); ok && pj == pr && s.Ports[j].Port == s.Ports[i].Port {
			return true
		}
	}
	return false
}

// claimExternal is claim for an external IP, which the service may also
// have as its ClusterIP or VIP (or twice): that is no conflict.
func (c *Compiler) claimExternal(a netip.Addr, p proto, port uint16, si int) bool {
	if other, ok := c.seen[addrKey(a, p, port)]; ok && other == si {
		return false
	}
	return c.claim(a, p, port, si)
}

// claimNodePort records that service si serves node port p/port, or notes
// that an earlier service does.
func (c *Compiler) claimNodePort(p proto, port uint16, si int) bool {
	k := uint32(p)<<16 | uint32(port)
	if other, ok := c.seenNP[k]; ok {
		c.notes = append(c.notes, fmt.Sprintf("service %s: node port %d/%s is already served for %s; skipped", c.name(si), port, p, c.name(other)))
		return false
	}
	c.seenNP[k] = si
	return true
}

func addrKey(a netip.Addr, p proto, port uint16) uint64 {
	b := a.As4()
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 | uint64(p)<<16 | uint64(port)
}

// backends sets c.sig.all and c.sig.local to the backends of service port
// sp: lb.Backends and lb.LocalBackends, the IPv4 ones, sorted and without
// duplicates.
func (c *Compiler) backends(node string, sp *lb.ServicePort, eps []lb.Endpoint) {
	all, local := c.sig.all[:0], c.sig.local[:0]
	termAll, termLocal := c.term[0][:0], c.term[1][:0]
	// A number, or nothing, is the same port for every endpoint.
	fixed := sp.TargetPort.Type == intstr.Int || sp.TargetPort.StrVal == ""
	fixedPort, _ := lb.TargetPort(*sp, lb.Endpoint{})
	for i := range eps {
		ep := &eps[i]
		if !ep.IP.IsValid() || !ep.Ready && !ep.TakesNew() {
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
		isLocal := node != "" && ep.Node == node
		if ep.Ready {
			all = append(all, v)
			if isLocal {
				local = append(local, v)
			}
			continue
		}
		termAll = append(termAll, v)
		if isLocal {
			termLocal = append(termLocal, v)
		}
	}
	// KEP-1669: without a ready endpoint, the serving terminating ones;
	// for all endpoints and for the local ones apart.
	if len(all) == 0 {
		all, termAll = append(all, termAll...), termAll[:0]
	}
	if len(local) == 0 {
		local, termLocal = append(local, termLocal...), termLocal[:0]
	}
	c.term[0], c.term[1] = termAll, termLocal
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

// keepSame makes the element lists of f that are the same as old's (equal
// elements: the same kernel forms and formats) old's:
// the windows of the last Model that concat can then keep.
func (f *portFrag) keepSame(old *portFrag) {
	if old == nil {
		return
	}
	for i, l := range f.lists {
		if oes := old.elems(int(l.k)); slices.Equal(l.es, oes) {
			f.lists[i].es = oes
		}
	}
}

// build compiles the fragment of a service port of svc made of sig.
func (c *Compiler) build(svc *lb.Service, sig *portSig) *portFrag {
	c.built++
	f := &portFrag{portSig: portSig{
		proto: sig.proto, port: sig.port, cip: sig.cip, vip: sig.vip,
		ext: slices.Clone(sig.ext), nodePort: sig.nodePort,
		affinity: sig.affinity, localPolicy: sig.localPolicy, internalLocal: sig.internalLocal,
		timeout: sig.timeout,
		ranges:  slices.Clone(sig.ranges),
		all:     slices.Clone(sig.all), local: slices.Clone(sig.local),
	}}
	c.apAll, c.apLoc = c.apAll[:0], c.apLoc[:0]
	for _, v := range f.all {
		c.apAll = append(c.apAll, unpackAddrPort(v))
	}
	for _, v := range f.local {
		c.apLoc = append(c.apLoc, unpackAddrPort(v))
	}
	sp := &servicePort{
		svc: svc, cip: f.cip, vip: f.vip, ext: f.ext, nodePort: f.nodePort, proto: f.proto, port: f.port,
		extLocal: f.localPolicy, intLocal: f.internalLocal,
		key: svc.Key().String() + "/" + f.proto.String() + "/" + strconv.Itoa(int(f.port)),
		all: c.apAll, local: c.apLoc,
	}
	b := fragBuilder{f: f, s: &c.store, cidrOK: c.cidr.IsValid() && c.cidr.Addr().Is4(), cidr: c.cidr}
	b.servicePort(sp)
	return f
}

// model assembles the Model from c.order.
func (c *Compiler) model(in Input) nft.Model {
	var elems [numMaps][][]nft.Element
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
	sets := make([]nft.Set, 0, nsets+15)
	for _, f := range c.order {
		sets = append(sets, f.sets...)
	}
	// A map's size hint follows its element count.
	sized := func(s nft.Set) nft.Set {
		s.Spec.Size = mapSize(s.Len())
		return s
	}
	dispatchMap := func(name string, parts [][]nft.Element) nft.Set {
		return sized(nft.Set{
			Name: name, Type: "ipv4_addr . inet_proto . inet_service : verdict", Parts: parts,
			Spec: nftables.Set{KeyType: addrProtoPortType, DataType: nftables.TypeVerdict, IsMap: true},
		})
	}
	endpointMap := func(name string, parts [][]nft.Element) nft.Set {
		return sized(nft.Set{
			Name: name, Type: "ipv4_addr . inet_proto . inet_service . mark : ipv4_addr . inet_service", Parts: parts,
			Spec: nftables.Set{KeyType: endpointKeyType, DataType: addrPortType, IsMap: true},
		})
	}
	endpointChainMap := func(name string, parts [][]nft.Element) nft.Set {
		return sized(nft.Set{
			Name: name, Type: "ipv4_addr . inet_proto . inet_service . mark : verdict", Parts: parts,
			Spec: nftables.Set{KeyType: endpointKeyType, DataType: nftables.TypeVerdict, IsMap: true},
		})
	}
	npDispatchMap := func(name string, parts [][]nft.Element) nft.Set {
		return sized(nft.Set{
			Name: name, Type: "inet_proto . inet_service : verdict", Parts: parts,
			Spec: nftables.Set{KeyType: protoPortType, DataType: nftables.TypeVerdict, IsMap: true},
		})
	}
	npEndpointMap := func(name string, parts [][]nft.Element) nft.Set {
		return sized(nft.Set{
			Name: name, Type: "inet_proto . inet_service . mark : ipv4_addr . inet_service", Parts: parts,
			Spec: nftables.Set{KeyType: npEndpointKeyType, DataType: addrPortType, IsMap: true},
		})
	}
	npEndpointChainMap := func(name string, parts [][]nft.Element) nft.Set {
		return sized(nft.Set{
			Name: name, Type: "inet_proto . inet_service . mark : verdict", Parts: parts,
			Spec: nftables.Set{KeyType: npEndpointKeyType, DataType: nftables.TypeVerdict, IsMap: true},
		})
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
			Parts: elems[mapAllowed],
			Spec:  nftables.Set{KeyType: addrProtoPortAddrType, Interval: true, Concatenation: true},
		},
		nft.Set{
			Name: SetHairpin, Type: "ipv4_addr . ipv4_addr", Elements: c.hairpin(),
			Spec: nftables.Set{KeyType: addrAddrType},
		},
		npDispatchMap(MapNodePorts, elems[mapNodePorts]),
		npDispatchMap(MapFilterNodePorts, elems[mapFilterNodePorts]),
		npEndpointMap(MapNodePortEndpoints, elems[mapNPEndpoints]),
		npEndpointMap(MapNodePortLocalEndpoints, elems[mapNPLocalEndpoints]),
		npEndpointChainMap(MapNodePortEndpointChains, elems[mapNPEndpointChains]),
		npEndpointChainMap(MapNodePortLocalEpChains, elems[mapNPLocalEndpointChains]),
		nft.Set{
			Name: SetNodePortAddrs, Type: "ipv4_addr", Flags: []string{"interval"}, Elements: c.npEls,
			Spec: nftables.Set{KeyType: nftables.TypeIPAddr, Interval: true},
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

// concat returns the element lists of map k of the fragments of c.order,
// in order, as a Set's Parts: nothing is copied, and a fragment reused
// from the last call is the same piece, which the Applier's diff skips.
// Nil when no fragment has elements for k.
func (c *Compiler) concat(k int) [][]nft.Element {
	var out [][]nft.Element
	for _, f := range c.order {
		if es := f.elems(k); len(es) > 0 {
			out = append(out, es[:len(es):len(es)])
		}
	}
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
		a.pick(op.np, op.n)
	case opPickLocal:
		a.pickLocal(op.np, op.n)
	case opLocal:
		a.local(op.np, op.n, op.m)
	case opAffPick:
		a.affPick(op.np, op.n, false)
	case opAffPickLocal:
		a.affPick(op.np, op.n, true)
	}
}

// first reports whether the shared chain kind(n, m) is used for the first
// time.
func (a *assembler) first(kind uint8, np bool, n, m int) bool {
	k := sharedKey{kind, np, n, m}
	if a.shared[k] {
		return false
	}
	a.shared[k] = true
	return true
}

func endpointsMap(np, local bool) string {
	ids := mapsOf(np)
	if local {
		return ids.localEpsName
	}
	return ids.epsName
}

// pick adds svc-pick-N on first use.
func (a *assembler) pick(np bool, n int) {
	if a.first(opPick, np, n, 0) {
		a.chains = append(a.chains, nft.Chain{Name: pickChain(np, n), Rules: []nft.Rule{nft.NewRule(pickDNAT(np, uint32(n), endpointsMap(np, false)))}})
	}
}

// pickLocal adds svc-pick-local-M on first use.
func (a *assembler) pickLocal(np bool, m int) {
	if a.first(opPickLocal, np, m, 0) {
		a.chains = append(a.chains, nft.Chain{Name: pickLocalChain(np, m), Rules: []nft.Rule{nft.NewRule(pickDNAT(np, uint32(m), endpointsMap(np, true)))}})
	}
}

// local adds svc-local-N-M (after what it uses) on first use.
func (a *assembler) local(np bool, n, m int) {
	if !a.first(opLocal, np, n, m) {
		return
	}
	a.pick(np, n)
	rules := shortCircuit(a.cidrOK, a.cidr, pickChain(np, n))
	if m == 0 {
		rules = append(rules, nft.NewRule(nft.Drop()))
	} else {
		a.pickLocal(np, m)
		rules = append(rules, nft.NewRule(nft.Goto(pickLocalChain(np, m))))
	}
	a.chains = append(a.chains, nft.Chain{Name: localChain(np, n, m), Rules: rules})
}

// affPick adds svc-aff-pick-N (or svc-aff-pick-local-N) on first use.
func (a *assembler) affPick(np bool, n int, local bool) {
	kind, name, set := uint8(opAffPick), affPickChain(np, n), mapsOf(np).epChainsName
	if local {
		kind, name, set = opAffPickLocal, affPickLocalChain(np, n), mapsOf(np).localEpChainsName
	}
	if a.first(kind, np, n, 0) {
		a.chains = append(a.chains, nft.Chain{Name: name, Rules: []nft.Rule{nft.NewRule(pickVmap(np, uint32(n), set))}})
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

// nodePortAddrs sets c.npEls to the elements of svc-nodeport-addrs for
// prefixes, reusing the last ones when the prefixes are the same, and
// notes the IPv6 prefixes.
func (c *Compiler) nodePortAddrs(prefixes []netip.Prefix) {
	if c.npEls == nil || !slices.Equal(prefixes, c.npIn) {
		ranges, v6 := nodePortRanges(prefixes)
		els := make([]nft.Element, 0, len(ranges))
		for _, r := range ranges {
			els = append(els, rangeElement(r))
		}
		c.npIn, c.npEls, c.npV6 = slices.Clone(prefixes), els, v6
	}
	for _, p := range c.npV6 {
		c.notes = append(c.notes, fmt.Sprintf("node port address %s is IPv6, which the proxy does not serve yet; skipped", p))
	}
}
