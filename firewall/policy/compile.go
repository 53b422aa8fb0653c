package policy

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/nft"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Names in netloom's table that belong to NetworkPolicy. Everything the
// compiler makes starts with "pol-".
const (
	// ChainForward is the base chain on the forward hook.
	ChainForward = "pol-forward"
	// MapEgress and MapIngress are the verdict maps keyed by local pod
	// address: a pod isolated for egress (ingress) jumps to its class chain.
	MapEgress  = "pol-egress"
	MapIngress = "pol-ingress"
)

// PriorityForward is the priority of ChainForward: after the generic
// forward chain (filter), so that the two read in order in a listing. Any
// order is correct: a drop in either base chain drops.
const PriorityForward = nft.PriorityFilter + 5

// Options tune the compiled fragment.
type Options struct {
	// LogDrops logs dropped packets (kernel log, rate limited) with the
	// prefix "netloom-pol DIR NS/NAME[,...]: " naming the class's policies.
	LogDrops bool
	// LogRate is the log rate limit in packets per second per class
	// (default 5).
	LogRate uint64
}

// Compiled is the compiler's output: the model fragment the kernel gets,
// and what its names mean (for counters and traces). Every answer Trace
// gives is computed from Model alone; the maps only name what it found.
type Compiled struct {
	Model nft.Model
	Node  string
	// Classes maps a class chain's name to its meaning.
	Classes map[string]Class
	// Counters maps each named counter to what it counts.
	Counters map[string]CounterRef
}

// Class is a set of policies that select a pod in one direction; pods with
// the same set share one chain.
type Class struct {
	Direction Direction
	Policies  []string // "namespace/name", sorted
	// Rules is the origin of each rule of the chain, index aligned; the
	// trailing log and drop rules have Policy "" and Rule -1.
	Rules []RuleRef
	// Pods are the local pods in the class ("namespace/name", sorted).
	Pods []string
}

// RuleRef names a rule of a policy: spec.ingress[Rule] or spec.egress[Rule].
type RuleRef struct {
	Policy    string
	Direction Direction
	Rule      int
}

// CounterRef says what a named counter counts: packets allowed by Policy in
// Direction, or (Dropped) packets dropped at the end of class chain Class.
type CounterRef struct {
	Direction Direction
	Policy    string // allowed counters
	Class     string // dropped counters: the class chain
	Dropped   bool
}

// Compile computes the NetworkPolicy fragment of netloom's table for the
// local pods of node. It is pure and deterministic: the same snapshot and
// node give the same model, names included (they are hashes of what they
// stand for, so they stay put when unrelated objects change and an update
// becomes element changes, not new chains).
//
// The fragment, for IPv4 pods (the agent accepts only IPv4 pod networks;
// pods with other addresses in a snapshot are left out):
//
//	chain pol-forward (filter, forward, filter + 5, policy accept)
//	  ct state established,related accept
//	  ct state invalid drop
//	  ip saddr vmap @pol-egress      local pod isolated for egress -> jump its egress class
//	  ip daddr vmap @pol-ingress     local pod isolated for ingress -> jump its ingress class
//	chain pol-eg-<class>             one rule per egress rule of the class's policies:
//	  ip daddr @pol-peer-<h> meta l4proto . th dport @pol-port-<h> counter name "pol-<p>-egress" return
//	  counter name "pol-eg-<class>-dropped" drop
//	chain pol-in-<class>             the same for ingress, with saddr and accept
//
// Peers (pod addresses, ipBlock CIDRs minus their except lists) are interval
// sets, ports are `meta l4proto . th dport` interval sets, and rules with
// named ports use a set keyed by `ip daddr . meta l4proto . th dport`,
// because one name may mean different numbers on different pods. A packet
// costs two map lookups and, for an isolated pod, at most one rule per
// policy rule that selects that pod; no rule per peer.
func Compile(s *Snapshot, node string, opts Options) *Compiled {
	c := newCompiler(s, node, opts)
	return c.compile()
}

