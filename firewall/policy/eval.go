package policy

// The evaluator states what NetworkPolicy means, packet by packet, without
// a kernel. It is the reference the compiler and the tracer are checked
// against.
//
// Semantics (networking.k8s.io/v1):
//
//   - A policy selects the pods of its own namespace that its podSelector
//     matches; an empty podSelector selects every pod of the namespace.
//   - A policy applies to the directions PolicyTypes reports: the listed
//     types, or, when spec.policyTypes is omitted, Ingress always and Egress
//     when spec.egress has rules.
//   - A pod selected by no policy of a direction is not isolated in that
//     direction: everything passes. A pod selected by at least one is
//     isolated: a packet passes only if some rule of some of those policies
//     allows it (policies add up, there is no deny rule and no order).
//   - A connection passes when the source's egress allows it and the
//     destination's ingress allows it. A direction only exists for pods of
//     the snapshot: an address that is not a pod has no policy and the
//     direction allows.
//   - A rule allows a packet when one of its peers matches the other end
//     and one of its ports matches the packet. Missing or empty from/to
//     matches every peer; missing or empty ports matches every port and
//     protocol (also protocols without ports, like ICMP).
//   - Peers: podSelector alone matches pods of the policy's namespace;
//     namespaceSelector alone matches every pod of the namespaces it selects
//     (an empty one: of every namespace); both in one peer match pods that
//     satisfy both. Namespaces carry kubernetes.io/metadata.name=<name>.
//     ipBlock matches addresses in cidr and outside every except entry,
//     whether the address is a pod's or not. Selector peers never match an
//     address that is not a pod.
//   - Ports: protocol defaults to TCP; a numeric port matches that
//     destination port, with endPort the range port..endPort; a named port
//     is looked up in the destination pod's container ports (the selected
//     pod for ingress, the destination pod for egress) by name and protocol,
//     so it may mean different numbers on different pods, and it matches
//     nothing when the destination is not a pod or has no such port; a
//     port entry without port matches every port of its protocol.
//
// Things the data plane decides, outside this function:
//
//   - Replies of an allowed connection pass (conntrack); Evaluate judges the
//     first packet of a connection only.
//   - Traffic from a pod's own node (kubelet health checks) to the pod
//     passes. Hosts are not pods: Evaluate knows no node addresses and
//     treats a node address like any other address that is not a pod
//     (matched only by ipBlock peers).
//   - A pod's traffic to its own address never leaves the pod's network
//     namespace, so no policy applies to it; Evaluate allows it (the
//     Kubernetes e2e tests expect the same: loopback follows no policy).
//
// Invalid input, which validation in mesh/objects rejects before it is
// stored: a selector that does not convert selects nothing, an ipBlock
// whose cidr or except does not parse matches nothing, a peer with no
// field matches nothing, a peer with ipBlock and selectors needs all of
// them to match.

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Decision explains a verdict for one packet.
type Decision struct {
	Allowed bool
	// Reason is one line: which policy and rule allowed the packet in each
	// direction (or that the direction is not isolated), or which policies
	// isolate a pod and that none of their rules allowed the packet, e.g.
	//
	//	allowed: ingress of y/b by policy y/allow-x rule 0; egress of x/a not isolated
	//	denied: ingress of y/b isolated by y/allow-z, y/deny-all; no rule allows x/a on TCP/80
	Reason  string
	Egress  DirDecision // the source's egress
	Ingress DirDecision // the destination's ingress
}

// DirDecision is the verdict of one direction: the source pod's egress or
// the destination pod's ingress.
type DirDecision struct {
	// Pod is "namespace/name" of the pod whose policies decide this
	// direction (the source for egress, the destination for ingress), or ""
	// when that end is not a pod of the snapshot; then the direction is
	// not isolated and allows.
	Pod string
	// Isolated: at least one policy of this direction selects the pod.
	Isolated bool
	Allowed  bool
	// Policy is "namespace/name" of the first policy (in namespace, name
	// order) with a rule that allows the packet, and Rule the index of the
	// first such rule in its spec.ingress or spec.egress. Policy is "" and
	// Rule -1 when no rule decided: not isolated, or denied.
	Policy string
	Rule   int
	// Policies are all policies that select the pod in this direction, in
	// namespace, name order; nil when none.
	Policies []string
}

// Evaluate judges the first packet of a connection against the policies
// of the snapshot. Pods are found by address (the first pod of s.Pods with
// that address). It is pure: s is not modified. To judge many packets of
// one snapshot, NewEvaluator does the preparation once.
func Evaluate(s *Snapshot, pkt Packet) Decision {
	return NewEvaluator(s).Evaluate(pkt)
}

// Evaluator judges packets against one snapshot; the snapshot must not
// change while the Evaluator is used. It is safe for concurrent use.
type Evaluator struct {
	byIP  map[netip.Addr]*Pod
	nsLab map[string]labels.Set // NamespaceLabels of every pod's namespace
	byNS  map[string][]*compiledPolicy
}

