package lb

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// DefaultServiceCIDR is where ClusterIPs come from unless configured.
var DefaultServiceCIDR = netip.MustParsePrefix("10.96.0.0/16")

// Config is the cluster-wide configuration allocation depends on. Every
// node must use the same values.
type Config struct {
	ServiceCIDR netip.Prefix // ClusterIPs; zero = DefaultServiceCIDR
	ClusterCIDR netip.Prefix // pod addresses; pools must not overlap it (zero: not checked)
	// NodePorts is where node ports and health-check ports come from;
	// zero = DefaultNodePortRange.
	NodePorts PortRange
	// FromAPI: the Kubernetes API server allocates ClusterIPs, node ports
	// and health-check ports, and keeps them unique; Allocate takes them
	// as the services carry them and allocates only VIPs.
	FromAPI bool
}

// PortRange is an inclusive range of ports.
type PortRange struct {
	Min, Max uint16
}

// DefaultNodePortRange is Kubernetes' --service-node-port-range default.
var DefaultNodePortRange = PortRange{Min: 30000, Max: 32767}

// Contains reports whether p is in the range.
func (r PortRange) Contains(p uint16) bool { return p >= r.Min && p <= r.Max && p != 0 }

// String returns "min-max".
func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// ParsePortRange parses "min-max" (as --service-node-port-range takes it).
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, ok := strings.Cut(strings.TrimSpace(s), "-")
	a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	b, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if !ok || err1 != nil || err2 != nil || a == 0 || a > b {
		return PortRange{}, fmt.Errorf("port range %q: want MIN-MAX with 1 <= MIN <= MAX <= 65535, e.g. 30000-32767", s)
	}
	return PortRange{Min: uint16(a), Max: uint16(b)}, nil
}

func (c Config) nodePorts() PortRange {
	if c.NodePorts == (PortRange{}) {
		return DefaultNodePortRange
	}
	return c.NodePorts
}

func (c Config) serviceCIDR() netip.Prefix {
	if !c.ServiceCIDR.IsValid() {
		return DefaultServiceCIDR
	}
	return c.ServiceCIDR.Masked()
}

// Plan is the outcome of Allocate.
type Plan struct {
	// Results holds every service given to Allocate.
	Results map[ServiceKey]Result
	// Writes are the assignments that differ from what the store records
	// (Service.Assigned), sorted by service. Each has exactly one writer;
	// a node applies the writes whose Writer is its own name by putting
	// Assignment into the store as Kind AssignmentKind under the service's
	// namespace and name. A node should write only once its store has
	// caught up with the cluster (after the first push/pull), so that a
	// partial snapshot does not record addresses that then move.
	Writes []Write
}

// Write is an assignment to record in the store.
type Write struct {
	Service    ServiceKey
	Assignment Assignment
	// Writer is the node that writes it: the node that created the service
	// (Created.Node) when alive, else the alive node with the lowest name.
	// Empty when no node is alive.
	Writer string
}

// Older orders services by creation: Created, then namespace and name. The
// older service wins an address both hold or ask for.
func Older(a, b Service) int {
	return cmp.Or(a.Created.Compare(b.Created), a.Key().Compare(b.Key()))
}