type compiler struct {
	snap *Snapshot
	node string
	opts Options

	nsLabels map[string]labels.Set
	nsNames  []string         // sorted
	podsByNS map[string][]int // indexes into pods, in order
	pods     []Pod            // IPv4 pods with an address, sorted by key

	selCache   map[string]labels.Selector
	nsSelCache map[string][]string   // namespace selector -> namespaces
	podSel     map[[2]string][]int   // (namespace, pod selector) -> pods
	sets       map[string]*nft.Set   // by name
	ruleCache  map[string][]nft.Rule // policy key + direction -> rules
	refCache   map[string][]RuleRef  // idem, origins
	policies   map[string]*networkingv1.NetworkPolicy
	counterSet map[string]CounterRef
}

func newCompiler(s *Snapshot, node string, opts Options) *compiler {
	c := &compiler{
		snap: s, node: node, opts: opts,
		nsLabels:   map[string]labels.Set{},
		podsByNS:   map[string][]int{},
		selCache:   map[string]labels.Selector{},
		nsSelCache: map[string][]string{},
		podSel:     map[[2]string][]int{},
		sets:       map[string]*nft.Set{},
		ruleCache:  map[string][]nft.Rule{},
		refCache:   map[string][]RuleRef{},
		policies:   map[string]*networkingv1.NetworkPolicy{},
		counterSet: map[string]CounterRef{},
	}
	addNS := func(ns string) {
		if _, ok := c.nsLabels[ns]; ok {
			return
		}
		c.nsLabels[ns] = NamespaceLabels(s, ns)
	}
	for ns := range s.Namespaces {
		addNS(ns)
	}
	seen := map[netip.Addr]bool{}
	for _, p := range s.Pods {
		addNS(p.Namespace)
		// One pod per address, the first (as Evaluate finds pods): a map
		// cannot hold a key twice.
		if p.IP.Is4() && !seen[p.IP] {
			seen[p.IP] = true
			c.pods = append(c.pods, p)
		}
	}
	for _, np := range s.Policies {
		if np != nil {
			addNS(np.Namespace)
		}
	}
	for ns := range c.nsLabels {
		c.nsNames = append(c.nsNames, ns)
	}
	sort.Strings(c.nsNames)
	slices.SortStableFunc(c.pods, func(a, b Pod) int {
		if x := strings.Compare(a.Namespace, b.Namespace); x != 0 {
			return x
		}
		return strings.Compare(a.Name, b.Name)
	})
	for i, p := range c.pods {
		c.podsByNS[p.Namespace] = append(c.podsByNS[p.Namespace], i)
	}
	return c
}