type compiledPolicy struct {
	key     string
	ns      string
	sel     labels.Selector
	ingress bool
	egress  bool
	in      []compiledRule // spec.ingress
	out     []compiledRule // spec.egress
}

type compiledRule struct {
	ports []networkingv1.NetworkPolicyPort
	peers []compiledPeer // empty: every peer
}

type compiledPeer struct {
	empty   bool            // no field set: matches nothing
	pod, ns labels.Selector // nil: field absent
	block   *IPBlock        // nil: field absent
}

// NewEvaluator prepares the snapshot's policies (selectors converted,
// blocks parsed, policies grouped by namespace and sorted).
func NewEvaluator(s *Snapshot) *Evaluator {
	e := &Evaluator{
		byIP:  make(map[netip.Addr]*Pod, len(s.Pods)),
		nsLab: map[string]labels.Set{},
		byNS:  map[string][]*compiledPolicy{},
	}
	for i := range s.Pods {
		p := &s.Pods[i]
		if _, dup := e.byIP[p.IP]; p.IP.IsValid() && !dup {
			e.byIP[p.IP] = p
		}
		if _, ok := e.nsLab[p.Namespace]; !ok {
			e.nsLab[p.Namespace] = NamespaceLabels(s, p.Namespace)
		}
	}
	for _, pol := range SortedPolicies(s.Policies) {
		if pol == nil {
			continue
		}
		cp := &compiledPolicy{key: PolicyKey(pol), ns: pol.Namespace, sel: Selector(&pol.Spec.PodSelector)}
		cp.ingress, cp.egress = PolicyTypes(pol)
		for _, r := range pol.Spec.Ingress {
			cp.in = append(cp.in, compileRule(r.Ports, r.From))
		}
		for _, r := range pol.Spec.Egress {
			cp.out = append(cp.out, compileRule(r.Ports, r.To))
		}
		e.byNS[pol.Namespace] = append(e.byNS[pol.Namespace], cp)
	}
	return e
}

func compileRule(ports []networkingv1.NetworkPolicyPort, peers []networkingv1.NetworkPolicyPeer) compiledRule {
	r := compiledRule{ports: ports}
	for _, p := range peers {
		var cp compiledPeer
		if p.PodSelector == nil && p.NamespaceSelector == nil && p.IPBlock == nil {
			cp.empty = true
		}
		if p.PodSelector != nil {
			cp.pod = Selector(p.PodSelector)
		}
		if p.NamespaceSelector != nil {
			cp.ns = Selector(p.NamespaceSelector)
		}
		if p.IPBlock != nil {
			b, ok := ParseIPBlock(p.IPBlock)
			if !ok {
				b = IPBlock{} // matches nothing
			}
			cp.block = &b
		}
		r.peers = append(r.peers, cp)
	}
	return r
}

// Pod returns the pod with address addr (the first of the snapshot), or
// nil.
func (e *Evaluator) Pod(addr netip.Addr) *Pod { return e.byIP[addr] }

// Evaluate judges one packet; see the package function Evaluate.
func (e *Evaluator) Evaluate(pkt Packet) Decision {
	src, dst := e.Pod(pkt.Src), e.Pod(pkt.Dst)
	d := Decision{
		Egress:  e.direction(Egress, src, dst, pkt.Dst, dst, pkt),
		Ingress: e.direction(Ingress, dst, src, pkt.Src, dst, pkt),
	}
	d.Allowed = d.Egress.Allowed && d.Ingress.Allowed
	if src != nil && pkt.Src == pkt.Dst {
		d.Allowed = true
		d.Reason = fmt.Sprintf("allowed: %s to its own address stays inside the pod; policies do not apply", src.Key())
		return d
	}
	in := phrase(Ingress, d.Ingress, pkt.Dst, endName(src, pkt.Src), pkt)
	eg := phrase(Egress, d.Egress, pkt.Src, endName(dst, pkt.Dst), pkt)
	switch {
	case d.Allowed:
		d.Reason = "allowed: " + in + "; " + eg
	case !d.Ingress.Allowed && !d.Egress.Allowed:
		d.Reason = "denied: " + in + "; " + eg
	case !d.Ingress.Allowed:
		d.Reason = "denied: " + in
	default:
		d.Reason = "denied: " + eg
	}
	return d
}