// Allocate assigns a ClusterIP to every service and a VIP to every
// LoadBalancer service. It is a pure function of its inputs (their order
// does not matter; service keys must be unique), so every node computes
// the same plan from the same snapshot.
//
// Services are served oldest first (see Older). For each the addresses it
// claims are, in order of preference:
//
//  1. the requested address (spec.loadBalancerIP, spec.clusterIP), when it
//     is valid for the service and no older service holds it;
//  2. the address the store records (Assigned), when still valid for the
//     service (VIP: in the annotated pool, or in an autoAssign pool, or in
//     the pool of the requested address) and no older service holds it;
//
// and only then, once every service's claim is settled, services without
// an address get the lowest free one: a VIP from the annotated pool, or
// from the autoAssign pools in name order (a service whose requested
// address is held by an older service gets one from the requested
// address's pool instead); a ClusterIP from the service CIDR, skipping its
// network, first and (IPv4) broadcast address.
//
// So an address never moves while its service exists, unless an older
// service holds or asks for it (after a partition heals, or when two nodes
// accepted services at the same moment), or the service asks for another
// one. The loser of a conflict gets another address and Result.Conflict
// says why. A service that cannot get an address is pending, with the
// reason in Result.Pending.
func Allocate(cfg Config, services []Service, pools []Pool, alive map[string]bool) Plan {
	// Sorted by pointer: a copy of 10,000 services would be megabytes of
	// garbage on every pass.
	sorted := make([]*Service, len(services))
	for i := range services {
		sorted[i] = &services[i]
	}
	slices.SortFunc(sorted, func(a, b *Service) int { return Older(*a, *b) })
	svcs := func(yield func(int, Service) bool) {
		for i, s := range sorted {
			if !yield(i, *s) {
				return
			}
		}
	}

	al := newAllocator(cfg, pools)
	res := make([]Result, len(sorted))
	needCIP := make([]bool, len(sorted))
	needVIP := make([]bool, len(sorted))
	vipPools := make([][]*Pool, len(sorted))

	// Claims, oldest first.
	for i, s := range svcs {
		r := &res[i]
		if !s.Proxied() {
			continue
		}
		needCIP[i] = al.claimClusterIP(s, r)
		if s.Type == TypeLoadBalancer {
			needVIP[i], vipPools[i] = al.claimVIP(s, r)
		}
		al.claimNodePorts(s, r)
	}
	// New addresses for the rest, oldest first.
	for i, s := range svcs {
		r := &res[i]
		if !s.Proxied() {
			continue
		}
		al.newNodePorts(s, r)
		if needCIP[i] {
			if a, ok := al.nextClusterIP(); ok {
				al.cip[a] = s.Key()
				r.ClusterIP = a
			} else {
				addPending(r, fmt.Sprintf("service CIDR %s is full", al.scidr))
			}
		}
		if needVIP[i] {
			al.newVIP(s, vipPools[i], r)
		}
	}

	plan := Plan{Results: make(map[ServiceKey]Result, len(sorted))}
	for i, s := range svcs {
		r := res[i]
		plan.Results[s.Key()] = r
		want := Assignment{VIP: r.VIP, Pool: r.Pool, ClusterIP: r.ClusterIP, NodePorts: r.NodePorts, HealthCheckNodePort: r.HealthCheckNodePort}
		if !s.Proxied() {
			want = Assignment{}
		}
		if !want.Equal(s.Assigned) {
			plan.Writes = append(plan.Writes, Write{Service: s.Key(), Assignment: want, Writer: writer(s, alive)})
		}
	}
	slices.SortFunc(plan.Writes, func(a, b Write) int { return a.Service.Compare(b.Service) })
	return plan
}

// writer returns the one node that records a service's assignment.
func writer(s Service, alive map[string]bool) string {
	if alive[s.Created.Node] {
		return s.Created.Node
	}
	w := ""
	for n, ok := range alive {
		if ok && (w == "" || n < w) {
			w = n
		}
	}
	return w
}

func addPending(r *Result, reason string) {
	if r.Pending != "" {
		r.Pending += "; "
	}
	r.Pending += reason
}

func addConflict(r *Result, note string) {
	if r.Conflict != "" {
		r.Conflict += "; "
	}
	r.Conflict += note
}

type allocator struct {
	scidr  netip.Prefix
	cipLo  netip.Addr // lowest auto-assigned ClusterIP; cursor
	cipHi  netip.Addr
	cipReq Range // requestable ClusterIPs
	pools  []*Pool
	byName map[string]*Pool
	cip    map[netip.Addr]ServiceKey
	vip    map[netip.Addr]ServiceKey
	cursor map[*Pool][]netip.Addr // per range: no free address below
	// fromAPI: ClusterIPs and ports are the API server's (Config.FromAPI).
	fromAPI bool
	// Node ports, by protocol and port. A health-check port is TCP.
	npRange  PortRange
	np       map[nodePortKey]ServiceKey
	npCursor uint16 // no free port below, for either protocol
}

type nodePortKey struct {
	proto string
	port  uint16
}

