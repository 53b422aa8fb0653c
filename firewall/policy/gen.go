package policy

// Random snapshots and packets, for property tests and for checking the
// compiler and the tracer against Evaluate. The API is stable:
//
//	func RandomSnapshot(r *rand.Rand, opts GenOptions) *Snapshot
//	func RandomPacket(r *rand.Rand, s *Snapshot) Packet
//
// with r from math/rand/v2 (rand.New(rand.NewPCG(seed, 0)) gives a
// reproducible sequence). The same r state and options give the same
// snapshot. Generated policies are valid: mesh/objects accepts every one
// (the tests check it), so a consumer never has to handle invalid input.
//
// Shape of a snapshot (IPv4 shown; GenOptions.IPv6 uses fd00:10:244:N::/64,
// 2001:db8::/32 and fd00::/64 instead):
//
//   - namespaces x, y, z, w, v, u, t, s (GenOptions.Namespaces of them);
//     each has the label ns=<name> and sometimes env=prod|dev; about one in
//     six has no Namespace object (only the automatic
//     kubernetes.io/metadata.name label);
//   - pods a, b, c, d, e, f, g, h in every namespace, with labels pod=<name>
//     and sometimes app=web|db|api and tier=front|back, spread over nodes
//     node1..nodeN; node k's pods have addresses 10.244.k.10 and up;
//   - named container ports: "http" TCP 80 or 8080 (differs between pods),
//     "dns" UDP 53, "sctp" SCTP 9000 or 9001, "alt" 81 TCP or UDP, each
//     present or not;
//   - policies p0, p1, ... in random namespaces, mixing every feature:
//     empty and non-empty podSelectors with matchLabels and every
//     matchExpressions operator, omitted and explicit policyTypes, missing,
//     empty and non-empty rule lists, rules without from/to or ports, peers
//     with podSelector, namespaceSelector (empty too), both, or ipBlock
//     with except entries around pod and outside addresses, numeric, named
//     and ranged ports of TCP, UDP and SCTP, ports without a number.
//
// RandomPacket picks source and destination among the pods' addresses,
// addresses outside the cluster (192.0.2.0/24, 198.51.100.7) and node
// addresses (10.0.0.1..N); never the same address twice, so the packet is
// never a pod's loopback traffic. Protocols are TCP, UDP and SCTP, ports
// come from a small set that hits the generated rules often
// (PacketPorts).

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// GenOptions shape a random snapshot. Zero values take the defaults.
type GenOptions struct {
	Namespaces       int  // number of namespaces, 1..8 (default 3: x, y, z)
	PodsPerNamespace int  // pods per namespace, 1..8 (default 3: a, b, c)
	Nodes            int  // nodes the pods are spread over (default 2)
	Policies         int  // at most this many policies; the count is uniform in 0..Policies (default 4)
	MaxRules         int  // at most this many rules per direction (default 3)
	IPv6             bool // IPv6 addresses instead of IPv4
}

func (o GenOptions) withDefaults() GenOptions {
	def := func(v *int, d, max int) {
		if *v <= 0 {
			*v = d
		}
		if max > 0 && *v > max {
			*v = max
		}
	}
	def(&o.Namespaces, 3, len(genNamespaces))
	def(&o.PodsPerNamespace, 3, len(genPods))
	def(&o.Nodes, 2, 250)
	def(&o.Policies, 4, 0)
	def(&o.MaxRules, 3, 0)
	return o
}

var (
	genNamespaces = []string{"x", "y", "z", "w", "v", "u", "t", "s"}
	genPods       = []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	// PacketPorts are the destination ports RandomPacket uses: the
	// generated numeric ports and named port numbers, their neighbours, and
	// ports inside and just outside the generated ranges.
	PacketPorts = []uint16{53, 80, 81, 82, 180, 181, 443, 8000, 8080, 8081, 9000, 9001}

	podLabelValues = map[string][]string{"app": {"web", "db", "api"}, "tier": {"front", "back"}}
	nsLabelValues  = map[string][]string{"env": {"prod", "dev"}}
)

// plan is the address plan of one family.
type plan struct {
	v6 bool
}

