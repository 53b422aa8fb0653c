package proxy

import (
	"cmp"
	"crypto/sha256"
	"encoding/base32"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/nft"
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
	PriorityNATPrerouting    int32 = nft.PriorityDstNAT      // dstnat
	PriorityNATOutput        int32 = nft.PriorityDstNAT - 11 // -111
	PriorityNATPostrouting   int32 = nft.PrioritySrcNAT      // srcnat
	PriorityFilterPrerouting int32 = nft.PriorityDstNAT - 10 // dstnat - 10: before DNAT
	PriorityFilterOutput     int32 = nft.PriorityDstNAT - 21 // -121: before the nat output chain
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
// with the other fragments with nft.Merge). It is pure and
// deterministic: the same Input gives the same Model, whatever the order of
// services and endpoints. See the package documentation for the design.
// An agent that compiles on every pass should keep a Compiler instead,
// which gives the same Model and compiles only what changed.
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
func Compile(in Input) nft.Model {
	return NewCompiler().Compile(in)
}

// Skipped lists what Compile left out and why, one line each: IPv6
// addresses, unknown protocols, a service address and port that another
// service (earlier by namespace/name) already uses.
func Skipped(in Input) []string {
	c := NewCompiler()
	c.Compile(in)
	return c.Skipped()
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

// staticChains are the base chains and the shared verdict chains.
func staticChains(in Input) []nft.Chain {
	snat := nft.Masquerade()
	if in.PodSubnet.IsValid() && in.PodSubnet.Addr().Is4() {
		snat = snatTo(in.PodSubnet.Masked().Addr().Next())
	}
	remote := []nft.Frag{ctStatusDNAT()}
	if in.ClusterCIDR.IsValid() && in.ClusterCIDR.Addr().Is4() {
		remote = append(remote, nft.IPv4(), nft.PrefixMatch(nft.Saddr, in.ClusterCIDR, true))
	}
	if in.WGIface != "" {
		remote = append(remote, nft.Oifname(in.WGIface))
	}
	post := nft.Chain{
		Name: ChainPostrouting, Type: "nat", Hook: "postrouting", Priority: PriorityNATPostrouting, Policy: "accept",
		Rules: []nft.Rule{
			nft.NewRule(saddrDaddrIn(SetHairpin), snat),
			nft.NewRule(append(remote, snat)...),
		},
	}
	return []nft.Chain{
		{
			Name: ChainFilterPrerouting, Type: "filter", Hook: "prerouting", Priority: PriorityFilterPrerouting, Policy: "accept",
			Rules: []nft.Rule{nft.NewRule(nft.CtState(nft.CtNew), dispatch(MapFilter))},
		},
		{
			Name: ChainFilterOutput, Type: "filter", Hook: "output", Priority: PriorityFilterOutput, Policy: "accept",
			Rules: []nft.Rule{nft.NewRule(nft.CtState(nft.CtNew), dispatch(MapFilter))},
		},
		{
			Name: ChainPrerouting, Type: "nat", Hook: "prerouting", Priority: PriorityNATPrerouting, Policy: "accept",
			Rules: []nft.Rule{nft.NewRule(dispatch(MapServices))},
		},
		{
			Name: ChainOutput, Type: "nat", Hook: "output", Priority: PriorityNATOutput, Policy: "accept",
			Rules: []nft.Rule{nft.NewRule(dispatch(MapServices))},
		},
		post,
		{Name: ChainAllowCheck, Rules: []nft.Rule{nft.NewRule(notAllowed(SetAllowed), nft.Drop())}},
		{Name: ChainAllowReject, Rules: []nft.Rule{
			nft.NewRule(notAllowed(SetAllowed), nft.Drop()),
			nft.NewRule(nft.Goto(ChainReject)),
		}},
		{Name: ChainReject, Rules: []nft.Rule{
			nft.NewRule(l4proto(protoTCP), rejectTCPReset()),
			nft.NewRule(rejectPortUnreachable()),
		}},
	}
}