func newAllocator(cfg Config, pools []Pool) *allocator {
	al := &allocator{
		scidr:   cfg.serviceCIDR(),
		byName:  make(map[string]*Pool, len(pools)),
		cip:     make(map[netip.Addr]ServiceKey),
		vip:     make(map[netip.Addr]ServiceKey),
		cursor:  make(map[*Pool][]netip.Addr),
		np:      make(map[nodePortKey]ServiceKey),
		fromAPI: cfg.FromAPI,
	}
	al.npRange = cfg.nodePorts()
	al.npCursor = al.npRange.Min
	all := PrefixRange(al.scidr)
	al.cipReq = Range{Start: all.Start.Next(), End: all.End}
	if all.Start.Is4() {
		al.cipReq.End = all.End.Prev()
	}
	al.cipLo, al.cipHi = al.cipReq.Start.Next(), al.cipReq.End
	for _, p := range pools {
		p := &Pool{Name: p.Name, AutoAssign: p.AutoAssign, Ranges: slices.Clone(p.Ranges)}
		slices.SortFunc(p.Ranges, func(a, b Range) int { return a.Start.Compare(b.Start) })
		if _, dup := al.byName[p.Name]; dup {
			continue
		}
		al.byName[p.Name] = p
		al.pools = append(al.pools, p)
		cur := make([]netip.Addr, len(p.Ranges))
		for i, r := range p.Ranges {
			cur[i] = r.Start
		}
		al.cursor[p] = cur
	}
	slices.SortFunc(al.pools, func(a, b *Pool) int { return cmp.Compare(a.Name, b.Name) })
	return al
}

// validCIP reports whether a may be requested as a ClusterIP.
func (al *allocator) validCIP(a netip.Addr) bool {
	return al.cipReq.Contains(a) && al.cipReq.Start.Compare(al.cipReq.End) <= 0
}

// claimClusterIP settles the requested or recorded ClusterIP of s; it
// reports whether s needs a new one.
func (al *allocator) claimClusterIP(s Service, r *Result) bool {
	if al.fromAPI {
		if req := s.ClusterIP.Unmap(); req.IsValid() {
			al.cip[req] = s.Key()
			r.ClusterIP = req
		} else {
			addPending(r, "the API server has not given it a clusterIP")
		}
		return false
	}
	if req := s.ClusterIP.Unmap(); req.IsValid() {
		switch {
		case !al.validCIP(req):
			addPending(r, fmt.Sprintf("requested clusterIP %s is not in the service CIDR %s", req, al.scidr))
			return false
		case al.taken(al.cip, req):
			addConflict(r, fmt.Sprintf("requested clusterIP %s is held by older service %s", req, al.cip[req]))
		default:
			al.cip[req] = s.Key()
			r.ClusterIP = req
			return false
		}
	}
	if a := s.Assigned.ClusterIP.Unmap(); a.IsValid() && a != s.ClusterIP.Unmap() && al.validCIP(a) {
		if al.taken(al.cip, a) {
			addConflict(r, fmt.Sprintf("clusterIP %s is held by older service %s", a, al.cip[a]))
			return true
		}
		al.cip[a] = s.Key()
		r.ClusterIP = a
		return false
	}
	return true
}

func (al *allocator) taken(m map[netip.Addr]ServiceKey, a netip.Addr) bool {
	_, ok := m[a]
	return ok
}

// nextClusterIP returns the lowest free ClusterIP at or above the cursor.
func (al *allocator) nextClusterIP() (netip.Addr, bool) {
	for a := al.cipLo; a.IsValid() && a.Compare(al.cipHi) <= 0; a = a.Next() {
		if !al.taken(al.cip, a) {
			al.cipLo = a.Next()
			return a, true
		}
	}
	al.cipLo = netip.Addr{}
	return netip.Addr{}, false
}

// eligiblePool returns extra when it holds a, else the first pool, by name, that holds a and is allowed for s
// (nil when none).
func (al *allocator) eligiblePool(s Service, a netip.Addr, extra *Pool) *Pool {
	if extra != nil && extra.Contains(a) {
		return extra
	}
	if s.Pool != "" {
		if p := al.byName[s.Pool]; p != nil && p.Contains(a) {
			return p
		}
		return nil
	}
	for _, p := range al.pools {
		if p.AutoAssign && p.Contains(a) {
			return p
		}
	}
	return nil
}