func (p plan) pod(node, i int) netip.Addr {
	if p.v6 {
		return netip.MustParseAddr(fmt.Sprintf("fd00:10:244:%x::%x", node, 0x10+i))
	}
	return netip.AddrFrom4([4]byte{10, 244, byte(node), byte(10 + i)})
}

func (p plan) node(n int) netip.Addr {
	if p.v6 {
		return netip.MustParseAddr(fmt.Sprintf("fd00::%x", n))
	}
	return netip.AddrFrom4([4]byte{10, 0, 0, byte(n)})
}

// outside returns addresses outside the cluster.
func (p plan) outside() []netip.Addr {
	if p.v6 {
		return []netip.Addr{
			netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::80"),
			netip.MustParseAddr("2001:db8::ff"), netip.MustParseAddr("2001:db8:1::7"),
		}
	}
	return []netip.Addr{
		netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.130"),
		netip.MustParseAddr("192.0.2.255"), netip.MustParseAddr("198.51.100.7"),
	}
}

func pick[T any](r *rand.Rand, list []T) T { return list[r.IntN(len(list))] }

func chance(r *rand.Rand, p float64) bool { return r.Float64() < p }

// RandomSnapshot returns a random, valid snapshot (see the top of gen.go).
func RandomSnapshot(r *rand.Rand, opts GenOptions) *Snapshot {
	o := opts.withDefaults()
	pl := plan{v6: o.IPv6}
	s := &Snapshot{Namespaces: map[string]map[string]string{}}
	next := make([]int, o.Nodes+1) // next pod index per node
	for _, ns := range genNamespaces[:o.Namespaces] {
		if !chance(r, 1.0/6) {
			l := map[string]string{"ns": ns}
			if chance(r, 0.6) {
				l["env"] = pick(r, nsLabelValues["env"])
			}
			s.Namespaces[ns] = l
		}
		for _, name := range genPods[:o.PodsPerNamespace] {
			node := 1 + r.IntN(o.Nodes)
			p := Pod{
				Namespace: ns,
				Name:      name,
				IP:        pl.pod(node, next[node]),
				Node:      fmt.Sprintf("node%d", node),
				Labels:    map[string]string{"pod": name},
			}
			next[node]++
			for _, k := range []string{"app", "tier"} {
				if chance(r, 0.6) {
					p.Labels[k] = pick(r, podLabelValues[k])
				}
			}
			if chance(r, 0.8) {
				p.Ports = append(p.Ports, NamedPort{Name: "http", Port: pick(r, []uint16{80, 8080}), Protocol: TCP})
			}
			if chance(r, 0.6) {
				p.Ports = append(p.Ports, NamedPort{Name: "dns", Port: 53, Protocol: UDP})
			}
			if chance(r, 0.5) {
				p.Ports = append(p.Ports, NamedPort{Name: "sctp", Port: pick(r, []uint16{9000, 9001}), Protocol: SCTP})
			}
			if chance(r, 0.5) {
				p.Ports = append(p.Ports, NamedPort{Name: "alt", Port: 81, Protocol: pick(r, []Protocol{TCP, UDP})})
			}
			s.Pods = append(s.Pods, p)
		}
	}
	g := &gen{r: r, o: o, pl: pl, s: s}
	n := r.IntN(o.Policies + 1)
	for i := 0; i < n; i++ {
		s.Policies = append(s.Policies, g.policy(fmt.Sprintf("p%d", i)))
	}
	return s
}

type gen struct {
	r  *rand.Rand
	o  GenOptions
	pl plan
	s  *Snapshot
	// prev is the last peer list made: peer lists sometimes repeat it with
	// each namespace selector turned from missing to empty or back, peers
	// that differ only there (and once shared a set).
	prev []networkingv1.NetworkPolicyPeer
}

func (g *gen) policy(name string) *networkingv1.NetworkPolicy {
	r := g.r
	pol := &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: pick(r, genNamespaces[:g.o.Namespaces]), Name: name},
	}
	if sel := g.selector(false); sel != nil {
		pol.Spec.PodSelector = *sel
	}
	switch r.IntN(5) {
	case 0: // omitted
	case 1:
		pol.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	case 2:
		pol.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	case 3:
		pol.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	case 4:
		pol.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress, networkingv1.PolicyTypeIngress}
	}
	for i, n := 0, g.ruleCount(); i < n; i++ {
		pol.Spec.Ingress = append(pol.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{Ports: g.ports(), From: g.peers()})
	}
	for i, n := 0, g.ruleCount(); i < n; i++ {
		pol.Spec.Egress = append(pol.Spec.Egress, networkingv1.NetworkPolicyEgressRule{Ports: g.ports(), To: g.peers()})
	}
	return pol
}