func (c *compiler) compile() *Compiled {
	out := &Compiled{Node: c.node, Classes: map[string]Class{}, Counters: c.counterSet}

	// Policies by namespace, sorted by key.
	type keyed struct {
		key string
		np  *networkingv1.NetworkPolicy
	}
	var ks []keyed
	for _, np := range c.snap.Policies {
		if np != nil {
			ks = append(ks, keyed{PolicyKey(np), np})
		}
	}
	slices.SortStableFunc(ks, func(a, b keyed) int { return strings.Compare(a.key, b.key) })
	pols := make([]*networkingv1.NetworkPolicy, len(ks))
	for i, k := range ks {
		pols[i] = k.np
	}
	byNS := map[string][]*networkingv1.NetworkPolicy{}
	for _, np := range pols {
		byNS[np.Namespace] = append(byNS[np.Namespace], np)
		c.policies[PolicyKey(np)] = np
	}

	// Classes of the local pods.
	type class struct {
		name     string
		dir      Direction
		policies []string
		pods     []Pod
	}
	classes := map[string]*class{}
	var classOrder []string
	egressMap, ingressMap := []nft.Element{}, []nft.Element{}
	addClass := func(dir Direction, p Pod, policies []string) string {
		short := "in"
		if dir == Egress {
			short = "eg"
		}
		name := "pol-" + short + "-" + hashOf(strings.Join(policies, "\n"))
		cl, ok := classes[name]
		if !ok {
			cl = &class{name: name, dir: dir, policies: policies}
			classes[name] = cl
			classOrder = append(classOrder, name)
		}
		cl.pods = append(cl.pods, p)
		return name
	}
	// The policies of each local pod, in policy order: each policy's
	// selection is computed once per distinct selector and namespace.
	podIn, podEg := map[int][]string{}, map[int][]string{}
	for _, np := range pols {
		in, eg := PolicyTypes(np)
		if !in && !eg {
			continue
		}
		for _, i := range c.podsOf(np.Namespace, &np.Spec.PodSelector) {
			if c.pods[i].Node != c.node {
				continue
			}
			if in {
				podIn[i] = append(podIn[i], PolicyKey(np))
			}
			if eg {
				podEg[i] = append(podEg[i], PolicyKey(np))
			}
		}
	}
	for i, p := range c.pods {
		if eg := podEg[i]; len(eg) > 0 {
			ch := addClass(Egress, p, eg)
			egressMap = append(egressMap, vmapElement(p.IP, ch))
		}
		if in := podIn[i]; len(in) > 0 {
			ch := addClass(Ingress, p, in)
			ingressMap = append(ingressMap, vmapElement(p.IP, ch))
		}
	}

	m := nft.Model{Family: firewall.TableFamily, Table: firewall.TableName}
	m.Chains = append(m.Chains, nft.Chain{
		Name: ChainForward, Type: "filter", Hook: "forward",
		Priority: PriorityForward, Policy: "accept",
		Rules: []nft.Rule{
			nft.NewRule(nft.CtState(nft.CtEstablished|nft.CtRelated), nft.Accept()),
			nft.NewRule(nft.CtState(nft.CtInvalid), nft.Drop()),
			nft.NewRule(nft.IPv4(), nft.Addr(nft.Saddr), nft.VmapLookup(MapEgress)),
			nft.NewRule(nft.IPv4(), nft.Addr(nft.Daddr), nft.VmapLookup(MapIngress)),
		},
	})
	m.Sets = append(m.Sets, verdictMap(MapEgress, egressMap), verdictMap(MapIngress, ingressMap))

	sort.Strings(classOrder)
	for _, name := range classOrder {
		cl := classes[name]
		ch := nft.Chain{Name: name}
		var refs []RuleRef
		for _, key := range cl.policies {
			rules, rr := c.policyRules(c.policies[key], cl.dir)
			ch.Rules = append(ch.Rules, rules...)
			refs = append(refs, rr...)
		}
		if c.opts.LogDrops {
			ch.Rules = append(ch.Rules, nft.NewRule(logLimited(c.logRate(), logPrefix(cl.dir, cl.policies))))
			refs = append(refs, RuleRef{Direction: cl.dir, Rule: -1})
		}
		dropped := name + "-dropped"
		c.counterSet[dropped] = CounterRef{Direction: cl.dir, Class: name, Dropped: true}
		ch.Rules = append(ch.Rules, nft.NewRule(counterRef(dropped), nft.Drop()))
		refs = append(refs, RuleRef{Direction: cl.dir, Rule: -1})
		m.Chains = append(m.Chains, ch)

		podKeys := make([]string, len(cl.pods))
		for i, p := range cl.pods {
			podKeys[i] = p.Key()
		}
		out.Classes[name] = Class{Direction: cl.dir, Policies: cl.policies, Rules: refs, Pods: podKeys}
	}

	setNames := make([]string, 0, len(c.sets))
	for n := range c.sets {
		setNames = append(setNames, n)
	}
	sort.Strings(setNames)
	for _, n := range setNames {
		m.Sets = append(m.Sets, *c.sets[n])
	}
	for n := range c.counterSet {
		m.Counters = append(m.Counters, n)
	}
	sort.Strings(m.Counters)
	out.Model = m
	return out
}

