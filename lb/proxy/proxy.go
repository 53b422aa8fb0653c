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

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
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
	// local endpoints (externalTrafficPolicy Local VIPs and external IPs,
	// internalTrafficPolicy Local ClusterIPs).
	MapEndpoints      = "svc-eps"
	MapLocalEndpoints = "svc-local-eps"
	// ip . proto . port . index : goto endpoint chain (sessionAffinity).
	MapEndpointChains      = "svc-ep-chains"
	MapLocalEndpointChains = "svc-local-ep-chains"
	// VIP . proto . port . allowed source range (loadBalancerSourceRanges).
	SetAllowed = "svc-allow"
	// pod . pod for the pods of this node (hairpin).
	SetHairpin = "svc-hairpin"

	// Node ports: the same maps keyed by proto . port alone (the
	// destination is any address of the node), reached for local
	// destinations in SetNodePortAddrs.
	MapNodePorts              = "svc-nodeports"
	MapFilterNodePorts        = "svc-filter-nodeports"
	MapNodePortEndpoints      = "svc-np-eps"
	MapNodePortLocalEndpoints = "svc-np-local-eps"
	MapNodePortEndpointChains = "svc-np-ep-chains"
	MapNodePortLocalEpChains  = "svc-np-local-ep-chains"
	SetNodePortAddrs          = "svc-nodeport-addrs"
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

// ServiceAddrs is a service with the addresses and node ports allocation
// gave it (lb.Plan's Result): zero addresses and ports are not served
// (pending, or a ClusterIP service has no VIP).
type ServiceAddrs struct {
	Service   lb.Service
	ClusterIP netip.Addr
	// VIP is served for LoadBalancer services only.
	VIP netip.Addr
	// NodePorts is lb.Result.NodePorts: the node port of each of
	// Service.Ports (same index; 0 or missing: none, or pending). They are
	// served only when Service.NodePorts is set.
	NodePorts []uint16
}

// Input is everything the proxy's rules depend on.
type Input struct {
	// Node is this node's name: endpoints whose Node is this name are
	// local (traffic policies Local, hairpin).
	Node     string
	Services []ServiceAddrs
	// Endpoints of each service (lb.AllEndpoints). New connections go to
	// the Ready ones with an IPv4 address or, when a service port has none,
	// to its serving terminating ones (lb.Backends, lb.LocalBackends).
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
	// NodePortAddresses are where node ports are served (kube-proxy's
	// --nodeport-addresses): a connection to an address of this node
	// (fib daddr type local) inside one of these prefixes, at a node port,
	// goes to the service. 0.0.0.0/0 means every address of the node;
	// empty means node ports are not served. Loopback (127.0.0.0/8) is
	// never served; IPv6 prefixes are skipped (and reported by Skipped).
	NodePortAddresses []netip.Prefix
	// PassMark, when not zero, lets packets whose meta mark has any of
	// its bits set through svc-filter-prerouting untouched: connections
	// another node's proxy carries, which this node only forwards to it
	// (lb/drain), and which would otherwise meet this node's "no
	// endpoints" reject.
	PassMark uint32
}

// Compile computes the proxy's fragment of table inet netloom (merge it
// with the other fragments with nft.Merge). It is pure and
// deterministic: the same Input gives the same Model, whatever the order of
// services and endpoints. See the package documentation for the design.
// An agent that compiles on every pass should keep a Compiler instead,
// which gives the same Model and compiles only what changed.
//
//	svc-filter-prerouting  filter prerouting dstnat - 10  ct state new ip daddr . meta l4proto . th dport vmap @svc-filter-ips
//	                                                     ct state new ip daddr @svc-nodeport-addrs fib daddr type local meta l4proto . th dport vmap @svc-filter-nodeports
//	svc-filter-output      filter output -121             the same, for the node's own connections
//	svc-prerouting         nat prerouting dstnat          ip daddr . meta l4proto . th dport vmap @svc-ips
//	                                                     ip daddr @svc-nodeport-addrs fib daddr type local meta l4proto . th dport vmap @svc-nodeports
//	svc-output             nat output -111                the same
//	svc-postrouting        nat postrouting srcnat         hairpin, and remote endpoints of outside clients: snat to the pod gateway
//	svc-pick-N             dnat ip to ip daddr . meta l4proto . th dport . numgen random mod N map @svc-eps
//	svc-pick-local-M       the same with @svc-local-eps (M local endpoints)
//	svc-local-N-M          pods and the node itself: goto svc-pick-N; others: goto svc-pick-local-M, or drop when M is 0
//	svc-np-pick-N, svc-np-pick-local-M, svc-np-local-N-M  the same for node ports: meta l4proto . th dport . numgen random mod N, @svc-np-eps
//	svc-sticky-..., svc-ep-..., svc-aff-pick-N, svc-np-aff-pick-N  sessionAffinity ClientIP
//	svc-allow-check, svc-allow-reject, svc-reject loadBalancerSourceRanges, no endpoints
func Compile(in Input) nft.Model {
	return NewCompiler().Compile(in)
}

