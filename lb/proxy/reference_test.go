package proxy

// The implementation of Compile before the incremental Compiler, kept as
// the reference the Compiler's output is compared with (exactly: same sets,
// elements, chains and order). Renamed copy; do not change it.

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/lb"
)

// compiler accumulates the model.
type refCompiler struct {
	in     Input
	cidrOK bool
	store  refElemStore

	svcElems, filterElems, epElems, localEpElems []firewall.Element
	epChainElems, localEpChainElems, allowElems  []firewall.Element
	chains                                       []firewall.Chain
	sets                                         []firewall.Set
	hairpin                                      map[netip.Addr]bool
	shared                                       map[string]bool // shared chains made
}

func refCompile(in Input) (firewall.Model, []string) {
	var notes []string
	ports := refServicePorts(in, &notes)
	nEndpoints := 0
	for _, sp := range ports {
		nEndpoints += len(sp.all)
	}
	c := &refCompiler{
		in:       in,
		cidrOK:   in.ClusterCIDR.IsValid() && in.ClusterCIDR.Addr().Is4(),
		svcElems: make([]firewall.Element, 0, 2*len(ports)),
		epElems:  make([]firewall.Element, 0, 2*nEndpoints),
		hairpin:  map[netip.Addr]bool{},
		shared:   map[string]bool{},
	}
	for _, sp := range ports {
		c.servicePort(sp)
	}
	return c.model(), notes
}

func (c *refCompiler) servicePort(sp *servicePort) {
	for _, ep := range sp.local {
		c.hairpin[ep.Addr()] = true
	}
	hasRanges := sp.vip.IsValid() && len(sp.svc.SourceRanges) > 0
	if hasRanges {
		for _, p := range allowedRanges(sp.svc.SourceRanges) {
			c.allowElems = append(c.allowElems, refAllowElement(sp.vip, sp.proto, sp.port, p))
		}
	}
	if len(sp.all) == 0 {
		for _, a := range []netip.Addr{sp.cip, sp.vip} {
			if !a.IsValid() {
				continue
			}
			target := ChainReject
			if a == sp.vip && hasRanges {
				target = ChainAllowReject
			}
			c.filterElems = append(c.filterElems, refDispatchElement(a, sp.proto, sp.port, target))
		}
		return
	}
	if hasRanges {
		c.filterElems = append(c.filterElems, refDispatchElement(sp.vip, sp.proto, sp.port, ChainAllowCheck))
	}
	if sp.affinity() {
		c.stickyServicePort(sp)
		return
	}

	n, m := len(sp.all), len(sp.local)
	for _, a := range []netip.Addr{sp.cip, sp.vip} {
		if !a.IsValid() {
			continue
		}
		for i, ep := range sp.all {
			c.epElems = append(c.epElems, c.store.refEndpointElement(a, sp.proto, sp.port, uint32(i), ep))
		}
		target := c.pick(n)
		if a == sp.vip && sp.localPolicy() {
			for i, ep := range sp.local {
				c.localEpElems = append(c.localEpElems, c.store.refEndpointElement(a, sp.proto, sp.port, uint32(i), ep))
			}
			target = c.local(n, m)
		}
		c.svcElems = append(c.svcElems, refDispatchElement(a, sp.proto, sp.port, target))
	}
}