func (c *compiler) logRate() uint64 {
	if c.opts.LogRate == 0 {
		return 5
	}
	return c.opts.LogRate
}

// logPrefix names the direction and the class's policies, within the
// kernel's 127 bytes.
func logPrefix(dir Direction, policies []string) string {
	p := "netloom-pol " + string(dir) + " "
	for i, key := range policies {
		sep := ""
		if i > 0 {
			sep = ","
		}
		more := fmt.Sprintf("+%d", len(policies)-i)
		if len(p)+len(sep)+len(key)+2 > 127-len(more)-1 {
			p += sep + more
			break
		}
		p += sep + key
	}
	return p + ": "
}

// policyRules compiles np's rules of one direction (cached: a policy's
// rules are the same in every class chain it is part of).
func (c *compiler) policyRules(np *networkingv1.NetworkPolicy, dir Direction) ([]nft.Rule, []RuleRef) {
	key := PolicyKey(np)
	ck := key + "\x00" + string(dir)
	if r, ok := c.ruleCache[ck]; ok {
		return r, c.refCache[ck]
	}
	allowed := allowedCounter(key, dir)
	c.counterSet[allowed] = CounterRef{Direction: dir, Policy: key}
	rules, refs := buildRules(c, np, key, dir, allowed)
	c.ruleCache[ck], c.refCache[ck] = rules, refs
	return rules, refs
}

// allowedCounter is the name of the counter of packets np (key) allows in
// dir.
func allowedCounter(key string, dir Direction) string {
	return "pol-" + hashOf(key) + "-" + string(dir)
}

// setNamer names (and, for the pure compiler, creates) the sets a rule
// looks up. The rules only depend on the names, so the incremental
// Compiler builds them with a namer that records what each set is made of.
type setNamer interface {
	peerSet(ns string, peers []networkingv1.NetworkPolicyPeer) string
	portSet(ports []networkingv1.NetworkPolicyPort) string
	namedPortSet(np *networkingv1.NetworkPolicy, dir Direction, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) string
}

// buildRules compiles np's rules of one direction, naming sets with sn.
func buildRules(sn setNamer, np *networkingv1.NetworkPolicy, key string, dir Direction, allowed string) ([]nft.Rule, []RuleRef) {
	var rules []nft.Rule
	var refs []RuleRef
	add := func(i int, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) {
		var fs []nft.Frag
		peerField, final := nft.Saddr, nft.Accept()
		if dir == Egress {
			peerField, final = nft.Daddr, nft.Return()
		}
		// The `meta nfproto ipv4` dependency of ip payload matches (the
		// chain is only reached from an IPv4 map; nft adds it all the same,
		// and lists it where no ip payload follows, so it goes with them).
		if len(peers) > 0 || (len(ports) > 0 && usesNamedPorts(ports)) {
			fs = append(fs, nft.IPv4())
		}
		if len(peers) > 0 {
			fs = append(fs, nft.Addr(peerField), nft.Lookup(sn.peerSet(np.Namespace, peers)))
		}
		if len(ports) > 0 {
			if usesNamedPorts(ports) {
				fs = append(fs, nft.DaddrProtoPort(), nft.Lookup(sn.namedPortSet(np, dir, peers, ports)))
			} else {
				fs = append(fs, protoPort(), nft.Lookup(sn.portSet(ports)))
			}
		}
		fs = append(fs, counterRef(allowed), final)
		rules = append(rules, nft.NewRule(fs...))
		refs = append(refs, RuleRef{Policy: key, Direction: dir, Rule: i})
	}
	if dir == Ingress {
		for i, r := range np.Spec.Ingress {
			add(i, r.From, r.Ports)
		}
	} else {
		for i, r := range np.Spec.Egress {
			add(i, r.To, r.Ports)
		}
	}
	return rules, refs
}

