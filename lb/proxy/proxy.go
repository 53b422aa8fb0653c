package proxy

import (
	"cmp"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/google/nftables"
	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/lb"
)

// Names of the static chains, maps and sets of the fragment. Everything the
// proxy adds to table inet netloom starts with "svc-".
const (
	ChainPrerouting       = "svc-prerouting"        // nat, prerouting, dstnat
	ChainOutput           = "svc-output"            // nat, output
	ChainPostrouting      = "svc-postrouting"       // nat, postrouting, srcnat
	ChainFilterPrerouting = "svc-filter-prerouting" // filter, prerouting, before DNAT
	ChainFilterOutput     = "svc-filter-output"     // filter, output, before DNAT
	ChainAllowCheck       = "svc-allow-check"       // source ranges
	ChainAllowReject      = "svc-allow-reject"      // source ranges, then reject (no endpoints)
	ChainReject           = "svc-reject"            // no endpoints

	// ip . proto . port : verdict. The one lookup per new connection.
	MapServices = "svc-ips"
	MapFilter   = "svc-filter-ips"
	// ip . proto . port . index : endpoint ip . port, and the same for the
	// local endpoints of externalTrafficPolicy Local VIPs.
	MapEndpoints      = "svc-eps"
	MapLocalEndpoints = "svc-local-eps"
	// ip . proto . port . index : goto endpoint chain (sessionAffinity).
	MapEndpointChains      = "svc-ep-chains"
	MapLocalEndpointChains = "svc-local-ep-chains"
	// VIP . proto . port . allowed source range (loadBalancerSourceRanges).
	SetAllowed = "svc-allow"
	// pod . pod for the pods of this node (hairpin).
	SetHairpin = "svc-hairpin"
)

// Priorities of the base chains. The output chains use plain numbers: nft
// before 1.0.7 names -100 "dstnat" only on prerouting, later versions on
// output too, so a number within 10 of a named priority lists differently
// across versions. For nat chains the priority only orders them among nat
// chains; the kernel's NAT hooks run at their fixed places.
const (
	PriorityNATPrerouting    int32 = firewall.PriorityDstNAT      // dstnat
	PriorityNATOutput        int32 = firewall.PriorityDstNAT - 11 // -111
	PriorityNATPostrouting   int32 = firewall.PrioritySrcNAT      // srcnat
	PriorityFilterPrerouting int32 = firewall.PriorityDstNAT - 10 // dstnat - 10: before DNAT
	PriorityFilterOutput     int32 = firewall.PriorityDstNAT - 21 // -121: before the nat output chain
)

// AffinitySetSize bounds each endpoint's set of remembered clients (the
// kernel's default for dynamic sets): when it is full, new clients are still
// served, by a random endpoint, until old entries time out.
const AffinitySetSize = 65535

// DefaultAffinityTimeout is Kubernetes' default for sessionAffinity ClientIP.
const DefaultAffinityTimeout = 3 * time.Hour

// ServiceAddrs is a service with the addresses allocation gave it (lb.Plan's
// Result): zero addresses are not served (pending, or a ClusterIP service
// has no VIP).
type ServiceAddrs struct {
	Service   lb.Service
	ClusterIP netip.Addr
	VIP       netip.Addr
}

// Input is everything the proxy's rules depend on.
type Input struct {
	// Node is this node's name: endpoints whose Node is this name are
	// local (externalTrafficPolicy Local, hairpin).
	Node     string
	Services []ServiceAddrs
	// Endpoints of each service (lb.AllEndpoints); only ready ones with an
	// IPv4 address are used.
	Endpoints map[lb.ServiceKey][]lb.Endpoint
	// ClusterCIDR holds every pod address: connections from it keep their
	// source (pod addresses route over the mesh). Invalid: every source
	// counts as outside.
	ClusterCIDR netip.Prefix
	// PodSubnet is this node's share of ClusterCIDR. Its first address,
	// the pod gateway on the bridge, becomes the source of connections from
	// outside ClusterCIDR (other hosts, this node) that go to an endpoint on
	// another node, so that the reply comes back here through the mesh
	// (WireGuard accepts only the node's pod addresses from it), and of
	// hairpin connections. Invalid: masquerade (the address of the outgoing
	// interface) instead.
	PodSubnet netip.Prefix
	// WGIface is the mesh interface, through which endpoints on other
	// nodes are reached. Empty: every DNATed connection from outside
	// ClusterCIDR is source-translated.
	WGIface string
}