// stickyServicePort compiles a service port with sessionAffinity ClientIP.
func (c *refCompiler) stickyServicePort(sp *servicePort) {
	for _, ep := range sp.all {
		set := sp.affinitySet(ep)
		c.sets = append(c.sets, firewall.Set{
			Name: set, Type: "ipv4_addr", Flags: []string{"dynamic", "timeout"},
			Spec: nftables.Set{KeyType: nftables.TypeIPAddr, Dynamic: true, HasTimeout: true, Size: AffinitySetSize},
		})
		c.chains = append(c.chains, firewall.Chain{Name: sp.endpointChain(ep), Rules: []firewall.Rule{
			firewall.NewRule(updateSaddr(set, sp.affinityTimeout())),
			firewall.NewRule(l4proto(sp.proto), dnatTo(ep)),
		}})
	}
	remembered := func(eps []netip.AddrPort) []firewall.Rule {
		rules := make([]firewall.Rule, 0, len(eps)+1)
		for _, ep := range eps {
			rules = append(rules, firewall.NewRule(saddrInSet(sp.affinitySet(ep)), firewall.Goto(sp.endpointChain(ep))))
		}
		return rules
	}

	sticky := firewall.Chain{Name: sp.stickyChain(), Rules: remembered(sp.all)}
	sticky.Rules = append(sticky.Rules, firewall.NewRule(firewall.Goto(c.affPick(len(sp.all), false))))
	c.chains = append(c.chains, sticky)
	for _, a := range []netip.Addr{sp.cip, sp.vip} {
		if !a.IsValid() {
			continue
		}
		for i, ep := range sp.all {
			c.epChainElems = append(c.epChainElems, c.store.refEndpointChainElement(a, sp.proto, sp.port, uint32(i), sp.endpointChain(ep)))
		}
		target := sticky.Name
		if a == sp.vip && sp.localPolicy() {
			local := firewall.Chain{Name: sp.stickyLocalChain()}
			local.Rules = append(local.Rules, c.shortCircuit(sticky.Name)...)
			local.Rules = append(local.Rules, remembered(sp.local)...)
			if len(sp.local) == 0 {
				local.Rules = append(local.Rules, firewall.NewRule(firewall.Drop()))
			} else {
				local.Rules = append(local.Rules, firewall.NewRule(firewall.Goto(c.affPick(len(sp.local), true))))
			}
			for i, ep := range sp.local {
				c.localEpChainElems = append(c.localEpChainElems, c.store.refEndpointChainElement(a, sp.proto, sp.port, uint32(i), sp.endpointChain(ep)))
			}
			c.chains = append(c.chains, local)
			target = local.Name
		}
		c.svcElems = append(c.svcElems, refDispatchElement(a, sp.proto, sp.port, target))
	}
}

// shortCircuit are the rules of a Local VIP's chain that send this node's
// own connections and its pods' to every endpoint (to chain).
func (c *refCompiler) shortCircuit(chain string) []firewall.Rule {
	var rules []firewall.Rule
	if c.cidrOK {
		rules = append(rules, firewall.NewRule(firewall.IPv4(), firewall.PrefixMatch(firewall.Saddr, c.in.ClusterCIDR, false), firewall.Goto(chain)))
	}
	return append(rules, firewall.NewRule(fibSaddrLocal(), firewall.Goto(chain)))
}

// pick returns svc-pick-N, making it on first use.
func (c *refCompiler) pick(n int) string {
	name := pickChain(n)
	c.addShared(name, func() []firewall.Rule { return []firewall.Rule{firewall.NewRule(pickDNAT(uint32(n), MapEndpoints))} })
	return name
}

// local returns svc-local-N-M, making it (and what it uses) on first use.
func (c *refCompiler) local(n, m int) string {
	name := localChain(n, m)
	c.addShared(name, func() []firewall.Rule {
		rules := c.shortCircuit(c.pick(n))
		if m == 0 {
			return append(rules, firewall.NewRule(firewall.Drop()))
		}
		pl := pickLocalChain(m)
		c.addShared(pl, func() []firewall.Rule {
			return []firewall.Rule{firewall.NewRule(pickDNAT(uint32(m), MapLocalEndpoints))}
		})
		return append(rules, firewall.NewRule(firewall.Goto(pl)))
	})
	return name
}

// affPick returns svc-aff-pick-N (or svc-aff-pick-local-N).
func (c *refCompiler) affPick(n int, local bool) string {
	name, set := affPickChain(n), MapEndpointChains
	if local {
		name, set = affPickLocalChain(n), MapLocalEndpointChains
	}
	c.addShared(name, func() []firewall.Rule { return []firewall.Rule{firewall.NewRule(pickVmap(uint32(n), set))} })
	return name
}