// Skipped lists what Compile left out and why, one line each: IPv6
// addresses and node port prefixes, unknown protocols, a service address
// and port, or a node port, that another service (earlier by
// namespace/name) already uses. Services that are not proxied
// (lb.Service.Proxied) are left out without a note.
func Skipped(in Input) []string {
	c := NewCompiler()
	c.Compile(in)
	return c.Skipped()
}

// servicePort is one port of one service with its backends.
type servicePort struct {
	svc      *lb.Service
	cip      netip.Addr   // ClusterIP, or invalid
	vip      netip.Addr   // VIP, or invalid
	ext      []netip.Addr // external IPs, sorted
	nodePort uint16       // 0: none
	extLocal bool         // externalTrafficPolicy Local
	intLocal bool         // internalTrafficPolicy Local
	proto    proto
	port     uint16
	key      string           // ns/name/proto/port
	all      []netip.AddrPort // sorted
	local    []netip.AddrPort // sorted
}

func (sp *servicePort) affinity() bool { return sp.svc.SessionAffinity }

func (sp *servicePort) affinityTimeout() time.Duration {
	if t := sp.svc.AffinityTimeout; t > 0 {
		return t
	}
	return DefaultAffinityTimeout
}

// Endpoint choice for one way in to a service port.
const (
	viaAll        = iota // every endpoint
	viaLocal             // this node's endpoints only; drop without (internalTrafficPolicy Local)
	viaLocalShort        // outside clients to this node's endpoints, drop without; pods and the node to every endpoint (externalTrafficPolicy Local)
)

// entry is one way in to a service port: an address, or the node port.
type entry struct {
	key    svcKey
	via    int
	ranges bool // loadBalancerSourceRanges apply (the VIP)
}

// entries returns the ways in to sp, in a fixed order: ClusterIP, VIP,
// external IPs, node port.
func (sp *servicePort) entries(hasRanges bool, buf []entry) []entry {
	ext := viaAll
	if sp.extLocal {
		ext = viaLocalShort
	}
	out := buf[:0]
	if sp.cip.IsValid() {
		via := viaAll
		if sp.intLocal {
			via = viaLocal
		}
		out = append(out, entry{key: svcKey{sp.cip, sp.proto, sp.port}, via: via})
	}
	if sp.vip.IsValid() {
		out = append(out, entry{key: svcKey{sp.vip, sp.proto, sp.port}, via: ext, ranges: hasRanges})
	}
	for _, a := range sp.ext {
		out = append(out, entry{key: svcKey{a, sp.proto, sp.port}, via: ext})
	}
	if sp.nodePort != 0 {
		out = append(out, entry{key: svcKey{p: sp.proto, port: sp.nodePort}, via: ext})
	}
	return out
}

func (sp *servicePort) stickyChain(np bool) string {
	return "svc-sticky-" + npPrefix(np) + hashName(sp.key) + "-" + sp.key
}

func (sp *servicePort) stickyLocalChain(np bool) string {
	return "svc-sticky-" + npPrefix(np) + "local-" + hashName(sp.key) + "-" + sp.key
}