// selector compiles a label selector as Selector does (cached by its
// text).
func (c *compiler) selector(ls *metav1.LabelSelector) labels.Selector {
	key := selectorKey(ls)
	if s, ok := c.selCache[key]; ok {
		return s
	}
	s := Selector(ls)
	c.selCache[key] = s
	return s
}

// selectorKey is a canonical text of a selector (label keys and values
// cannot contain '=', ',', ';', '|' or NUL, so it is unambiguous).
func selectorKey(ls *metav1.LabelSelector) string {
	if ls == nil {
		return "<nil>"
	}
	var b strings.Builder
	keys := make([]string, 0, len(ls.MatchLabels))
	for k := range ls.MatchLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(ls.MatchLabels[k])
		b.WriteByte(',')
	}
	for _, e := range ls.MatchExpressions {
		b.WriteByte('|')
		b.WriteString(e.Key)
		b.WriteByte(' ')
		b.WriteString(string(e.Operator))
		for _, v := range e.Values {
			b.WriteByte(',')
			b.WriteString(v)
		}
	}
	return b.String()
}

// peersKey is a canonical text of a rule's peers.
func peersKey(peers []networkingv1.NetworkPolicyPeer) string {
	var b strings.Builder
	for _, p := range peers {
		b.WriteString("\x00P")
		if p.PodSelector != nil {
			b.WriteString(selectorKey(p.PodSelector))
		}
		// A missing namespaceSelector (the policy's namespace) and an
		// empty one (every namespace) select different pods: selectorKey
		// tells them apart ("<nil>").
		b.WriteString("\x00N")
		b.WriteString(selectorKey(p.NamespaceSelector))
		if p.IPBlock != nil {
			b.WriteString("\x00B")
			b.WriteString(p.IPBlock.CIDR)
			for _, e := range p.IPBlock.Except {
				b.WriteByte(',')
				b.WriteString(e)
			}
		}
		b.WriteString("\x00;")
	}
	return b.String()
}

// portsKey is a canonical text of a rule's ports.
func portsKey(ports []networkingv1.NetworkPolicyPort) string {
	var b strings.Builder
	for _, p := range ports {
		if p.Protocol != nil {
			b.WriteString(string(*p.Protocol))
		}
		b.WriteByte(':')
		if p.Port != nil {
			b.WriteString(p.Port.String())
			if p.Port.Type == intstr.String {
				b.WriteByte('s')
			}
		}
		if p.EndPort != nil {
			fmt.Fprintf(&b, "-%d", *p.EndPort)
		}
		b.WriteByte(';')
	}
	return b.String()
}

// namespacesOf returns the namespaces a namespace selector selects.
func (c *compiler) namespacesOf(ls *metav1.LabelSelector) []string {
	key := selectorKey(ls)
	if ns, ok := c.nsSelCache[key]; ok {
		return ns
	}
	sel := c.selector(ls)
	var out []string
	for _, ns := range c.nsNames {
		if sel.Matches(c.nsLabels[ns]) {
			out = append(out, ns)
		}
	}
	c.nsSelCache[key] = out
	return out
}

// podsOf returns the pods of namespace ns a pod selector selects (nil
// selector: all).
func (c *compiler) podsOf(ns string, ls *metav1.LabelSelector) []int {
	k := [2]string{ns, selectorKey(ls)}
	if ps, ok := c.podSel[k]; ok {
		return ps
	}
	var out []int
	if ls == nil {
		out = c.podsByNS[ns]
	} else {
		sel := c.selector(ls)
		for _, i := range c.podsByNS[ns] {
			if sel.Matches(labels.Set(c.pods[i].Labels)) {
				out = append(out, i)
			}
		}
	}
	c.podSel[k] = out
	return out
}

