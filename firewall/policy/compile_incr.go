package policy

import (
	"encoding/binary"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/nft"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Compiler is an incremental Compile: it keeps what it computed for the
// previous snapshots and recomputes only what a change can affect. Its
// result for a snapshot and node is always the one Compile(s, node, opts)
// returns, whatever it compiled before.
//
// What is cached, and on what:
//
//   - per policy, on its content (a canonical encoding of namespace, name
//     and spec; an unchanged *NetworkPolicy pointer skips the encoding):
//     its policy types and, per direction, its rules, rule origins,
//     allowed counter and the recipes of the sets its rules look up;
//   - the world (pods and namespace labels): kept while the snapshot's pods
//     and namespaces are equal to the previous ones; when they change, the
//     namespaces whose pods changed are found, and only what reads them is
//     recomputed (parsed selectors are kept);
//   - per namespace, the classes of its local pods and their verdict map
//     elements, on (the namespace's policies, its pods, the node);
//   - per class chain, its rules, on the policies it is made of;
//   - per set, its elements, on its recipe (the exact peers, ports or
//     selector it comes from), dropped when the pods it reads change;
//   - the sorted set and counter lists, while the policies active on the
//     node are the same.
//
// The policies must not be modified after they are passed to Compile (as
// with objects of an informer's cache): a pointer seen before is taken to
// have the same content. A Compiled it returns shares memory with the
// Compiler and with other results: treat it as read-only.
//
// A Compiler is not safe for concurrent use.
type Compiler struct {
	opts    Options
	forward nft.Chain
	st      *incrState
}

// NewCompiler returns a Compiler with the options Compile would take.
func NewCompiler(opts Options) *Compiler {
	c := &Compiler{opts: opts}
	c.forward = nft.Chain{
		Name: ChainForward, Type: "filter", Hook: "forward",
		Priority: PriorityForward, Policy: "accept",
		Rules: []nft.Rule{
			nft.NewRule(nft.CtState(nft.CtEstablished|nft.CtRelated), nft.Accept()),
			nft.NewRule(nft.CtState(nft.CtInvalid), nft.Drop()),
			nft.NewRule(nft.IPv4(), nft.Addr(nft.Saddr), nft.VmapLookup(MapEgress)),
			nft.NewRule(nft.IPv4(), nft.Addr(nft.Daddr), nft.VmapLookup(MapIngress)),
		},
	}
	c.reset()
	return c
}

// Reset forgets everything cached; the next Compile starts from scratch.
func (c *Compiler) Reset() { c.reset() }

func (c *Compiler) reset() {
	c.st = &incrState{
		byPtr:   map[*networkingv1.NetworkPolicy]*ptrEntry{},
		byEnc:   map[string]*polEntry{},
		nsLists: map[string]*nsList{},
		assign:  map[string]*nsAssign{},
		classes: map[string]*classEntry{},
		sets:    map[string]*setEntry{},
	}
}

// incrState is everything a Compiler caches.
type incrState struct {
	pass uint64

	byPtr map[*networkingv1.NetworkPolicy]*ptrEntry
	byEnc map[string]*polEntry

	// The world: w is a compiler over the pods and namespaces (no
	// policies) of rawPods and rawNS, deep copies of the last snapshot's.
	w       *compiler
	rawPods []Pod
	rawNS   map[string]map[string]string
	node    string

	nsLists map[string]*nsList
	assign  map[string]*nsAssign
	classes map[string]*classEntry
	sets    map[string]*setEntry // by recipe

	// Previous output pieces, reused while what they derive from holds.
	nActive      int
	classNames   []string
	conflicts    bool
	setList      []*setRef // active sets, sorted by name
	counterNames []string
	counters     map[string]CounterRef
}

// polEntry is what the Compiler knows of one policy content.
type polEntry struct {
	np     *networkingv1.NetworkPolicy
	key    string
	ns     string
	in, eg bool
	dirs   [2]*polDir // ingress, egress; built when first needed

	seen   uint64    // pass it was last listed in
	listed uint64    // pass its namespace's list last included it
	active [2]uint64 // pass it was last in a class of the direction
	// pass its sets were last listed in each direction
	setsPass [2]uint64
}

// ptrEntry is a policy pointer seen before.
type ptrEntry struct {
	e    *polEntry
	seen uint64
}

type polDir struct {
	rules   []nft.Rule
	refs    []RuleRef
	counter string
	sets    []*setRef // in the order the pure compiler creates them
}

func dirIndex(d Direction) int {
	if d == Egress {
		return 1
	}
	return 0
}

func (e *polEntry) dir(d Direction) *polDir {
	i := dirIndex(d)
	if e.dirs[i] == nil {
		pd := &polDir{counter: allowedCounter(e.key, d)}
		rec := &setRecorder{pd: pd}
		pd.rules, pd.refs = buildRules(rec, e.np, e.key, d, pd.counter)
		e.dirs[i] = pd
	}
	return e.dirs[i]
}

// Kinds of sets.
const (
	setPeer = iota
	setPort
	setNamedIn
	setNamedEg
)

// setRef is a set a rule looks up: its name and what it is made of.
type setRef struct {
	name   string
	recipe string // exact inputs of its elements, the cache key
	kind   int
	ns     string
	podSel *metav1.LabelSelector
	dir    Direction
	peers  []networkingv1.NetworkPolicyPeer
	ports  []networkingv1.NetworkPolicyPort
}

// setRecorder names sets as the pure compiler does and records their
// recipes.
type setRecorder struct{ pd *polDir }

func (r *setRecorder) peerSet(ns string, peers []networkingv1.NetworkPolicyPeer) string {
	scope := ""
	if peerScoped(peers) {
		scope = ns
	}
	var e encoder
	e.b = append(e.b, 'P')
	e.str(scope, "")
	e.peers(peers)
	ref := &setRef{name: peerSetName(ns, peers), recipe: string(e.b), kind: setPeer, ns: ns, peers: peers}
	r.pd.sets = append(r.pd.sets, ref)
	return ref.name
}

func (r *setRecorder) portSet(ports []networkingv1.NetworkPolicyPort) string {
	var e encoder
	e.b = append(e.b, 'T')
	e.ports(ports)
	ref := &setRef{name: portSetName(ports), recipe: string(e.b), kind: setPort, ports: ports}
	r.pd.sets = append(r.pd.sets, ref)
	return ref.name
}

func (r *setRecorder) namedPortSet(np *networkingv1.NetworkPolicy, dir Direction, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) string {
	var e encoder
	ref := &setRef{name: namedPortSetName(np, dir, peers, ports), ns: np.Namespace, podSel: &np.Spec.PodSelector, dir: dir, peers: peers, ports: ports}
	if dir == Ingress {
		ref.kind = setNamedIn
		e.b = append(e.b, 'I')
		e.str(np.Namespace, "")
		e.selector(&np.Spec.PodSelector)
	} else {
		ref.kind = setNamedEg
		e.b = append(e.b, 'E')
		e.str(np.Namespace, "")
		e.peers(peers)
	}
	e.ports(ports)
	ref.recipe = string(e.b)
	r.pd.sets = append(r.pd.sets, ref)
	return ref.name
}

// nsList is a namespace's policies, sorted by key.
type nsList struct {
	entries []*polEntry
	pass    uint64
}

// nsAssign is the classes of a namespace's local pods.
type nsAssign struct {
	entries []*polEntry
	classes []*nsClass
	egElems []nft.Element
	inElems []nft.Element
}

type nsClass struct {
	name     string
	dir      Direction
	policies []string
	entries  []*polEntry
	pods     []string
}

// classEntry is a class chain.
type classEntry struct {
	dir     Direction
	entries []*polEntry
	chain   nft.Chain
	refs    []RuleRef
	dropped string
	used    uint64
}

// setEntry is a set's elements for the current world and node.
type setEntry struct {
	ref  *setRef
	set  *nft.Set
	used uint64
}

// Compile compiles s for node as Compile(s, node, opts) does.
func (c *Compiler) Compile(s *Snapshot, node string) *Compiled {
	out, ok := c.compile(s, node)
	if !ok {
		// Input the caches cannot represent exactly (duplicate policy
		// keys, separators in names that make the pure compiler's cache
		// keys ambiguous, name collisions): compile it from scratch and
		// forget the caches, which may not match it.
		c.reset()
		return Compile(s, node, c.opts)
	}
	return out
}

func (c *Compiler) compile(s *Snapshot, node string) (*Compiled, bool) {
	st := c.st
	st.pass++
	pass := st.pass

	// Policies: resolve each to its entry, grouped by namespace.
	byNS := map[string][]*polEntry{}
	n := 0
	for _, np := range s.Policies {
		if np == nil {
			continue
		}
		var e *polEntry
		if pe := st.byPtr[np]; pe != nil {
			pe.seen = pass
			e = pe.e
		} else {
			enc, safe := encodePolicy(np)
			if !safe {
				return nil, false
			}
			if e = st.byEnc[enc]; e == nil {
				in, eg := PolicyTypes(np)
				e = &polEntry{np: np, key: PolicyKey(np), ns: np.Namespace, in: in, eg: eg}
				st.byEnc[enc] = e
			}
			st.byPtr[np] = &ptrEntry{e: e, seen: pass}
		}
		if e.seen == pass {
			return nil, false // twice the same policy
		}
		e.seen = pass
		byNS[e.ns] = append(byNS[e.ns], e)
		n++
	}
	if len(st.byPtr) > n {
		for p, pe := range st.byPtr {
			if pe.seen != pass {
				delete(st.byPtr, p)
			}
		}
	}
	if len(st.byEnc) > n {
		for k, e := range st.byEnc {
			if e.seen != pass {
				delete(st.byEnc, k)
			}
		}
	}
	namespaces := make([]string, 0, len(byNS))
	for ns, list := range byNS {
		namespaces = append(namespaces, ns)
		prev := st.nsLists[ns]
		same := prev != nil && prev.pass == pass-1 && len(prev.entries) == len(list)
		for _, e := range list {
			if e.listed != pass-1 {
				same = false
			}
			e.listed = pass
		}
		if same {
			prev.pass = pass
			continue
		}
		slices.SortFunc(list, func(a, b *polEntry) int { return strings.Compare(a.key, b.key) })
		for i := 1; i < len(list); i++ {
			if list[i].key == list[i-1].key {
				return nil, false // two policies with one name
			}
		}
		st.nsLists[ns] = &nsList{entries: list, pass: pass}
	}
	for ns := range st.nsLists {
		if _, ok := byNS[ns]; !ok {
			delete(st.nsLists, ns)
			delete(st.assign, ns)
		}
	}
	sort.Strings(namespaces)

	// The world.
	c.updateWorld(s, node)
	w := st.w

	// Classes of the local pods, per namespace.
	var egElems, inElems []nft.Element
	nEg, nIn := 0, 0
	assigns := make([]*nsAssign, len(namespaces))
	nClasses := 0
	for i, ns := range namespaces {
		list := st.nsLists[ns].entries
		a := st.assign[ns]
		if a == nil || !slices.Equal(a.entries, list) {
			var ok bool
			if a, ok = c.assignNS(w, ns, list); !ok {
				return nil, false
			}
			st.assign[ns] = a
		}
		assigns[i] = a
		nEg += len(a.egElems)
		nIn += len(a.inElems)
		nClasses += len(a.classes)
	}
	egElems = make([]nft.Element, 0, nEg)
	inElems = make([]nft.Element, 0, nIn)
	classByName := make(map[string]*nsClass, nClasses)
	classNames := make([]string, 0, nClasses)
	for _, a := range assigns {
		egElems = append(egElems, a.egElems...)
		inElems = append(inElems, a.inElems...)
		for _, cl := range a.classes {
			if _, dup := classByName[cl.name]; dup {
				return nil, false // hash collision: the pure compiler merges them
			}
			classByName[cl.name] = cl
			classNames = append(classNames, cl.name)
		}
	}
	sort.Strings(classNames)

	// Class chains, and the policies active in each direction.
	out := &Compiled{Node: node, Classes: make(map[string]Class, len(classNames))}
	m := nft.Model{Family: firewall.TableFamily, Table: firewall.TableName}
	m.Chains = make([]nft.Chain, 0, 1+len(classNames))
	m.Chains = append(m.Chains, c.forward)
	activeChanged := false
	nActive := 0
	for _, name := range classNames {
		cl := classByName[name]
		ce := st.classes[name]
		if ce == nil || ce.dir != cl.dir || !slices.Equal(ce.entries, cl.entries) {
			ce = c.buildClass(cl)
			st.classes[name] = ce
		}
		ce.used = pass
		m.Chains = append(m.Chains, ce.chain)
		out.Classes[name] = Class{Direction: cl.dir, Policies: cl.policies, Rules: ce.refs, Pods: cl.pods}
		d := dirIndex(cl.dir)
		for _, e := range cl.entries {
			if e.active[d] != pass {
				if e.active[d] != pass-1 {
					activeChanged = true
				}
				e.active[d] = pass
				nActive++
			}
		}
	}
	if len(st.classes) > len(classNames) {
		for name, ce := range st.classes {
			if ce.used != pass {
				delete(st.classes, name)
			}
		}
	}
	if nActive != st.nActive || st.counters == nil {
		activeChanged = true
	}
	st.nActive = nActive
	classesChanged := !slices.Equal(classNames, st.classNames)
	st.classNames = classNames

	// Counters.
	if activeChanged || classesChanged {
		counters := make(map[string]CounterRef, nActive+len(classNames))
		for _, name := range classNames {
			cl := classByName[name]
			counters[st.classes[name].dropped] = CounterRef{Direction: cl.dir, Class: name, Dropped: true}
			for _, e := range cl.entries {
				pd := e.dir(cl.dir)
				if _, ok := counters[pd.counter]; !ok {
					counters[pd.counter] = CounterRef{Direction: cl.dir, Policy: e.key}
				}
			}
		}
		var names []string
		for n := range counters {
			names = append(names, n)
		}
		sort.Strings(names)
		st.counters, st.counterNames = counters, slices.Clip(names)
	}
	out.Counters = st.counters
	m.Counters = st.counterNames

	// Sets: those the active policies' rules look up.
	if activeChanged || st.conflicts {
		c.activeSets(classNames, classByName)
	}
	m.Sets = make([]nft.Set, 0, 2+len(st.setList))
	m.Sets = append(m.Sets, verdictMap(MapEgress, egElems), verdictMap(MapIngress, inElems))
	for _, ref := range st.setList {
		se := st.sets[ref.recipe]
		if se == nil {
			se = &setEntry{ref: ref, set: c.setContent(w, ref)}
			st.sets[ref.recipe] = se
		}
		se.used = pass
		m.Sets = append(m.Sets, *se.set)
	}
	if len(st.sets) > len(st.setList) {
		for k, se := range st.sets {
			if se.used != pass {
				delete(st.sets, k)
			}
		}
	}
	out.Model = m
	return out, true
}

// activeSets computes st.setList: the sets the rules of the active
// policies look up, sorted by name. When two recipes give one name (the
// pure compiler's names conflate a few inputs), the first one the pure
// compiler meets wins, as there.
func (c *Compiler) activeSets(classNames []string, classByName map[string]*nsClass) {
	st := c.st
	pass := st.pass
	byName := map[string]*setRef{}
	var conflicted map[string]bool
	for _, name := range classNames {
		cl := classByName[name]
		d := dirIndex(cl.dir)
		for _, e := range cl.entries {
			if e.setsPass[d] == pass {
				continue
			}
			e.setsPass[d] = pass
			for _, ref := range e.dir(cl.dir).sets {
				prev, ok := byName[ref.name]
				if !ok {
					byName[ref.name] = ref
				} else if prev.recipe != ref.recipe {
					if conflicted == nil {
						conflicted = map[string]bool{}
					}
					conflicted[ref.name] = true
				}
			}
		}
	}
	st.conflicts = conflicted != nil
	if conflicted != nil {
		// The pure compiler creates sets in class order, policy order,
		// rule order, each policy direction once.
		done := map[*polDir]bool{}
		won := map[string]bool{}
		for _, name := range classNames {
			cl := classByName[name]
			for _, e := range cl.entries {
				pd := e.dir(cl.dir)
				if done[pd] {
					continue
				}
				done[pd] = true
				for _, ref := range pd.sets {
					if conflicted[ref.name] && !won[ref.name] {
						won[ref.name] = true
						byName[ref.name] = ref
					}
				}
			}
		}
	}
	list := make([]*setRef, 0, len(byName))
	for _, ref := range byName {
		list = append(list, ref)
	}
	slices.SortFunc(list, func(a, b *setRef) int { return strings.Compare(a.name, b.name) })
	st.setList = slices.Clip(list)
}

// buildClass assembles a class chain from its policies' cached rules.
func (c *Compiler) buildClass(cl *nsClass) *classEntry {
	ce := &classEntry{dir: cl.dir, entries: cl.entries, dropped: cl.name + "-dropped"}
	nr := 2
	for _, e := range cl.entries {
		nr += len(e.dir(cl.dir).rules)
	}
	rules := make([]nft.Rule, 0, nr)
	refs := make([]RuleRef, 0, nr)
	for _, e := range cl.entries {
		pd := e.dir(cl.dir)
		rules = append(rules, pd.rules...)
		refs = append(refs, pd.refs...)
	}
	if c.opts.LogDrops {
		rate := c.opts.LogRate
		if rate == 0 {
			rate = 5
		}
		rules = append(rules, nft.NewRule(logLimited(rate, logPrefix(cl.dir, cl.policies))))
		refs = append(refs, RuleRef{Direction: cl.dir, Rule: -1})
	}
	rules = append(rules, nft.NewRule(counterRef(ce.dropped), nft.Drop()))
	refs = append(refs, RuleRef{Direction: cl.dir, Rule: -1})
	ce.chain = nft.Chain{Name: cl.name, Rules: rules}
	ce.refs = refs
	return ce
}

// assignNS computes the classes of namespace ns's local pods.
func (c *Compiler) assignNS(w *compiler, ns string, list []*polEntry) (*nsAssign, bool) {
	a := &nsAssign{entries: list}
	pods := w.podsByNS[ns]
	if len(pods) == 0 {
		return a, true
	}
	base := pods[0]
	inL := make([][]int32, len(pods))
	egL := make([][]int32, len(pods))
	for j, e := range list {
		if !e.in && !e.eg {
			continue
		}
		for _, i := range w.podsOf(ns, &e.np.Spec.PodSelector) {
			if w.pods[i].Node != w.node {
				continue
			}
			p := i - base
			if e.in {
				inL[p] = append(inL[p], int32(j))
			}
			if e.eg {
				egL[p] = append(egL[p], int32(j))
			}
		}
	}
	groups := map[string]*nsClass{}
	names := map[string]bool{}
	var buf []byte
	class := func(dir Direction, idx []int32) (*nsClass, bool) {
		buf = buf[:0]
		if dir == Egress {
			buf = append(buf, 'e')
		} else {
			buf = append(buf, 'i')
		}
		for _, j := range idx {
			buf = binary.LittleEndian.AppendUint32(buf, uint32(j))
		}
		if cl, ok := groups[string(buf)]; ok {
			return cl, true
		}
		cl := &nsClass{dir: dir, policies: make([]string, len(idx)), entries: make([]*polEntry, len(idx))}
		for k, j := range idx {
			cl.policies[k] = list[j].key
			cl.entries[k] = list[j]
		}
		short := "in"
		if dir == Egress {
			short = "eg"
		}
		cl.name = "pol-" + short + "-" + hashOf(strings.Join(cl.policies, "\n"))
		if names[cl.name] {
			return nil, false
		}
		names[cl.name] = true
		groups[string(buf)] = cl
		a.classes = append(a.classes, cl)
		return cl, true
	}
	for p, i := range pods {
		if i != base+p {
			return nil, false // not contiguous: cannot happen
		}
		pod := w.pods[i]
		if len(egL[p]) > 0 {
			cl, ok := class(Egress, egL[p])
			if !ok {
				return nil, false
			}
			cl.pods = append(cl.pods, pod.Key())
			a.egElems = append(a.egElems, vmapElement(pod.IP, cl.name))
		}
		if len(inL[p]) > 0 {
			cl, ok := class(Ingress, inL[p])
			if !ok {
				return nil, false
			}
			cl.pods = append(cl.pods, pod.Key())
			a.inElems = append(a.inElems, vmapElement(pod.IP, cl.name))
		}
	}
	return a, true
}

// setContent computes a set's elements in world w.
func (c *Compiler) setContent(w *compiler, ref *setRef) *nft.Set {
	switch ref.kind {
	case setPeer:
		return w.peerSetContent(ref.name, ref.ns, ref.peers)
	case setPort:
		return portSetContent(ref.name, ref.ports)
	}
	return w.namedPortSetContent(ref.name, ref.ns, ref.podSel, ref.dir, ref.peers, ref.ports)
}

// updateWorld makes st.w the world of s and node, keeping what the change
// cannot affect: class assignments of namespaces whose pods are unchanged,
// and sets that read no changed namespace.
func (c *Compiler) updateWorld(s *Snapshot, node string) {
	st := c.st
	w0 := st.w
	if w0 != nil && podsEqual(s.Pods, st.rawPods) && nsEqual(s.Namespaces, st.rawNS) {
		if node != st.node {
			c.nodeChanged(node)
		}
		return
	}
	st.rawPods = clonePods(s.Pods)
	st.rawNS = make(map[string]map[string]string, len(s.Namespaces))
	for ns, l := range s.Namespaces {
		st.rawNS[ns] = maps.Clone(l)
	}
	w1 := newCompiler(&Snapshot{Pods: st.rawPods, Namespaces: st.rawNS}, node, c.opts)
	st.w = w1
	if w0 == nil {
		st.node = node
		clear(st.assign)
		clear(st.sets)
		return
	}
	w1.selCache = w0.selCache
	// Namespaces whose pods changed.
	dirty := map[string]bool{}
	for ns, a := range w0.podsByNS {
		b := w1.podsByNS[ns]
		if len(a) != len(b) {
			dirty[ns] = true
			continue
		}
		for k := range a {
			if !podEqual(w0.pods[a[k]], w1.pods[b[k]]) {
				dirty[ns] = true
				break
			}
		}
	}
	for ns := range w1.podsByNS {
		if _, ok := w0.podsByNS[ns]; !ok {
			dirty[ns] = true
		}
	}
	for ns := range dirty {
		delete(st.assign, ns)
	}
	nsSelChanged := map[string]bool{}
	readsDirty := func(ns string, peers []networkingv1.NetworkPolicyPeer) bool {
		for _, p := range peers {
			if p.NamespaceSelector == nil {
				if p.PodSelector != nil && dirty[ns] {
					return true
				}
				continue
			}
			key := selectorKey(p.NamespaceSelector)
			ch, ok := nsSelChanged[key]
			if !ok {
				ch = !slices.Equal(w0.namespacesOf(p.NamespaceSelector), w1.namespacesOf(p.NamespaceSelector))
				nsSelChanged[key] = ch
			}
			if ch {
				return true
			}
			for _, n := range w1.namespacesOf(p.NamespaceSelector) {
				if dirty[n] {
					return true
				}
			}
		}
		return false
	}
	for k, se := range st.sets {
		ref := se.ref
		var drop bool
		switch ref.kind {
		case setPeer:
			drop = readsDirty(ref.ns, ref.peers)
		case setNamedIn:
			drop = dirty[ref.ns]
		case setNamedEg:
			allPods := len(ref.peers) == 0
			for _, p := range ref.peers {
				if p.IPBlock != nil {
					allPods = true
				}
			}
			if allPods {
				drop = len(dirty) > 0
			} else {
				drop = readsDirty(ref.ns, ref.peers)
			}
		}
		if drop {
			delete(st.sets, k)
		}
	}
	if node != st.node {
		c.nodeChanged(node)
	}
}

// nodeChanged drops what depends on which pods are local.
func (c *Compiler) nodeChanged(node string) {
	st := c.st
	st.node = node
	st.w.node = node
	clear(st.assign)
	for k, se := range st.sets {
		if se.ref.kind == setNamedIn {
			delete(st.sets, k)
		}
	}
}

func podEqual(a, b Pod) bool {
	return a.Namespace == b.Namespace && a.Name == b.Name && a.IP == b.IP && a.Node == b.Node &&
		maps.Equal(a.Labels, b.Labels) && slices.Equal(a.Ports, b.Ports)
}

func podsEqual(a, b []Pod) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !podEqual(a[i], b[i]) {
			return false
		}
	}
	return true
}