func (c *refCompiler) addShared(name string, rules func() []firewall.Rule) {
	if c.shared[name] {
		return
	}
	c.shared[name] = true
	c.chains = append(c.chains, firewall.Chain{Name: name, Rules: rules()})
}

func (c *refCompiler) model() firewall.Model {
	hairpin := make([]firewall.Element, 0, len(c.hairpin))
	for _, a := range sortedAddrs(c.hairpin) {
		hairpin = append(hairpin, refHairpinElement(a))
	}
	dispatchMap := func(name string, elems []firewall.Element) firewall.Set {
		return firewall.Set{
			Name: name, Type: "ipv4_addr . inet_proto . inet_service : verdict", Elements: elems,
			Spec: nftables.Set{KeyType: addrProtoPortType, DataType: nftables.TypeVerdict, IsMap: true, Size: mapSize(len(elems))},
		}
	}
	endpointMap := func(name string, elems []firewall.Element) firewall.Set {
		return firewall.Set{
			Name: name, Type: "ipv4_addr . inet_proto . inet_service . mark : ipv4_addr . inet_service", Elements: elems,
			Spec: nftables.Set{KeyType: endpointKeyType, DataType: addrPortType, IsMap: true, Size: mapSize(len(elems))},
		}
	}
	endpointChainMap := func(name string, elems []firewall.Element) firewall.Set {
		return firewall.Set{
			Name: name, Type: "ipv4_addr . inet_proto . inet_service . mark : verdict", Elements: elems,
			Spec: nftables.Set{KeyType: endpointKeyType, DataType: nftables.TypeVerdict, IsMap: true, Size: mapSize(len(elems))},
		}
	}
	sets := append(c.sets,
		dispatchMap(MapServices, c.svcElems),
		dispatchMap(MapFilter, c.filterElems),
		endpointMap(MapEndpoints, c.epElems),
		endpointMap(MapLocalEndpoints, c.localEpElems),
		endpointChainMap(MapEndpointChains, c.epChainElems),
		endpointChainMap(MapLocalEndpointChains, c.localEpChainElems),
		firewall.Set{
			Name: SetAllowed, Type: "ipv4_addr . inet_proto . inet_service . ipv4_addr", Flags: []string{"interval"},
			Elements: c.allowElems,
			Spec:     nftables.Set{KeyType: addrProtoPortAddrType, Interval: true, Concatenation: true},
		},
		firewall.Set{
			Name: SetHairpin, Type: "ipv4_addr . ipv4_addr", Elements: hairpin,
			Spec: nftables.Set{KeyType: addrAddrType},
		},
	)
	return firewall.Model{
		Family: firewall.TableFamily,
		Table:  firewall.TableName,
		Sets:   sets,
		Chains: append(staticChains(c.in), c.chains...),
	}
}