// claimVIP settles the requested or recorded VIP of s. It reports whether
// s needs a new VIP and, if it lost its requested address, the pools to
// take one from.
func (al *allocator) claimVIP(s Service, r *Result) (need bool, from []*Pool) {
	var reqPool *Pool
	if req := s.LoadBalancerIP.Unmap(); req.IsValid() {
		for _, p := range al.pools {
			if p.Contains(req) && (s.Pool == "" || p.Name == s.Pool) {
				reqPool = p
				break
			}
		}
		switch {
		case reqPool == nil && s.Pool != "" && al.byName[s.Pool] == nil:
			addPending(r, fmt.Sprintf("address pool %q (annotation %s) does not exist", s.Pool, PoolAnnotation))
			return false, nil
		case reqPool == nil && s.Pool != "":
			addPending(r, fmt.Sprintf("requested address %s is not in address pool %q", req, s.Pool))
			return false, nil
		case reqPool == nil:
			addPending(r, fmt.Sprintf("requested address %s is in no address pool", req))
			return false, nil
		case al.taken(al.vip, req):
			addConflict(r, fmt.Sprintf("requested address %s is held by older service %s", req, al.vip[req]))
			from = []*Pool{reqPool}
		default:
			al.vip[req] = s.Key()
			r.VIP, r.Pool = req, reqPool.Name
			return false, nil
		}
	}
	if a := s.Assigned.VIP.Unmap(); a.IsValid() && a != s.LoadBalancerIP.Unmap() {
		if p := al.eligiblePool(s, a, reqPool); p != nil {
			if al.taken(al.vip, a) {
				addConflict(r, fmt.Sprintf("address %s is held by older service %s", a, al.vip[a]))
				return true, from
			}
			al.vip[a] = s.Key()
			r.VIP, r.Pool = a, p.Name
			return false, nil
		}
	}
	return true, from
}

// newVIP gives s the lowest free address of the first pool with one.
func (al *allocator) newVIP(s Service, from []*Pool, r *Result) {
	if from == nil {
		if s.Pool != "" {
			p := al.byName[s.Pool]
			if p == nil {
				addPending(r, fmt.Sprintf("address pool %q (annotation %s) does not exist", s.Pool, PoolAnnotation))
				return
			}
			from = []*Pool{p}
		} else {
			for _, p := range al.pools {
				if p.AutoAssign {
					from = append(from, p)
				}
			}
			if len(from) == 0 {
				addPending(r, fmt.Sprintf("no address pool with autoAssign exists; create an AddressPool or name one with annotation %s", PoolAnnotation))
				return
			}
		}
	}
	for _, p := range from {
		if a, ok := al.nextVIP(p); ok {
			al.vip[a] = s.Key()
			r.VIP, r.Pool = a, p.Name
			return
		}
	}
	names := make([]string, len(from))
	for i, p := range from {
		names[i] = p.Name
	}
	if len(names) == 1 {
		addPending(r, fmt.Sprintf("address pool %q is full", names[0]))
	} else {
		addPending(r, fmt.Sprintf("address pools %s are full", strings.Join(names, ", ")))
	}
}

// nextVIP returns the lowest free address of p. The cursors only move up:
// within one Allocate addresses are taken, never freed.
func (al *allocator) nextVIP(p *Pool) (netip.Addr, bool) {
	cur := al.cursor[p]
	for i, rg := range p.Ranges {
		for a := cur[i]; a.IsValid() && a.Compare(rg.End) <= 0; a = a.Next() {
			if !al.taken(al.vip, a) {
				cur[i] = a.Next()
				return a, true
			}
		}
		cur[i] = netip.Addr{}
	}
	return netip.Addr{}, false
}

// claimNodePorts settles the requested and recorded node ports of s (and
// its health-check port); ports left at 0 get one in newNodePorts.
func (al *allocator) claimNodePorts(s Service, r *Result) {
	if s.NodePorts {
		r.NodePorts = make([]uint16, len(s.Ports))
		for i, sp := range s.Ports {
			var rec uint16
			if i < len(s.Assigned.NodePorts) {
				rec = s.Assigned.NodePorts[i]
			}
			r.NodePorts[i] = al.claimPort(s, sp.Protocol, sp.NodePort, rec, fmt.Sprintf("nodePort of port %s", portName(sp)), r)
		}
	}
	if s.NeedsHealthCheck() {
		r.HealthCheckNodePort = al.claimPort(s, "TCP", s.HealthCheckNodePort, s.Assigned.HealthCheckNodePort, "healthCheckNodePort", r)
	}
}

func portName(sp ServicePort) string {
	if sp.Name != "" {
		return sp.Name
	}
	return strconv.Itoa(int(sp.Port)) + "/" + sp.Protocol
}