// peerRanges is the address space of a rule's peers: the pods they select
// and their ipBlocks minus the except lists, as disjoint sorted ranges.
func (c *compiler) peerRanges(ns string, peers []networkingv1.NetworkPolicyPeer) []ipRange {
	var rs []ipRange
	for _, peer := range peers {
		var block []ipRange
		if peer.IPBlock != nil {
			block = mergeRanges(ipBlockRanges(peer.IPBlock))
		}
		if peer.PodSelector == nil && peer.NamespaceSelector == nil {
			rs = append(rs, block...)
			continue
		}
		// Selected pods (within the block too, when a peer has both, which
		// validation forbids).
		nss := []string{ns}
		if peer.NamespaceSelector != nil {
			nss = c.namespacesOf(peer.NamespaceSelector)
		}
		for _, n := range nss {
			for _, i := range c.podsOf(n, peer.PodSelector) {
				a := addrValue(c.pods[i].IP)
				if peer.IPBlock == nil || rangesContain(block, a) {
					rs = append(rs, ipRange{a, a})
				}
			}
		}
	}
	return mergeRanges(rs)
}

// peerSet returns the name of the interval set of a rule's peers, creating
// it. Its name is a hash of the policy's namespace and the peers as
// written, so rules with the same peers share it and pods coming and going
// only change its elements.
func (c *compiler) peerSet(ns string, peers []networkingv1.NetworkPolicyPeer) string {
	name := peerSetName(ns, peers)
	if _, ok := c.sets[name]; ok {
		return name
	}
	c.sets[name] = c.peerSetContent(name, ns, peers)
	return name
}

// peerScoped reports whether peers select pods of the policy's own
// namespace (a pod selector without a namespace selector).
func peerScoped(peers []networkingv1.NetworkPolicyPeer) bool {
	for _, p := range peers {
		if p.PodSelector != nil && p.NamespaceSelector == nil {
			return true
		}
	}
	return false
}

func peerSetName(ns string, peers []networkingv1.NetworkPolicyPeer) string {
	scope := "" // peers without a namespace-relative pod selector are the same everywhere
	if peerScoped(peers) {
		scope = ns
	}
	return "pol-peer-" + hashOf(scope+"\x00"+peersKey(peers))
}

func (c *compiler) peerSetContent(name, ns string, peers []networkingv1.NetworkPolicyPeer) *nft.Set {
	rs := c.peerRanges(ns, peers)
	elems := make([]nft.Element, len(rs))
	for i, r := range rs {
		elems[i] = addrIntervalElement(r)
	}
	return addrIntervalSet(name, elems)
}

// portSet returns the name of the `inet_proto . inet_service` interval set
// of numeric ports.
func (c *compiler) portSet(ports []networkingv1.NetworkPolicyPort) string {
	name := portSetName(ports)
	if _, ok := c.sets[name]; ok {
		return name
	}
	c.sets[name] = portSetContent(name, ports)
	return name
}

func portSetName(ports []networkingv1.NetworkPolicyPort) string {
	return "pol-port-" + hashOf(portsKey(ports))
}

func portSetContent(name string, ports []networkingv1.NetworkPolicyPort) *nft.Set {
	var elems []nft.Element
	for _, pr := range numericPortRanges(ports) {
		elems = append(elems, protoPortElement(pr))
	}
	return protoPortSet(name, elems)
}

// namedPortSet returns the name of the `ipv4_addr . inet_proto .
// inet_service` set of a rule with named ports: numeric ports for every
// destination (0.0.0.0/0), named ports resolved per destination pod. For
// ingress the destinations are the local pods the policy selects; for
// egress, every pod inside the rule's peers (all pods when it has none).
func (c *compiler) namedPortSet(np *networkingv1.NetworkPolicy, dir Direction, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) string {
	name := namedPortSetName(np, dir, peers, ports)
	if _, ok := c.sets[name]; ok {
		return name
	}
	c.sets[name] = c.namedPortSetContent(name, np.Namespace, &np.Spec.PodSelector, dir, peers, ports)
	return name
}