// Compile computes the proxy's fragment of table inet netloom (merge it
// with the other fragments with firewall.Merge). It is pure and
// deterministic: the same Input gives the same Model, whatever the order of
// services and endpoints. See the package documentation for the design.
//
//	svc-filter-prerouting  filter prerouting dstnat - 10  ct state new ip daddr . meta l4proto . th dport vmap @svc-filter-ips
//	svc-filter-output      filter output -121             the same, for the node's own connections
//	svc-prerouting         nat prerouting dstnat          ip daddr . meta l4proto . th dport vmap @svc-ips
//	svc-output             nat output -111                the same
//	svc-postrouting        nat postrouting srcnat         hairpin, and remote endpoints of outside clients: snat to the pod gateway
//	svc-pick-N             dnat ip to ip daddr . meta l4proto . th dport . numgen random mod N map @svc-eps
//	svc-local-N-M          pods and the node itself: goto svc-pick-N; others: goto svc-pick-local-M (M local endpoints), or drop when M is 0
//	svc-sticky-..., svc-ep-..., svc-aff-pick-N    sessionAffinity ClientIP
//	svc-allow-check, svc-allow-reject, svc-reject loadBalancerSourceRanges, no endpoints
func Compile(in Input) firewall.Model {
	m, _ := compile(in)
	return m
}

// Skipped lists what Compile left out and why, one line each: IPv6
// addresses, unknown protocols, a service address and port that another
// service (earlier by namespace/name) already uses.
func Skipped(in Input) []string {
	_, notes := compile(in)
	return notes
}

// servicePort is one port of one service with its backends.
type servicePort struct {
	svc   *lb.Service
	cip   netip.Addr // ClusterIP, or invalid
	vip   netip.Addr // VIP, or invalid
	proto proto
	port  uint16
	key   string           // ns/name/proto/port
	all   []netip.AddrPort // sorted
	local []netip.AddrPort // sorted
}

func (sp *servicePort) affinity() bool { return sp.svc.SessionAffinity }

func (sp *servicePort) localPolicy() bool {
	return sp.vip.IsValid() && sp.svc.ExternalTrafficPolicy == lb.PolicyLocal
}

func (sp *servicePort) affinityTimeout() time.Duration {
	if t := sp.svc.AffinityTimeout; t > 0 {
		return t
	}
	return DefaultAffinityTimeout
}

func (sp *servicePort) stickyChain() string {
	return "svc-sticky-" + hashName(sp.key) + "-" + sp.key
}

func (sp *servicePort) stickyLocalChain() string {
	return "svc-sticky-local-" + hashName(sp.key) + "-" + sp.key
}

func (sp *servicePort) endpointName(ep netip.AddrPort) string {
	id := sp.key + "__" + ep.Addr().String() + "/" + strconv.Itoa(int(ep.Port()))
	return hashName(id) + "-" + id
}

func (sp *servicePort) endpointChain(ep netip.AddrPort) string {
	return "svc-ep-" + sp.endpointName(ep)
}

func (sp *servicePort) affinitySet(ep netip.AddrPort) string {
	return "svc-aff-" + sp.endpointName(ep)
}

// hashName is 8 base32 characters of SHA-256, as kube-proxy names chains:
// unique and stable, with the readable key after it.
func hashName(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(sum[:])[:8]
}

// Names of the shared chains.
func pickChain(n int) string         { return "svc-pick-" + strconv.Itoa(n) }
func pickLocalChain(m int) string    { return "svc-pick-local-" + strconv.Itoa(m) }
func localChain(n, m int) string     { return "svc-local-" + strconv.Itoa(n) + "-" + strconv.Itoa(m) }
func affPickChain(n int) string      { return "svc-aff-pick-" + strconv.Itoa(n) }
func affPickLocalChain(m int) string { return "svc-aff-pick-local-" + strconv.Itoa(m) }

// compiler accumulates the model.
type compiler struct {
	in     Input
	cidrOK bool
	store  elemStore

	svcElems, filterElems, epElems, localEpElems []firewall.Element
	epChainElems, localEpChainElems, allowElems  []firewall.Element
	chains                                       []firewall.Chain
	sets                                         []firewall.Set
	hairpin                                      map[netip.Addr]bool
	shared                                       map[string]bool // shared chains made
}