// servicePorts collects the service ports to compile, sorted by service,
// with their backends.
func refServicePorts(in Input, notes *[]string) []*servicePort {
	svcs := make([]*ServiceAddrs, len(in.Services))
	for i := range in.Services {
		svcs[i] = &in.Services[i]
	}
	slices.SortStableFunc(svcs, func(a, b *ServiceAddrs) int { return a.Service.Key().Compare(b.Service.Key()) })

	type addrKey struct {
		a     netip.Addr
		proto proto
		port  uint16
	}
	seen := make(map[addrKey]string, 2*len(svcs)) // address, protocol, port -> service using it
	claim := func(a netip.Addr, p proto, port uint16, svc string) bool {
		k := addrKey{a, p, port}
		if other, ok := seen[k]; ok {
			*notes = append(*notes, fmt.Sprintf("service %s: %s:%d/%s is already served for %s; skipped", svc, a, port, p, other))
			return false
		}
		seen[k] = svc
		return true
	}

	out := make([]*servicePort, 0, len(svcs))
	for _, sa := range svcs {
		s := &sa.Service
		name := s.Key().String()
		cip, vip := sa.ClusterIP, sa.VIP
		for _, a := range []*netip.Addr{&cip, &vip} {
			if a.IsValid() && !a.Unmap().Is4() {
				*notes = append(*notes, fmt.Sprintf("service %s: %s is IPv6, which the proxy does not serve yet; skipped", name, *a))
				*a = netip.Addr{}
			}
			*a = a.Unmap()
		}
		if s.Type != lb.TypeLoadBalancer {
			vip = netip.Addr{}
		}
		if vip.IsValid() {
			for _, p := range s.SourceRanges {
				if p.IsValid() && !p.Addr().Is4() && !(p.Addr().Is4In6() && p.Bits() >= 96) {
					*notes = append(*notes, fmt.Sprintf("service %s: source range %s is IPv6, which the proxy does not serve yet; skipped", name, p))
				}
			}
		}
		if !cip.IsValid() && !vip.IsValid() {
			continue
		}
		backends := lb.Backends(*s, in.Endpoints[s.Key()])
		for i, p := range s.Ports {
			pr, ok := parseProto(p.Protocol)
			if !ok {
				*notes = append(*notes, fmt.Sprintf("service %s: port %d: protocol %q is not TCP, UDP or SCTP; skipped", name, p.Port, p.Protocol))
				continue
			}
			sp := &servicePort{
				svc: s, proto: pr, port: p.Port,
				key: name + "/" + pr.String() + "/" + strconv.Itoa(int(p.Port)),
			}
			if cip.IsValid() && claim(cip, pr, p.Port, name) {
				sp.cip = cip
			}
			if vip.IsValid() && claim(vip, pr, p.Port, name) {
				sp.vip = vip
			}
			if !sp.cip.IsValid() && !sp.vip.IsValid() {
				continue
			}
			sp.all = make([]netip.AddrPort, 0, len(backends[i]))
			for _, b := range backends[i] {
				if ap := netip.AddrPortFrom(b.IP.Unmap(), b.Port); ap.Addr().Is4() {
					sp.all = append(sp.all, ap)
					if in.Node != "" && b.Node == in.Node {
						sp.local = append(sp.local, ap)
					}
				}
			}
			slices.SortFunc(sp.all, netip.AddrPort.Compare)
			sp.all = slices.Compact(sp.all)
			slices.SortFunc(sp.local, netip.AddrPort.Compare)
			sp.local = slices.Compact(sp.local)
			out = append(out, sp)
		}
	}
	return out
}

// refElemStore hands out kernel elements and their bytes from a few large
// blocks: a big model has 10^5 endpoint elements.
type refElemStore struct {
	kernel []nftables.SetElement
	bytes  []byte
	text   []byte // scratch for element texts
}

func (s *refElemStore) next(nbytes int) (*nftables.SetElement, []nftables.SetElement, []byte) {
	if len(s.kernel) == 0 {
		s.kernel = make([]nftables.SetElement, 1024)
	}
	if len(s.bytes) < nbytes {
		s.bytes = make([]byte, 32<<10)
	}
	k := s.kernel[:1:1]
	s.kernel = s.kernel[1:]
	b := s.bytes[:nbytes:nbytes]
	s.bytes = s.bytes[nbytes:]
	return &k[0], k, b
}

// endpointElement is "10.96.0.10 . tcp . 80 . 0x00000001 : 10.244.1.5 . 8080".
func (s *refElemStore) refEndpointElement(a netip.Addr, p proto, port uint16, index uint32, ep netip.AddrPort) firewall.Element {
	e, kernel, b := s.next(24)
	refEndpointKey(b, a, p, port, index)
	e4 := ep.Addr().As4()
	copy(b[16:20], e4[:])
	b[20], b[21] = byte(ep.Port()>>8), byte(ep.Port())
	e.Key, e.Val = b[:16], b[16:24]
	buf := refAppendEndpointKey(s.text[:0], a, p, port, index)
	buf = append(buf, " : "...)
	buf = ep.Addr().AppendTo(buf)
	buf = append(buf, " . "...)
	buf = strconv.AppendUint(buf, uint64(ep.Port()), 10)
	s.text = buf
	return firewall.Element{Text: string(buf), Kernel: kernel}
}