// claimPort claims the requested port, else the recorded one; 0 when s
// needs a new one.
func (al *allocator) claimPort(s Service, proto string, req, rec uint16, what string, r *Result) uint16 {
	if al.fromAPI {
		if req == 0 {
			addPending(r, "the API server has not given it a "+what)
		} else {
			al.np[nodePortKey{proto, req}] = s.Key()
		}
		return req
	}
	if req != 0 {
		k := nodePortKey{proto, req}
		switch h, held := al.np[k]; {
		case !al.npRange.Contains(req):
			addConflict(r, fmt.Sprintf("requested %s %d is outside the node port range %s", what, req, al.npRange))
		case held:
			addConflict(r, fmt.Sprintf("requested %s %d/%s is held by older service %s", what, req, proto, h))
		default:
			al.np[k] = s.Key()
			return req
		}
	}
	if rec != 0 && rec != req && al.npRange.Contains(rec) {
		k := nodePortKey{proto, rec}
		if h, held := al.np[k]; held {
			addConflict(r, fmt.Sprintf("%s %d/%s is held by older service %s", what, rec, proto, h))
			return 0
		}
		al.np[k] = s.Key()
		return rec
	}
	return 0
}

// newNodePorts gives every unsettled node port of s the lowest free port.
func (al *allocator) newNodePorts(s Service, r *Result) {
	if al.fromAPI {
		return
	}
	for i, p := range r.NodePorts {
		if p == 0 {
			r.NodePorts[i] = al.nextPort(s, s.Ports[i].Protocol, r)
		}
	}
	if s.NeedsHealthCheck() && r.HealthCheckNodePort == 0 {
		r.HealthCheckNodePort = al.nextPort(s, "TCP", r)
	}
}

// nextPort returns the lowest port free for both protocols at or above
// the cursor (so that a port number belongs to one service), or 0 and a
// pending reason when the range is full.
func (al *allocator) nextPort(s Service, proto string, r *Result) uint16 {
	for p := int(al.npCursor); p != 0 && p <= int(al.npRange.Max); p++ {
		port := uint16(p)
		_, tcp := al.np[nodePortKey{"TCP", port}]
		_, udp := al.np[nodePortKey{"UDP", port}]
		if !tcp && !udp {
			al.np[nodePortKey{proto, port}] = s.Key()
			al.npCursor = port + 1
			if port == 65535 {
				al.npCursor = 0
			}
			return port
		}
	}
	al.npCursor = 0
	addPending(r, fmt.Sprintf("node port range %s is full", al.npRange))
	return 0
}

// Snapshot is the services and pools of the store (or of a manifest).
type Snapshot struct {
	Services []Service
	Pools    []Pool
}