func compile(in Input) (firewall.Model, []string) {
	var notes []string
	ports := servicePorts(in, &notes)
	nEndpoints := 0
	for _, sp := range ports {
		nEndpoints += len(sp.all)
	}
	c := &compiler{
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

func (c *compiler) servicePort(sp *servicePort) {
	for _, ep := range sp.local {
		c.hairpin[ep.Addr()] = true
	}
	hasRanges := sp.vip.IsValid() && len(sp.svc.SourceRanges) > 0
	if hasRanges {
		for _, p := range allowedRanges(sp.svc.SourceRanges) {
			c.allowElems = append(c.allowElems, allowElement(sp.vip, sp.proto, sp.port, p))
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
			c.filterElems = append(c.filterElems, dispatchElement(a, sp.proto, sp.port, target))
		}
		return
	}
	if hasRanges {
		c.filterElems = append(c.filterElems, dispatchElement(sp.vip, sp.proto, sp.port, ChainAllowCheck))
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
			c.epElems = append(c.epElems, c.store.endpointElement(a, sp.proto, sp.port, uint32(i), ep))
		}
		target := c.pick(n)
		if a == sp.vip && sp.localPolicy() {
			for i, ep := range sp.local {
				c.localEpElems = append(c.localEpElems, c.store.endpointElement(a, sp.proto, sp.port, uint32(i), ep))
			}
			target = c.local(n, m)
		}
		c.svcElems = append(c.svcElems, dispatchElement(a, sp.proto, sp.port, target))
	}
}

// stickyServicePort compiles a service port with sessionAffinity ClientIP.
func (c *compiler) stickyServicePort(sp *servicePort) {
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
			c.epChainElems = append(c.epChainElems, c.store.endpointChainElement(a, sp.proto, sp.port, uint32(i), sp.endpointChain(ep)))
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
				c.localEpChainElems = append(c.localEpChainElems, c.store.endpointChainElement(a, sp.proto, sp.port, uint32(i), sp.endpointChain(ep)))
			}
			c.chains = append(c.chains, local)
			target = local.Name
		}
		c.svcElems = append(c.svcElems, dispatchElement(a, sp.proto, sp.port, target))
	}
}

// shortCircuit are the rules of a Local VIP's chain that send this node's
// own connections and its pods' to every endpoint (to chain).
func (c *compiler) shortCircuit(chain string) []firewall.Rule {
	var rules []firewall.Rule
	if c.cidrOK {
		rules = append(rules, firewall.NewRule(firewall.IPv4(), firewall.PrefixMatch(firewall.Saddr, c.in.ClusterCIDR, false), firewall.Goto(chain)))
	}
	return append(rules, firewall.NewRule(fibSaddrLocal(), firewall.Goto(chain)))
}

// pick returns svc-pick-N, making it on first use.
func (c *compiler) pick(n int) string {
	name := pickChain(n)
	c.addShared(name, func() []firewall.Rule { return []firewall.Rule{firewall.NewRule(pickDNAT(uint32(n), MapEndpoints))} })
	return name
}