func nsEqual(a, b map[string]map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for ns, l := range a {
		m, ok := b[ns]
		if !ok || !maps.Equal(l, m) {
			return false
		}
	}
	return true
}

// clonePods deep-copies pods: the caller may change its maps after
// Compile. Pods that share a labels map or a ports list (a source keeps
// one per content: the pods of a ReplicaSet) share its copy, so the copy
// is as small as the original.
func clonePods(in []Pod) []Pod {
	out := make([]Pod, len(in))
	labels := map[uintptr]map[string]string{}
	ports := map[*NamedPort][]NamedPort{}
	for i, p := range in {
		if p.Labels != nil {
			at := reflect.ValueOf(p.Labels).Pointer()
			c, ok := labels[at]
			if !ok {
				c = maps.Clone(p.Labels)
				labels[at] = c
			}
			p.Labels = c
		}
		if len(p.Ports) > 0 {
			at := &p.Ports[0]
			c, ok := ports[at]
			if !ok || len(c) != len(p.Ports) {
				c = slices.Clone(p.Ports)
				ports[at] = c
			}
			p.Ports = c
		}
		out[i] = p
	}
	return out
}

// encoder writes the canonical encoding of a policy: every field the
// compiler reads, strings length-prefixed, nil and empty told apart. It
// notes strings with the separators of the pure compiler's cache keys
// (selectorKey, peersKey, portsKey, class names), with which two different
// inputs could share a key there.
type encoder struct {
	b      []byte
	unsafe bool
}

