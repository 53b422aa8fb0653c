package policy

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// sameCompiled reports how got differs from want (the pure Compile's): the
// model's text, then every field (elements, expressions, classes,
// counters).
func sameCompiled(got, want *Compiled) string {
	if g, w := got.Model.String(), want.Model.String(); g != w {
		return "model text (-want +got):\n" + cmp.Diff(w, g)
	}
	if got.Node != want.Node {
		return fmt.Sprintf("node %q, want %q", got.Node, want.Node)
	}
	if !reflect.DeepEqual(got.Classes, want.Classes) {
		return "classes (-want +got):\n" + cmp.Diff(want.Classes, got.Classes)
	}
	if !reflect.DeepEqual(got.Counters, want.Counters) {
		return "counters (-want +got):\n" + cmp.Diff(want.Counters, got.Counters)
	}
	if !reflect.DeepEqual(got.Model, want.Model) {
		for i := range want.Model.Sets {
			if i < len(got.Model.Sets) && !reflect.DeepEqual(got.Model.Sets[i], want.Model.Sets[i]) {
				return fmt.Sprintf("set %d %s differs: got %+v\nwant %+v", i, want.Model.Sets[i].Name, got.Model.Sets[i], want.Model.Sets[i])
			}
		}
		for i := range want.Model.Chains {
			if i < len(got.Model.Chains) && !reflect.DeepEqual(got.Model.Chains[i], want.Model.Chains[i]) {
				return fmt.Sprintf("chain %d %s differs", i, want.Model.Chains[i].Name)
			}
		}
		return "models differ (same text)"
	}
	return ""
}

// mutator changes a snapshot the way a cluster changes, copy on write: the
// previous snapshot and its policies are never modified.
type mutator struct {
	r    *rand.Rand
	g    *gen
	s    *Snapshot
	next int
}

func (mu *mutator) clone() {
	s := *mu.s
	s.Pods = slices.Clone(s.Pods)
	s.Policies = slices.Clone(s.Policies)
	s.Namespaces = maps.Clone(s.Namespaces)
	mu.s = &s
	mu.g.s = mu.s
}