func namedPortSetName(np *networkingv1.NetworkPolicy, dir Direction, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) string {
	var scope string
	if dir == Ingress {
		scope = "in\x00" + np.Namespace + "\x00" + selectorKey(&np.Spec.PodSelector)
	} else {
		scope = "eg\x00" + np.Namespace + "\x00" + peersKey(peers)
	}
	return "pol-nport-" + hashOf(scope+"\x00"+portsKey(ports))
}

// namedPortSetContent computes the named port set of a rule of a policy
// of namespace ns with pod selector podSel.
func (c *compiler) namedPortSetContent(name, ns string, podSel *metav1.LabelSelector, dir Direction, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) *nft.Set {
	numeric := numericPortRanges(ports)
	var dests []Pod
	if dir == Ingress {
		for _, i := range c.podsOf(ns, podSel) {
			if c.pods[i].Node == c.node {
				dests = append(dests, c.pods[i])
			}
		}
	} else {
		var rs []ipRange
		if len(peers) > 0 {
			rs = c.peerRanges(ns, peers)
		}
		for _, p := range c.pods {
			if len(peers) == 0 || rangesContain(rs, addrValue(p.IP)) {
				dests = append(dests, p)
			}
		}
	}

	type key struct {
		ip    uint32
		proto uint8
		port  uint16
	}
	seen := map[key]bool{}
	var named []key
	for _, d := range dests {
		for _, pp := range ports {
			if pp.Port == nil || pp.Port.Type != intstr.String {
				continue
			}
			proto, ok := protoNumber(pp.Protocol)
			if !ok {
				continue
			}
			for _, cp := range d.Ports {
				if cp.Name != pp.Port.StrVal || protoOf(cp.Protocol) != proto || cp.Port == 0 {
					continue
				}
				k := key{addrValue(d.IP), proto, cp.Port}
				if seen[k] || coveredBy(numeric, proto, cp.Port) {
					continue
				}
				seen[k] = true
				named = append(named, k)
			}
		}
	}
	slices.SortFunc(named, func(a, b key) int {
		switch {
		case a.ip != b.ip:
			return cmpU32(a.ip, b.ip)
		case a.proto != b.proto:
			return int(a.proto) - int(b.proto)
		}
		return int(a.port) - int(b.port)
	})
	var elems []nft.Element
	for _, pr := range numeric {
		elems = append(elems, addrProtoPortElement(ipRange{0, ^uint32(0)}, pr))
	}
	for _, k := range named {
		elems = append(elems, addrProtoPortElement(ipRange{k.ip, k.ip}, portRange{k.proto, k.port, k.port}))
	}
	return addrProtoPortSet(name, elems)
}