const (
	badKey      = "/\n\x00"
	badSelector = "=,| \x00"
	badCIDR     = ",;\x00"
	badPort     = ":;\x00"
)

func (e *encoder) str(s, bad string) {
	e.b = binary.AppendUvarint(e.b, uint64(len(s)))
	e.b = append(e.b, s...)
	if bad != "" && strings.ContainsAny(s, bad) {
		e.unsafe = true
	}
}

func (e *encoder) count(n int, isNil bool) {
	if isNil {
		e.b = append(e.b, 0)
		return
	}
	e.b = binary.AppendUvarint(e.b, uint64(n)+1)
}

func (e *encoder) selector(ls *metav1.LabelSelector) {
	if ls == nil {
		e.b = append(e.b, 0)
		return
	}
	e.b = append(e.b, 1)
	keys := make([]string, 0, len(ls.MatchLabels))
	for k := range ls.MatchLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	e.count(len(keys), false)
	for _, k := range keys {
		e.str(k, badSelector)
		e.str(ls.MatchLabels[k], badSelector)
	}
	e.count(len(ls.MatchExpressions), false)
	for _, r := range ls.MatchExpressions {
		e.str(r.Key, badSelector)
		e.str(string(r.Operator), badSelector)
		e.count(len(r.Values), r.Values == nil)
		for _, v := range r.Values {
			e.str(v, badSelector)
		}
	}
}