func (sp *servicePort) stickyInternalChain() string {
	return "svc-sticky-internal-" + hashName(sp.key) + "-" + sp.key
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

func npPrefix(np bool) string {
	if np {
		return "np-"
	}
	return ""
}

// Names of the shared chains (np: the node-port variant).
func pickChain(np bool, n int) string { return "svc-" + npPrefix(np) + "pick-" + strconv.Itoa(n) }
func pickLocalChain(np bool, m int) string {
	return "svc-" + npPrefix(np) + "pick-local-" + strconv.Itoa(m)
}
func localChain(np bool, n, m int) string {
	return "svc-" + npPrefix(np) + "local-" + strconv.Itoa(n) + "-" + strconv.Itoa(m)
}
func affPickChain(np bool, n int) string {
	return "svc-" + npPrefix(np) + "aff-pick-" + strconv.Itoa(n)
}
func affPickLocalChain(np bool, m int) string {
	return "svc-" + npPrefix(np) + "aff-pick-local-" + strconv.Itoa(m)
}

// mapIDs are the indices of the maps of one kind of key (address, or node
// port).
type mapIDs struct {
	dispatch, filter, eps, localEps, epChains, localEpChains int
	epsName, localEpsName, epChainsName, localEpChainsName   string
}

var (
	addrMaps = mapIDs{
		mapServices, mapFilter, mapEndpoints, mapLocalEndpoints, mapEndpointChains, mapLocalEndpointChains,
		MapEndpoints, MapLocalEndpoints, MapEndpointChains, MapLocalEndpointChains,
	}
	npMaps = mapIDs{
		mapNodePorts, mapFilterNodePorts, mapNPEndpoints, mapNPLocalEndpoints, mapNPEndpointChains, mapNPLocalEndpointChains,
		MapNodePortEndpoints, MapNodePortLocalEndpoints, MapNodePortEndpointChains, MapNodePortLocalEpChains,
	}
)

func mapsOf(np bool) *mapIDs {
	if np {
		return &npMaps
	}
	return &addrMaps
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
	filterPre := []nft.Rule{
		nft.NewRule(nft.CtState(nft.CtNew), dispatch(MapFilter)),
		nft.NewRule(nft.CtState(nft.CtNew), dispatchNodePort(MapFilterNodePorts)),
	}
	if in.PassMark != 0 {
		filterPre = append([]nft.Rule{nft.NewRule(markAny(in.PassMark), nft.Accept())}, filterPre...)
	}
	return []nft.Chain{
		{
			Name: ChainFilterPrerouting, Type: "filter", Hook: "prerouting", Priority: PriorityFilterPrerouting, Policy: "accept",
			Rules: filterPre,
		},
		{
			Name: ChainFilterOutput, Type: "filter", Hook: "output", Priority: PriorityFilterOutput, Policy: "accept",
			Rules: []nft.Rule{
				nft.NewRule(nft.CtState(nft.CtNew), dispatch(MapFilter)),
				nft.NewRule(nft.CtState(nft.CtNew), dispatchNodePort(MapFilterNodePorts)),
			},
		},
		{
			Name: ChainPrerouting, Type: "nat", Hook: "prerouting", Priority: PriorityNATPrerouting, Policy: "accept",
			Rules: []nft.Rule{nft.NewRule(dispatch(MapServices)), nft.NewRule(dispatchNodePort(MapNodePorts))},
		},
		{
			Name: ChainOutput, Type: "nat", Hook: "output", Priority: PriorityNATOutput, Policy: "accept",
			Rules: []nft.Rule{nft.NewRule(dispatch(MapServices)), nft.NewRule(dispatchNodePort(MapNodePorts))},
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

// loopback is never a node port address: a DNAT from 127.0.0.1 would
// need route_localnet.
var loopback = addrRange{0x7f000000, 0x7fffffff}

// nodePortRanges returns the IPv4 address ranges of prefixes, merged and
// sorted, without loopback, and the IPv6 prefixes (left out).
func nodePortRanges(prefixes []netip.Prefix) (out []addrRange, v6 []netip.Prefix) {
	var rs []addrRange
	for _, p := range prefixes {
		switch {
		case !p.IsValid():
		case p.Addr().Is4():
			rs = append(rs, prefixRange(p))
		case p.Addr().Is4In6() && p.Bits() >= 96:
			rs = append(rs, prefixRange(netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)))
		default:
			v6 = append(v6, p)
		}
	}
	// Cut loopback out, then merge.
	var parts []addrRange
	for _, r := range rs {
		if r.hi < loopback.lo || r.lo > loopback.hi {
			parts = append(parts, r)
			continue
		}
		if r.lo < loopback.lo {
			parts = append(parts, addrRange{r.lo, loopback.lo - 1})
		}
		if r.hi > loopback.hi {
			parts = append(parts, addrRange{loopback.hi + 1, r.hi})
		}
	}
	slices.SortFunc(parts, func(a, b addrRange) int { return cmp.Compare(a.lo, b.lo) })
	for _, p := range parts {
		if n := len(out); n > 0 && (out[n-1].hi == ^uint32(0) || p.lo <= out[n-1].hi+1) {
			out[n-1].hi = max(out[n-1].hi, p.hi)
			continue
		}
		out = append(out, p)
	}
	return out, v6
}

func prefixRange(p netip.Prefix) addrRange {
	p = p.Masked()
	return addrRange{be32(p.Addr()), be32(lastAddr(p))}
}

func be32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// markAny matches packets whose meta mark has a bit of mask set.
func markAny(mask uint32) nft.Frag {
	return nft.Frag{Text: fmt.Sprintf("meta mark & 0x%08x != 0x00000000", mask), Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: nft.Reg1},
		&expr.Bitwise{
			SourceRegister: nft.Reg1, DestRegister: nft.Reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask),
			Xor:  binaryutil.NativeEndian.PutUint32(0),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: nft.Reg1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}}
}