func (mu *mutator) step() string {
	r := mu.r
	mu.clone()
	s := mu.s
	nss := genNamespaces[:mu.g.o.Namespaces]
	pol := -1 // a non-nil policy
	for _, i := range r.Perm(len(s.Policies)) {
		if s.Policies[i] != nil {
			pol = i
			break
		}
	}
	switch k := r.IntN(16); {
	case k == 0 || k == 1: // add a policy
		mu.next++
		s.Policies = append(s.Policies, mu.g.policy(fmt.Sprintf("q%d", mu.next)))
		return "add policy"
	case k == 2 && len(s.Policies) > 0: // remove a policy
		i := r.IntN(len(s.Policies))
		s.Policies = slices.Delete(s.Policies, i, i+1)
		return "remove policy"
	case k == 3 && pol >= 0: // replace a policy's spec
		i := pol
		np := mu.g.policy("tmp")
		np.Namespace, np.Name = s.Policies[i].Namespace, s.Policies[i].Name
		s.Policies[i] = np
		return "replace policy spec"
	case k == 4 && pol >= 0: // edit one rule of a policy
		i := pol
		np := s.Policies[i].DeepCopy()
		if len(np.Spec.Ingress) > 0 && chance(r, 0.5) {
			np.Spec.Ingress[0].Ports = mu.g.ports()
		} else {
			np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: mu.g.peers(), Ports: mu.g.ports()})
		}
		s.Policies[i] = np
		return "edit policy rule"
	case k == 5 && pol >= 0: // same content, another pointer
		i := pol
		s.Policies[i] = s.Policies[i].DeepCopy()
		return "copy policy"
	case k == 6: // add a pod (sometimes with an address in use)
		ns := pick(r, nss)
		p := Pod{Namespace: ns, Name: fmt.Sprintf("n%d", mu.next), Node: fmt.Sprintf("node%d", 1+r.IntN(mu.g.o.Nodes)),
			Labels: map[string]string{"pod": pick(r, genPods)}}
		mu.next++
		if len(s.Pods) > 0 && chance(r, 0.2) {
			p.IP = pick(r, s.Pods).IP
		} else {
			p.IP = netip.AddrFrom4([4]byte{10, 244, byte(100 + mu.next/200), byte(mu.next % 200)})
			if len(s.Pods) > 0 && s.Pods[0].IP.Is6() {
				p.IP = netip.MustParseAddr(fmt.Sprintf("fd00:10:244:99::%x", mu.next))
			}
		}
		if chance(r, 0.5) {
			p.Labels["app"] = pick(r, podLabelValues["app"])
		}
		if chance(r, 0.5) {
			p.Ports = []NamedPort{{Name: "http", Port: pick(r, []uint16{80, 8080}), Protocol: TCP}}
		}
		s.Pods = slices.Insert(s.Pods, r.IntN(len(s.Pods)+1), p)
		return "add pod"
	case k == 7 && len(s.Pods) > 0: // remove a pod
		i := r.IntN(len(s.Pods))
		s.Pods = slices.Delete(s.Pods, i, i+1)
		return "remove pod"
	case k == 8 && len(s.Pods) > 0: // relabel a pod (a new map)
		i := r.IntN(len(s.Pods))
		l := maps.Clone(s.Pods[i].Labels)
		if l == nil {
			l = map[string]string{}
		}
		key := pick(r, []string{"app", "tier", "pod"})
		if chance(r, 0.3) {
			delete(l, key)
		} else if key == "pod" {
			l[key] = pick(r, genPods)
		} else {
			l[key] = pick(r, podLabelValues[key])
		}
		s.Pods[i].Labels = l
		return "relabel pod"
	case k == 9 && len(s.Pods) > 0: // relabel a pod in place (the caller's map)
		i := r.IntN(len(s.Pods))
		if s.Pods[i].Labels == nil {
			s.Pods[i].Labels = map[string]string{}
		}
		s.Pods[i].Labels["tier"] = pick(r, podLabelValues["tier"])
		return "relabel pod in place"
	case k == 10 && len(s.Pods) > 0: // move a pod, change its ports
		i := r.IntN(len(s.Pods))
		s.Pods[i].Node = fmt.Sprintf("node%d", 1+r.IntN(mu.g.o.Nodes))
		if chance(r, 0.5) {
			s.Pods[i].Ports = []NamedPort{{Name: "http", Port: pick(r, []uint16{80, 8080, 81}), Protocol: TCP}}
		}
		return "move pod"
	case k == 11: // namespace labels
		ns := pick(r, nss)
		switch r.IntN(3) {
		case 0:
			delete(s.Namespaces, ns)
		case 1:
			l := maps.Clone(s.Namespaces[ns])
			if l == nil {
				l = map[string]string{"ns": ns}
			}
			l["env"] = pick(r, []string{"prod", "dev"})
			s.Namespaces[ns] = l
		case 2:
			s.Namespaces[ns] = map[string]string{"ns": ns}
		}
		return "namespace labels"
	case k == 12: // another order
		r.Shuffle(len(s.Pods), func(i, j int) { s.Pods[i], s.Pods[j] = s.Pods[j], s.Pods[i] })
		r.Shuffle(len(s.Policies), func(i, j int) { s.Policies[i], s.Policies[j] = s.Policies[j], s.Policies[i] })
		return "shuffle"
	case k == 13 && pol >= 0 && chance(r, 0.3): // two policies with one name
		np := mu.g.policy("tmp")
		np.Namespace, np.Name = s.Policies[pol].Namespace, s.Policies[pol].Name
		s.Policies = append(s.Policies, np)
		return "duplicate policy"
	case k == 14 && chance(r, 0.3): // a separator in a label value
		mu.next++
		np := mu.g.policy(fmt.Sprintf("q%d", mu.next))
		np.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"app": "web,x"}}
		s.Policies = append(s.Policies, np)
		return "unsafe policy"
	case k == 15 && chance(r, 0.3): // a nil policy
		s.Policies = append(s.Policies, nil)
		return "nil policy"
	}
	return "nothing"
}

// TestCompilerEquivalence drives a Compiler through random changes and
// checks after each that it returns what Compile returns.
func TestCompilerEquivalence(t *testing.T) {
	seeds := 300
	if testing.Short() {
		seeds = 50
	}
	for seed := range uint64(seeds) {
		r := rand.New(rand.NewPCG(seed, 7))
		o := GenOptions{
			Namespaces: 1 + r.IntN(6), PodsPerNamespace: 1 + r.IntN(8), Nodes: 1 + r.IntN(3),
			Policies: 2 + r.IntN(12), MaxRules: 1 + r.IntN(3), IPv6: chance(r, 0.05),
		}
		s := RandomSnapshot(r, o)
		opts := Options{LogDrops: chance(r, 0.5), LogRate: uint64(r.IntN(3))}
		mu := &mutator{r: r, s: s, g: &gen{r: r, o: o.withDefaults(), pl: plan{v6: o.IPv6}, s: s}}
		c := NewCompiler(opts)
		node := "node1"
		var history []string
		for step := range 40 {
			what := "initial"
			if step > 0 {
				what = mu.step()
				if chance(r, 0.1) {
					node = fmt.Sprintf("node%d", 1+r.IntN(o.Nodes+1))
					what += ", node " + node
				}
			}
			history = append(history, what)
			got := c.Compile(mu.s, node)
			want := Compile(mu.s, node, opts)
			if diff := sameCompiled(got, want); diff != "" {
				t.Fatalf("seed %d step %d (%v): Compiler differs from Compile: %s", seed, step, history, diff)
			}
			if chance(r, 0.05) { // the same snapshot again
				if diff := sameCompiled(c.Compile(mu.s, node), want); diff != "" {
					t.Fatalf("seed %d step %d again: %s", seed, step, diff)
				}
			}
		}
	}
}