func cmpU32(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func usesNamedPorts(ports []networkingv1.NetworkPolicyPort) bool {
	for _, p := range ports {
		if p.Port != nil && p.Port.Type == intstr.String {
			return true
		}
	}
	return false
}

// portRange is a protocol and an inclusive port range.
type portRange struct {
	proto    uint8
	from, to uint16
}

// numericPortRanges are the numeric entries of ports (a missing port is
// every port of the protocol), merged per protocol into disjoint ranges,
// sorted by protocol then port.
func numericPortRanges(ports []networkingv1.NetworkPolicyPort) []portRange {
	var rs []portRange
	for _, p := range ports {
		proto, ok := protoNumber(p.Protocol)
		if !ok {
			continue
		}
		switch {
		case p.Port == nil:
			rs = append(rs, portRange{proto, 0, 65535})
		case p.Port.Type == intstr.Int:
			from := p.Port.IntVal
			if from < 0 || from > 65535 {
				continue
			}
			to := from
			if p.EndPort != nil {
				to = *p.EndPort
			}
			if to < from || to > 65535 {
				continue // validation rejects it; it matches nothing
			}
			rs = append(rs, portRange{proto, uint16(from), uint16(to)})
		}
	}
	slices.SortFunc(rs, func(a, b portRange) int {
		if a.proto != b.proto {
			return int(a.proto) - int(b.proto)
		}
		return int(a.from) - int(b.from)
	})
	var out []portRange
	for _, r := range rs {
		if n := len(out); n > 0 && out[n-1].proto == r.proto && uint32(r.from) <= uint32(out[n-1].to)+1 {
			if r.to > out[n-1].to {
				out[n-1].to = r.to
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

func coveredBy(rs []portRange, proto uint8, port uint16) bool {
	for _, r := range rs {
		if r.proto == proto && r.from <= port && port <= r.to {
			return true
		}
	}
	return false
}

// IP protocol numbers.
const (
	protoTCP  = 6
	protoUDP  = 17
	protoSCTP = 132
)

// protoNumber maps a policy port's protocol (nil is TCP) to its number.
func protoNumber(p *corev1.Protocol) (uint8, bool) {
	if p == nil {
		return protoTCP, true
	}
	return protoOfOK(Protocol(*p))
}

func protoOfOK(p Protocol) (uint8, bool) {
	switch p {
	case TCP, "":
		return protoTCP, true
	case UDP:
		return protoUDP, true
	case SCTP:
		return protoSCTP, true
	}
	return 0, false
}

// protoOf maps a container port's protocol ("" is TCP) to its number, 0 for
// an unknown one.
func protoOf(p Protocol) uint8 {
	n, _ := protoOfOK(p)
	return n
}

// ipRange is an inclusive range of IPv4 addresses as numbers.
type ipRange struct{ lo, hi uint32 }

func addrValue(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func valueAddr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func prefixRange(p netip.Prefix) ipRange {
	p = p.Masked()
	lo := addrValue(p.Addr())
	hostBits := 32 - p.Bits()
	var span uint32
	if hostBits == 32 {
		span = ^uint32(0)
	} else {
		span = (uint32(1) << hostBits) - 1
	}
	return ipRange{lo, lo + span}
}

// ipBlockRanges is an ipBlock's CIDR minus its except CIDRs (IPv4 only;
// unparsable entries are skipped, the API rejects them).
func ipBlockRanges(b *networkingv1.IPBlock) []ipRange {
	p, err := netip.ParsePrefix(b.CIDR)
	if err != nil || !p.Addr().Is4() {
		return nil
	}
	out := []ipRange{prefixRange(p)}
	for _, e := range b.Except {
		ep, err := netip.ParsePrefix(e)
		if err != nil || !ep.Addr().Is4() {
			continue
		}
		out = subtractRange(out, prefixRange(ep))
	}
	return out
}

// subtractRange removes x from every range of rs.
func subtractRange(rs []ipRange, x ipRange) []ipRange {
	var out []ipRange
	for _, r := range rs {
		if x.hi < r.lo || x.lo > r.hi {
			out = append(out, r)
			continue
		}
		if x.lo > r.lo {
			out = append(out, ipRange{r.lo, x.lo - 1})
		}
		if x.hi < r.hi {
			out = append(out, ipRange{x.hi + 1, r.hi})
		}
	}
	return out
}

// mergeRanges sorts rs and joins overlapping and adjacent ranges: interval
// sets refuse overlaps.
func mergeRanges(rs []ipRange) []ipRange {
	if len(rs) == 0 {
		return nil
	}
	slices.SortFunc(rs, func(a, b ipRange) int { return cmpU32(a.lo, b.lo) })
	out := []ipRange{rs[0]}
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if last.hi == ^uint32(0) || r.lo <= last.hi+1 {
			if r.hi > last.hi {
				last.hi = r.hi
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

func rangesContain(rs []ipRange, v uint32) bool {
	i := sort.Search(len(rs), func(i int) bool { return rs[i].hi >= v })
	return i < len(rs) && rs[i].lo <= v
}

// hashOf is a short stable name for s.
func hashOf(s string) string {
	h := fnv.New64a()
	h.Write([]byte(s))
	return fmt.Sprintf("%016x", h.Sum64())
}