// ruleCount: no rules a third of the time, else 1..MaxRules.
func (g *gen) ruleCount() int {
	if chance(g.r, 1.0/3) {
		return 0
	}
	return 1 + g.r.IntN(g.o.MaxRules)
}

// selector returns a random selector for pods (ns false) or namespaces;
// nil stands for the empty selector.
func (g *gen) selector(ns bool) *metav1.LabelSelector {
	r := g.r
	if chance(r, 0.25) {
		return nil
	}
	keys := []string{"pod", "app", "tier", "absent"}
	values := func(k string) []string {
		switch k {
		case "pod":
			return append(append([]string(nil), genPods[:g.o.PodsPerNamespace]...), "nobody")
		case "absent":
			return []string{"yes"}
		}
		return append(append([]string(nil), podLabelValues[k]...), "other")
	}
	if ns {
		keys = []string{"ns", NamespaceNameLabel, "env", "absent"}
		values = func(k string) []string {
			switch k {
			case "ns", NamespaceNameLabel:
				return append(append([]string(nil), genNamespaces[:g.o.Namespaces]...), "nowhere")
			case "absent":
				return []string{"yes"}
			}
			return append(append([]string(nil), nsLabelValues[k]...), "other")
		}
	}
	sel := &metav1.LabelSelector{}
	if chance(r, 0.6) {
		sel.MatchLabels = map[string]string{}
		for i, n := 0, 1+r.IntN(2); i < n; i++ {
			k := pick(r, keys)
			sel.MatchLabels[k] = pick(r, values(k))
		}
	}
	if len(sel.MatchLabels) == 0 || chance(r, 0.4) {
		for i, n := 0, 1+r.IntN(2); i < n; i++ {
			k := pick(r, keys)
			req := metav1.LabelSelectorRequirement{Key: k}
			switch r.IntN(4) {
			case 0:
				req.Operator = metav1.LabelSelectorOpIn
			case 1:
				req.Operator = metav1.LabelSelectorOpNotIn
			case 2:
				req.Operator = metav1.LabelSelectorOpExists
			case 3:
				req.Operator = metav1.LabelSelectorOpDoesNotExist
			}
			if req.Operator == metav1.LabelSelectorOpIn || req.Operator == metav1.LabelSelectorOpNotIn {
				vs := values(k)
				for j, m := 0, 1+r.IntN(2); j < m; j++ {
					req.Values = append(req.Values, pick(r, vs))
				}
			}
			sel.MatchExpressions = append(sel.MatchExpressions, req)
		}
	}
	return sel
}

// peers: nil a quarter of the time (every peer), else 1..3 peers.
func (g *gen) peers() []networkingv1.NetworkPolicyPeer {
	r := g.r
	if chance(r, 0.25) {
		return nil
	}
	if len(g.prev) > 0 && chance(r, 0.2) {
		out := slices.Clone(g.prev)
		for i := range out {
			if out[i].IPBlock != nil {
				continue
			}
			if out[i].NamespaceSelector == nil {
				out[i].NamespaceSelector = &metav1.LabelSelector{}
			} else if len(out[i].NamespaceSelector.MatchLabels)+len(out[i].NamespaceSelector.MatchExpressions) == 0 {
				out[i].NamespaceSelector = nil
			}
			if out[i].PodSelector == nil && out[i].NamespaceSelector == nil {
				out[i].PodSelector = &metav1.LabelSelector{}
			}
		}
		return out
	}
	var out []networkingv1.NetworkPolicyPeer
	for i, n := 0, 1+r.IntN(3); i < n; i++ {
		var p networkingv1.NetworkPolicyPeer
		switch r.IntN(4) {
		case 0:
			p.PodSelector = g.nonNil(g.selector(false))
		case 1:
			p.NamespaceSelector = g.nonNil(g.selector(true))
		case 2:
			p.PodSelector = g.nonNil(g.selector(false))
			p.NamespaceSelector = g.nonNil(g.selector(true))
		case 3:
			p.IPBlock = g.ipBlock()
		}
		out = append(out, p)
	}
	g.prev = out
	return out
}