// TestCompilerBench runs the benchmark's changes through a Compiler: one
// policy edited, a pod relabelled, a namespace relabelled, another node.
func TestCompilerBench(t *testing.T) {
	s := benchSnapshot(300, 3)
	opts := Options{LogDrops: true}
	c := NewCompiler(opts)
	check := func(what string, s *Snapshot, node string) {
		t.Helper()
		if diff := sameCompiled(c.Compile(s, node), Compile(s, node, opts)); diff != "" {
			t.Fatalf("%s: %s", what, diff)
		}
	}
	check("cold", s, "node-00")
	check("warm", s, "node-00")
	check("one change", changeOne(s, true), "node-00")
	check("back", s, "node-00")
	s2 := *s
	s2.Pods = slices.Clone(s.Pods)
	s2.Pods[7].Labels = map[string]string{"app": "app-03", "tier": "db"}
	check("pod relabelled", &s2, "node-00")
	s3 := s2
	s3.Namespaces = maps.Clone(s.Namespaces)
	s3.Namespaces["ns-03"] = map[string]string{"team": "t1", "env": "prod"}
	check("namespace relabelled", &s3, "node-00")
	check("other node", &s3, "node-01")
	check("back", s, "node-00")
}

// TestCompilerSetNameConflict: a nil namespaceSelector (the policy's
// namespace) and an empty one (every namespace) with the same pod selector
// are different peers. They once got one peer-set name, and the rule of
// the policy compiled second matched the first one's pods. The Compiler
// agrees with Compile in every order, and both agree with the evaluator.
func TestCompilerSetNameConflict(t *testing.T) {
	local := policy(t, `
metadata: {namespace: "y", name: a-local}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}, {podSelector: {matchLabels: {app: db}}}]`)
	every := policy(t, `
metadata: {namespace: "y", name: b-every}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}, namespaceSelector: {}}, {podSelector: {matchLabels: {app: db}}}]`)
	s := fixture()
	opts := Options{}
	c := NewCompiler(opts)
	for i, pols := range [][]*networkingv1.NetworkPolicy{
		{every}, {local, every}, {every.DeepCopy(), local}, {local}, {every, local},
	} {
		s2 := *s
		s2.Policies = pols
		want := Compile(&s2, "n1", opts)
		if diff := sameCompiled(c.Compile(&s2, "n1"), want); diff != "" {
			t.Fatalf("step %d: %s", i, diff)
		}
		ev, ct := NewEvaluator(&s2), NewClusterTracer(&s2, opts)
		for _, src := range s2.Pods {
			for _, dst := range s2.Pods {
				pkt := Packet{Src: src.IP, Dst: dst.IP, Protocol: TCP, Port: 80}
				if want, got := ev.Evaluate(pkt), ct.Trace(pkt); want.Allowed != got.Allowed {
					t.Errorf("step %d: %s -> %s: evaluator allowed=%v (%s), kernel model allowed=%v (%s)",
						i, src.Key(), dst.Key(), want.Allowed, want.Reason, got.Allowed, got.Reason)
				}
			}
		}
	}
}

// clonePods copies what the caller may change, and pods that share a
// labels map or a ports list share its copy.
func TestClonePodsShares(t *testing.T) {
	web := map[string]string{"app": "web"}
	ports := []NamedPort{{Name: "http", Port: 80, Protocol: TCP}}
	in := []Pod{
		{Namespace: "x", Name: "a", Labels: web, Ports: ports},
		{Namespace: "x", Name: "b", Labels: web, Ports: ports},
		{Namespace: "x", Name: "c", Labels: map[string]string{"app": "web"}, Ports: ports[:0]},
		{Namespace: "x", Name: "d"},
	}
	out := clonePods(in)
	ptr := func(m map[string]string) uintptr { return reflect.ValueOf(m).Pointer() }
	if ptr(out[0].Labels) != ptr(out[1].Labels) || &out[0].Ports[0] != &out[1].Ports[0] {
		t.Error("pods sharing labels and ports got two copies")
	}
	if ptr(out[0].Labels) == ptr(web) || &out[0].Ports[0] == &ports[0] || ptr(out[2].Labels) == ptr(out[0].Labels) {
		t.Error("a copy is the caller's map or another pod's")
	}
	web["app"] = "db"
	ports[0].Port = 81
	if out[0].Labels["app"] != "web" || out[1].Ports[0].Port != 80 {
		t.Errorf("the copies changed with the caller's: %v %v", out[0].Labels, out[1].Ports)
	}
	if out[2].Ports != nil && len(out[2].Ports) != 0 || out[3].Labels != nil || out[3].Ports != nil {
		t.Errorf("empty fields: %+v %+v", out[2], out[3])
	}
}