// endpointChainElement is "10.96.0.10 . tcp . 80 . 0x00000001 : goto chain".
func (s *refElemStore) refEndpointChainElement(a netip.Addr, p proto, port uint16, index uint32, chain string) firewall.Element {
	e, kernel, b := s.next(16)
	refEndpointKey(b, a, p, port, index)
	e.Key = b
	e.VerdictData = &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain}
	buf := refAppendEndpointKey(s.text[:0], a, p, port, index)
	buf = append(buf, " : goto "...)
	buf = append(buf, chain...)
	s.text = buf
	return firewall.Element{Text: string(buf), Kernel: kernel}
}

// dispatchElement is "10.96.0.10 . tcp . 80 : goto chain".
func refDispatchElement(a netip.Addr, p proto, port uint16, chain string) firewall.Element {
	buf := make([]byte, 0, 32+len(chain))
	buf = appendAddrProtoPort(buf, a, p, port)
	buf = append(buf, " : goto "...)
	buf = append(buf, chain...)
	return firewall.Element{
		Text: string(buf),
		Kernel: []nftables.SetElement{{
			Key:         refAddrProtoPortKey(a, p, port),
			VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain},
		}},
	}
}

// allowElement is "VIP . tcp . 80 . 192.0.2.0/24": a pipapo element with an
// inclusive key end.
func refAllowElement(vip netip.Addr, p proto, port uint16, src netip.Prefix) firewall.Element {
	src = src.Masked()
	lo := src.Addr().As4()
	hi := lastAddr(src).As4()
	key := append(refAddrProtoPortKey(vip, p, port), lo[:]...)
	end := append(refAddrProtoPortKey(vip, p, port), hi[:]...)
	text := src.String()
	if src.IsSingleIP() {
		text = src.Addr().String()
	}
	return firewall.Element{
		Text:   string(appendAddrProtoPort(nil, vip, p, port)) + " . " + text,
		Kernel: []nftables.SetElement{{Key: key, KeyEnd: end}},
	}
}

func refHairpinElement(a netip.Addr) firewall.Element {
	b := a.As4()
	buf := make([]byte, 0, 32)
	buf = a.AppendTo(buf)
	buf = append(buf, " . "...)
	buf = a.AppendTo(buf)
	return firewall.Element{
		Text:   string(buf),
		Kernel: []nftables.SetElement{{Key: []byte{b[0], b[1], b[2], b[3], b[0], b[1], b[2], b[3]}}},
	}
}

func sortedAddrs(m map[netip.Addr]bool) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func refAddrProtoPortKey(a netip.Addr, p proto, port uint16) []byte {
	b := a.As4()
	return []byte{b[0], b[1], b[2], b[3], byte(p), 0, 0, 0, byte(port >> 8), byte(port), 0, 0}
}

// endpointKey is the key of the endpoint maps: address . proto . port .
// index (the index host-endian, as numgen writes it).
func refEndpointKey(b []byte, a netip.Addr, p proto, port uint16, index uint32) {
	a4 := a.As4()
	copy(b, a4[:])
	b[4] = byte(p)
	b[8], b[9] = byte(port>>8), byte(port)
	copy(b[12:16], binaryutil.NativeEndian.PutUint32(index))
}

// appendEndpointKey appends "10.96.0.10 . tcp . 80 . 0x00000002" (the
// index printed as nft prints a mark).
func refAppendEndpointKey(buf []byte, a netip.Addr, p proto, port uint16, index uint32) []byte {
	const digits = "0123456789abcdef"
	buf = appendAddrProtoPort(buf, a, p, port)
	buf = append(buf, " . 0x"...)
	for shift := 28; shift >= 0; shift -= 4 {
		buf = append(buf, digits[(index>>shift)&0xf])
	}
	return buf
}