// direction decides one direction for subject (the source for egress, the
// destination for ingress); peer and peerAddr are the other end, dst the
// destination pod (for named ports).
func (e *Evaluator) direction(dir Direction, subject, peer *Pod, peerAddr netip.Addr, dst *Pod, pkt Packet) DirDecision {
	dd := DirDecision{Allowed: true, Rule: -1}
	if subject == nil {
		return dd
	}
	dd.Pod = subject.Key()
	podLabels := labels.Set(subject.Labels)
	for _, cp := range e.byNS[subject.Namespace] {
		if (dir == Ingress && !cp.ingress) || (dir == Egress && !cp.egress) {
			continue
		}
		if !cp.sel.Matches(podLabels) {
			continue
		}
		dd.Policies = append(dd.Policies, cp.key)
		if dd.Policy != "" {
			continue
		}
		rules := cp.in
		if dir == Egress {
			rules = cp.out
		}
		for i, r := range rules {
			if e.ruleMatches(cp, r, peer, peerAddr, dst, pkt) {
				dd.Policy, dd.Rule = cp.key, i
				break
			}
		}
	}
	dd.Isolated = len(dd.Policies) > 0
	dd.Allowed = !dd.Isolated || dd.Policy != ""
	return dd
}

func (e *Evaluator) ruleMatches(cp *compiledPolicy, r compiledRule, peer *Pod, peerAddr netip.Addr, dst *Pod, pkt Packet) bool {
	if !PortsMatch(r.ports, pkt.Protocol, pkt.Port, dst) {
		return false
	}
	if len(r.peers) == 0 {
		return true
	}
	for _, p := range r.peers {
		if e.peerMatches(cp.ns, p, peer, peerAddr) {
			return true
		}
	}
	return false
}

func (e *Evaluator) peerMatches(policyNS string, p compiledPeer, peer *Pod, addr netip.Addr) bool {
	if p.empty {
		return false
	}
	if p.block != nil && !p.block.Contains(addr) {
		return false
	}
	if p.pod == nil && p.ns == nil {
		return true // ipBlock alone
	}
	if peer == nil {
		return false
	}
	if p.ns != nil {
		if !p.ns.Matches(e.nsLab[peer.Namespace]) {
			return false
		}
	} else if peer.Namespace != policyNS {
		return false
	}
	return p.pod == nil || p.pod.Matches(labels.Set(peer.Labels))
}

// PortsMatch reports whether a rule's ports match a packet of protocol
// proto to port port, whose destination is pod dst (nil when the
// destination is not a pod). No ports match everything. A port entry's
// protocol defaults to TCP; a named port is resolved in dst's ports by
// name and protocol (a NamedPort without protocol is TCP).
func PortsMatch(ports []networkingv1.NetworkPolicyPort, proto Protocol, port uint16, dst *Pod) bool {
	if len(ports) == 0 {
		return true
	}
	for _, pp := range ports {
		want := TCP
		if pp.Protocol != nil {
			want = Protocol(*pp.Protocol)
		}
		if want != proto {
			continue
		}
		switch {
		case pp.Port == nil:
			return true
		case pp.Port.Type == intstr.String:
			if dst != nil && hasNamedPort(dst, pp.Port.StrVal, proto, port) {
				return true
			}
		default:
			lo, hi := pp.Port.IntVal, pp.Port.IntVal
			if pp.EndPort != nil {
				hi = *pp.EndPort
			}
			if int32(port) >= lo && int32(port) <= hi {
				return true
			}
		}
	}
	return false
}

func hasNamedPort(p *Pod, name string, proto Protocol, port uint16) bool {
	for _, np := range p.Ports {
		pr := np.Protocol
		if pr == "" {
			pr = TCP
		}
		if np.Name == name && pr == proto && np.Port == port {
			return true
		}
	}
	return false
}

// endName names one end of a packet: the pod's "namespace/name" or the
// address.
func endName(p *Pod, addr netip.Addr) string {
	if p != nil {
		return p.Key()
	}
	return addr.String()
}

// what renders a packet's protocol and port: "TCP/80", or "ICMP" for a
// protocol without ports.
func what(pkt Packet) string {
	switch pkt.Protocol {
	case TCP, UDP, SCTP:
		return string(pkt.Protocol) + "/" + strconv.Itoa(int(pkt.Port))
	}
	if pkt.Port != 0 {
		return string(pkt.Protocol) + "/" + strconv.Itoa(int(pkt.Port))
	}
	return string(pkt.Protocol)
}

// phrase explains one direction: self is the address of the end the
// direction belongs to, other names the other end.
func phrase(dir Direction, dd DirDecision, self netip.Addr, other string, pkt Packet) string {
	switch {
	case dd.Pod == "" && dir == Ingress:
		return "destination " + self.String() + " is not a pod"
	case dd.Pod == "":
		return "source " + self.String() + " is not a pod"
	case !dd.Isolated:
		return fmt.Sprintf("%s of %s not isolated", dir, dd.Pod)
	case dd.Allowed:
		return fmt.Sprintf("%s of %s by policy %s rule %d", dir, dd.Pod, dd.Policy, dd.Rule)
	default:
		return fmt.Sprintf("%s of %s isolated by %s; no rule allows %s on %s", dir, dd.Pod, strings.Join(dd.Policies, ", "), other, what(pkt))
	}
}