func (g *gen) nonNil(sel *metav1.LabelSelector) *metav1.LabelSelector {
	if sel == nil {
		return &metav1.LabelSelector{}
	}
	return sel
}

// addrs are the addresses blocks are built around: every pod's, the
// outside ones and the node addresses.
func (g *gen) addrs() []netip.Addr {
	var out []netip.Addr
	for _, p := range g.s.Pods {
		out = append(out, p.IP)
	}
	out = append(out, g.pl.outside()...)
	for n := 1; n <= g.o.Nodes; n++ {
		out = append(out, g.pl.node(n))
	}
	return out
}

// ipBlock returns a block around a known address, with up to two except
// entries strictly inside it around other known addresses.
func (g *gen) ipBlock() *networkingv1.IPBlock {
	r := g.r
	addrs := g.addrs()
	lens := []int{0, 8, 16, 24, 25, 30, 32}
	if g.pl.v6 {
		lens = []int{0, 16, 32, 48, 64, 120, 128}
	}
	base := pick(r, addrs)
	cidr := netip.PrefixFrom(base, pick(r, lens)).Masked()
	b := &networkingv1.IPBlock{CIDR: cidr.String()}
	if chance(r, 0.5) {
		return b
	}
	var inside []netip.Addr
	for _, a := range addrs {
		if cidr.Contains(a) {
			inside = append(inside, a)
		}
	}
	var longer []int
	for _, l := range lens {
		if l > cidr.Bits() {
			longer = append(longer, l)
		}
	}
	if len(inside) == 0 || len(longer) == 0 {
		return b
	}
	for i, n := 0, 1+r.IntN(2); i < n; i++ {
		e := netip.PrefixFrom(pick(r, inside), pick(r, longer)).Masked()
		b.Except = append(b.Except, e.String())
	}
	return b
}

// ports: nil a third of the time (every port), else 1..2 entries.
func (g *gen) ports() []networkingv1.NetworkPolicyPort {
	r := g.r
	if chance(r, 1.0/3) {
		return nil
	}
	var out []networkingv1.NetworkPolicyPort
	for i, n := 0, 1+r.IntN(2); i < n; i++ {
		var p networkingv1.NetworkPolicyPort
		if chance(r, 0.75) {
			proto := pick(r, []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP})
			p.Protocol = &proto
		}
		switch r.IntN(4) {
		case 0: // every port of the protocol
		case 1:
			v := intstr.FromInt32(int32(pick(r, []uint16{53, 80, 81, 443, 8080, 9000})))
			p.Port = &v
		case 2:
			v := intstr.FromString(pick(r, []string{"http", "dns", "sctp", "alt", "missing"}))
			p.Port = &v
		case 3:
			lo := pick(r, []int32{80, 81, 8000, 9000})
			hi := lo + pick(r, []int32{0, 1, 100})
			v := intstr.FromInt32(lo)
			p.Port, p.EndPort = &v, &hi
		}
		out = append(out, p)
	}
	return out
}

// RandomPacket returns a random first packet between the snapshot's pods,
// addresses outside the cluster and node addresses (see the top of
// gen.go). Source and destination always differ.
func RandomPacket(r *rand.Rand, s *Snapshot) Packet {
	pl := plan{v6: len(s.Pods) > 0 && s.Pods[0].IP.Is6()}
	nodes := map[string]bool{}
	for _, p := range s.Pods {
		nodes[p.Node] = true
	}
	endpoint := func() netip.Addr {
		if len(s.Pods) > 0 && chance(r, 0.8) {
			return pick(r, s.Pods).IP
		}
		if chance(r, 0.7) {
			return pick(r, pl.outside())
		}
		return pl.node(1 + r.IntN(max(1, len(nodes))))
	}
	pkt := Packet{
		Src:      endpoint(),
		Protocol: pick(r, []Protocol{TCP, UDP, SCTP}),
		Port:     pick(r, PacketPorts),
	}
	for {
		pkt.Dst = endpoint()
		if pkt.Dst != pkt.Src {
			return pkt
		}
	}
}