// local returns svc-local-N-M, making it (and what it uses) on first use.
func (c *compiler) local(n, m int) string {
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
func (c *compiler) affPick(n int, local bool) string {
	name, set := affPickChain(n), MapEndpointChains
	if local {
		name, set = affPickLocalChain(n), MapLocalEndpointChains
	}
	c.addShared(name, func() []firewall.Rule { return []firewall.Rule{firewall.NewRule(pickVmap(uint32(n), set))} })
	return name
}

func (c *compiler) addShared(name string, rules func() []firewall.Rule) {
	if c.shared[name] {
		return
	}
	c.shared[name] = true
	c.chains = append(c.chains, firewall.Chain{Name: name, Rules: rules()})
}

// mapSize is the size given to a hash map of n elements. Large maps get a
// power of two with room to double: the kernel then makes a hash table of
// that size at once instead of growing one while 10^5 elements are added
// (rhashtable_insert_slow dominated a full sync of 10,000 services without
// it). The size is also the map's limit and is fixed when the map is made,
// so when the elements outgrow it the next Apply replaces the table (at
// each doubling, not at each change). Small maps get none (0: the kernel's
// resizable hash, no limit), so that small clusters never cross a
// boundary.
func mapSize(n int) uint32 {
	if n < 16384 {
		return 0
	}
	size := uint32(65536)
	for int(size) < 2*n {
		size *= 2
	}
	return size
}

func (c *compiler) model() firewall.Model {
	hairpin := make([]firewall.Element, 0, len(c.hairpin))
	for _, a := range sortedAddrs(c.hairpin) {
		hairpin = append(hairpin, hairpinElement(a))
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
func servicePorts(in Input, notes *[]string) []*servicePort {
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

// allowedRanges returns the IPv4 source ranges, masked, without those
// inside another (the kernel refuses overlapping elements), sorted.
func allowedRanges(in []netip.Prefix) []netip.Prefix {
	var ps []netip.Prefix
	for _, p := range in {
		switch {
		case !p.IsValid():
		case p.Addr().Is4():
			ps = append(ps, p.Masked())
		case p.Addr().Is4In6() && p.Bits() >= 96:
			ps = append(ps, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked())
		}
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	var out []netip.Prefix
	for _, p := range ps {
		if n := len(out); n > 0 && out[n-1].Bits() <= p.Bits() && out[n-1].Contains(p.Addr()) {
			continue
		}
		out = append(out, p)
	}
	return out
}

func sortedAddrs(m map[netip.Addr]bool) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// staticChains are the base chains and the shared verdict chains.
func staticChains(in Input) []firewall.Chain {
	snat := firewall.Masquerade()
	if in.PodSubnet.IsValid() && in.PodSubnet.Addr().Is4() {
		snat = snatTo(in.PodSubnet.Masked().Addr().Next())
	}
	remote := []firewall.Frag{ctStatusDNAT()}
	if in.ClusterCIDR.IsValid() && in.ClusterCIDR.Addr().Is4() {
		remote = append(remote, firewall.IPv4(), firewall.PrefixMatch(firewall.Saddr, in.ClusterCIDR, true))
	}
	if in.WGIface != "" {
		remote = append(remote, firewall.Oifname(in.WGIface))
	}
	post := firewall.Chain{
		Name: ChainPostrouting, Type: "nat", Hook: "postrouting", Priority: PriorityNATPostrouting, Policy: "accept",
		Rules: []firewall.Rule{
			firewall.NewRule(saddrDaddrIn(SetHairpin), snat),
			firewall.NewRule(append(remote, snat)...),
		},
	}
	return []firewall.Chain{
		{
			Name: ChainFilterPrerouting, Type: "filter", Hook: "prerouting", Priority: PriorityFilterPrerouting, Policy: "accept",
			Rules: []firewall.Rule{firewall.NewRule(firewall.CtState(firewall.CtNew), dispatch(MapFilter))},
		},
		{
			Name: ChainFilterOutput, Type: "filter", Hook: "output", Priority: PriorityFilterOutput, Policy: "accept",
			Rules: []firewall.Rule{firewall.NewRule(firewall.CtState(firewall.CtNew), dispatch(MapFilter))},
		},
		{
			Name: ChainPrerouting, Type: "nat", Hook: "prerouting", Priority: PriorityNATPrerouting, Policy: "accept",
			Rules: []firewall.Rule{firewall.NewRule(dispatch(MapServices))},
		},
		{
			Name: ChainOutput, Type: "nat", Hook: "output", Priority: PriorityNATOutput, Policy: "accept",
			Rules: []firewall.Rule{firewall.NewRule(dispatch(MapServices))},
		},
		post,
		{Name: ChainAllowCheck, Rules: []firewall.Rule{firewall.NewRule(notAllowed(SetAllowed), firewall.Drop())}},
		{Name: ChainAllowReject, Rules: []firewall.Rule{
			firewall.NewRule(notAllowed(SetAllowed), firewall.Drop()),
			firewall.NewRule(firewall.Goto(ChainReject)),
		}},
		{Name: ChainReject, Rules: []firewall.Rule{
			firewall.NewRule(l4proto(protoTCP), rejectTCPReset()),
			firewall.NewRule(rejectPortUnreachable()),
		}},
	}
}