func (e *encoder) peers(peers []networkingv1.NetworkPolicyPeer) {
	e.count(len(peers), peers == nil)
	for _, p := range peers {
		e.selector(p.PodSelector)
		e.selector(p.NamespaceSelector)
		if p.IPBlock == nil {
			e.b = append(e.b, 0)
			continue
		}
		e.b = append(e.b, 1)
		e.str(p.IPBlock.CIDR, badCIDR)
		e.count(len(p.IPBlock.Except), p.IPBlock.Except == nil)
		for _, x := range p.IPBlock.Except {
			e.str(x, badCIDR)
		}
	}
}

func (e *encoder) ports(ports []networkingv1.NetworkPolicyPort) {
	e.count(len(ports), ports == nil)
	for _, p := range ports {
		if p.Protocol == nil {
			e.b = append(e.b, 0)
		} else {
			e.b = append(e.b, 1)
			e.str(string(*p.Protocol), badPort)
		}
		if p.Port == nil {
			e.b = append(e.b, 0)
		} else {
			e.b = append(e.b, 1, byte(p.Port.Type))
			e.b = binary.AppendVarint(e.b, int64(p.Port.IntVal))
			e.str(p.Port.StrVal, badPort)
		}
		if p.EndPort == nil {
			e.b = append(e.b, 0)
		} else {
			e.b = append(e.b, 1)
			e.b = binary.AppendVarint(e.b, int64(*p.EndPort))
		}
	}
}

// encodePolicy returns the canonical encoding of np, and false when it has
// strings the pure compiler's keys may confuse.
func encodePolicy(np *networkingv1.NetworkPolicy) (string, bool) {
	e := encoder{b: make([]byte, 0, 256)}
	e.str(np.Namespace, badKey)
	e.str(np.Name, badKey)
	e.selector(&np.Spec.PodSelector)
	e.count(len(np.Spec.PolicyTypes), np.Spec.PolicyTypes == nil)
	for _, t := range np.Spec.PolicyTypes {
		e.str(string(t), "")
	}
	e.count(len(np.Spec.Ingress), np.Spec.Ingress == nil)
	for _, r := range np.Spec.Ingress {
		e.ports(r.Ports)
		e.peers(r.From)
	}
	e.count(len(np.Spec.Egress), np.Spec.Egress == nil)
	for _, r := range np.Spec.Egress {
		e.ports(r.Ports)
		e.peers(r.To)
	}
	return string(e.b), !e.unsafe
}