// ValidateApply checks a manifest's services and pools against what the
// store holds now (cur), before anything is applied. It rejects, as a
// *FieldError naming the object and field:
//   - a pool that overlaps another pool (of the store or of the manifest),
//     the cluster CIDR or the service CIDR;
//   - a requested VIP (spec.loadBalancerIP) outside every pool, or outside
//     the pool its annotation names;
//   - a requested VIP or ClusterIP that another service holds or asks for,
//     unless the manifest gives that service up (changes its type or asks
//     it for another address);
//   - a requested ClusterIP outside the service CIDR;
//   - a requested nodePort or healthCheckNodePort outside the node port
//     range, or held by another service.
//
// Pools are checked first, then services, each in the order given; the
// first problem is returned.
func ValidateApply(cfg Config, cur Snapshot, in Snapshot) error {
	// The pools as they will be.
	incoming := make(map[string]bool, len(in.Pools))
	for _, p := range in.Pools {
		incoming[p.Name] = true
	}
	var pools []Pool
	for _, p := range cur.Pools {
		if !incoming[p.Name] {
			pools = append(pools, p)
		}
	}
	for i, p := range in.Pools {
		others := append(slices.Clone(pools), in.Pools[:i]...)
		if err := checkPool(p, others, cfg.ClusterCIDR, cfg.serviceCIDR()); err != nil {
			return err
		}
	}
	pools = append(pools, in.Pools...)

	// Who holds what now, and who lets go of it.
	plan := Allocate(cfg, cur.Services, cur.Pools, nil)
	next := make(map[ServiceKey]Service, len(in.Services))
	for _, s := range in.Services {
		next[s.Key()] = s
	}
	releasesVIP := func(k ServiceKey, a netip.Addr) bool {
		s, ok := next[k]
		return ok && (s.Type != TypeLoadBalancer || (s.LoadBalancerIP.IsValid() && s.LoadBalancerIP.Unmap() != a))
	}
	releasesCIP := func(k ServiceKey, a netip.Addr) bool {
		s, ok := next[k]
		return ok && s.ClusterIP.IsValid() && s.ClusterIP.Unmap() != a
	}
	vipHolder := make(map[netip.Addr]ServiceKey)
	cipHolder := make(map[netip.Addr]ServiceKey)
	// Node ports held now, except by services the manifest replaces (their
	// new requests are checked below).
	npHolder := make(map[nodePortKey]ServiceKey)
	for _, s := range cur.Services {
		if _, ok := next[s.Key()]; ok {
			continue
		}
		r := plan.Results[s.Key()]
		for i, p := range r.NodePorts {
			if p != 0 && i < len(s.Ports) {
				npHolder[nodePortKey{s.Ports[i].Protocol, p}] = s.Key()
			}
		}
		if r.HealthCheckNodePort != 0 {
			npHolder[nodePortKey{"TCP", r.HealthCheckNodePort}] = s.Key()
		}
	}
	npRange := cfg.nodePorts()
	for k, r := range plan.Results {
		if r.VIP.IsValid() && !releasesVIP(k, r.VIP) {
			vipHolder[r.VIP] = k
		}
		if r.ClusterIP.IsValid() && !releasesCIP(k, r.ClusterIP) {
			cipHolder[r.ClusterIP] = k
		}
	}
	for _, s := range cur.Services {
		if _, ok := next[s.Key()]; ok {
			continue
		}
		// Requests not honoured now still count: they win when freed.
		if a := s.LoadBalancerIP.Unmap(); a.IsValid() && s.Type == TypeLoadBalancer {
			if _, ok := vipHolder[a]; !ok {
				vipHolder[a] = s.Key()
			}
		}
	}

	al := allocator{}
	al.scidr = cfg.serviceCIDR()
	all := PrefixRange(al.scidr)
	al.cipReq = Range{Start: all.Start.Next(), End: all.End}
	if all.Start.Is4() {
		al.cipReq.End = all.End.Prev()
	}
	for _, s := range in.Services {
		fe := func(field, format string, a ...any) error {
			return &FieldError{Kind: "Service", Namespace: s.Namespace, Name: s.Name, Field: field, Msg: fmt.Sprintf(format, a...)}
		}
		if a := s.ClusterIP.Unmap(); a.IsValid() {
			if !al.validCIP(a) {
				return fe("spec.clusterIP", "%s is not in the service CIDR %s; leave it out to get one", a, al.scidr)
			}
			if h, ok := cipHolder[a]; ok && h != s.Key() {
				return fe("spec.clusterIP", "%s is already in use by Service %s; leave it out to get a free one", a, h)
			}
			cipHolder[a] = s.Key()
		}
		if a := s.LoadBalancerIP.Unmap(); a.IsValid() && s.Type == TypeLoadBalancer {
			in := false
			for _, p := range pools {
				if p.Contains(a) && (s.Pool == "" || p.Name == s.Pool) {
					in = true
					break
				}
			}
			if !in && s.Pool != "" && slices.ContainsFunc(pools, func(p Pool) bool { return p.Name == s.Pool }) {
				return fe("spec.loadBalancerIP", "%s is not in AddressPool %s named by annotation %s", a, s.Pool, PoolAnnotation)
			}
			if !in && s.Pool == "" {
				return fe("spec.loadBalancerIP", "%s is outside every AddressPool; add it to a pool or leave it out", a)
			}
			if h, ok := vipHolder[a]; ok && h != s.Key() {
				return fe("spec.loadBalancerIP", "%s is already in use by Service %s; choose another or leave it out", a, h)
			}
			vipHolder[a] = s.Key()
		}
		checkPort := func(field, proto string, port uint16) error {
			if port == 0 {
				return nil
			}
			if !npRange.Contains(port) {
				return fe(field, "%d is outside the node port range %s; choose one inside it or leave it out", port, npRange)
			}
			k := nodePortKey{proto, port}
			if h, ok := npHolder[k]; ok && h != s.Key() {
				return fe(field, "%d/%s is already in use by Service %s; choose another or leave it out", port, proto, h)
			}
			npHolder[k] = s.Key()
			return nil
		}
		if s.Proxied() && s.NodePorts {
			for i, sp := range s.Ports {
				if err := checkPort(fmt.Sprintf("spec.ports[%d].nodePort", i), sp.Protocol, sp.NodePort); err != nil {
					return err
				}
			}
		}
		if s.Proxied() && s.NeedsHealthCheck() {
			if err := checkPort("spec.healthCheckNodePort", "TCP", s.HealthCheckNodePort); err != nil {
				return err
			}
		}
	}
	return nil
}
