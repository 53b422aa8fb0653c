package policy

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"

	"github.com/netloom/netloom/nft"
	"github.com/netloom/netloom/nft/nfttest"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// benchSnapshot is a cluster shaped like a real one: 50 namespaces (team
// and env labels), 5,000 pods spread over `nodes` nodes, 20 apps per
// namespace with named container ports, and `policies` policies spread over
// the namespaces: a default deny per namespace, and per app ingress from the
// same namespace, from other teams' namespaces by named port, from a
// monitoring CIDR with an except, port ranges, and egress to databases and
// DNS.
func benchSnapshot(policies, nodes int) *Snapshot {
	const namespaces, podsPerNS, apps = 50, 100, 20
	s := &Snapshot{Namespaces: map[string]map[string]string{}}
	for n := range namespaces {
		ns := fmt.Sprintf("ns-%02d", n)
		s.Namespaces[ns] = map[string]string{"team": fmt.Sprintf("t%d", n%10), "env": []string{"prod", "dev"}[n%2]}
		for i := range podsPerNS {
			k := n*podsPerNS + i
			s.Pods = append(s.Pods, Pod{
				Namespace: ns, Name: fmt.Sprintf("pod-%03d", i),
				IP:   netip.AddrFrom4([4]byte{10, byte(128 + k/65536), byte(k / 256 % 256), byte(k % 256)}),
				Node: fmt.Sprintf("node-%02d", k%nodes),
				Labels: map[string]string{
					"app": fmt.Sprintf("app-%02d", i%apps), "tier": []string{"front", "back", "db"}[i%3],
				},
				Ports: []NamedPort{
					{Name: "http", Port: uint16(8080 + i%3), Protocol: TCP},
					{Name: "metrics", Port: 9090, Protocol: TCP},
				},
			})
		}
	}
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	port := func(p int) *intstr.IntOrString { v := intstr.FromInt32(int32(p)); return &v }
	named := func(n string) *intstr.IntOrString { v := intstr.FromString(n); return &v }
	for i := range policies {
		n := i % namespaces
		ns := fmt.Sprintf("ns-%02d", n)
		app := fmt.Sprintf("app-%02d", (i/namespaces)%apps)
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("pol-%05d", i)}}
		np.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
		switch (i / namespaces) % 8 {
		case 0: // default deny (ingress and egress) of the namespace
			np.Spec.PodSelector = metav1.LabelSelector{}
			np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
		case 1: // from the same namespace's front tier
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "front"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: port(8080)}},
			}}
		case 2: // from another team's namespaces, by named port
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{
					MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", (n+1)%10)}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: named("http")}},
			}}
		case 3: // monitoring from a CIDR with an except
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
					CIDR: "192.168.0.0/16", Except: []string{fmt.Sprintf("192.168.%d.0/24", i%256)}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: named("metrics")}},
			}}
		case 4: // a port range from pods of any namespace with env=prod
			end := int32(8100)
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}},
					PodSelector:       &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"front", "back"}}}},
				}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: port(8000), EndPort: &end}},
			}}
		case 5: // egress to the namespace's databases and to DNS
			np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
			np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{
				{
					To:    []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "db"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: port(5432)}},
				},
				{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: port(53)}, {Protocol: &tcp, Port: port(53)}}},
			}
		case 6: // egress to other apps of the team's namespaces by named port
			np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
			np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
				To: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", n%10)}},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%02d", (i+1)%apps)}},
				}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: named("http")}},
			}}
		case 7: // ingress and egress, several rules
			np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{
				{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}}}},
				{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: port(443)}}},
			}
			np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{
				{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"10.0.0.0/8"}}}}},
			}
		}
		s.Policies = append(s.Policies, np)
	}
	return s
}

func BenchmarkCompile(b *testing.B) {
	for _, policies := range []int{1000, 10000} {
		for _, nodes := range []int{50, 1} {
			s := benchSnapshot(policies, nodes)
			b.Run(fmt.Sprintf("policies=%d/pods=5000/nodes=%d", policies, nodes), func(b *testing.B) {
				var c *Compiled
				for b.Loop() {
					c = Compile(s, "node-00", Options{LogDrops: true})
				}
				reportModel(b, c.Model)
			})
		}
	}
	// The incremental Compiler, warm: one policy changed between passes
	// (and back), as in one-change-compile+apply.
	for _, policies := range []int{1000, 10000} {
		for _, nodes := range []int{50, 1} {
			s := benchSnapshot(policies, nodes)
			snaps := [2]*Snapshot{s, changeOne(s, true)}
			b.Run(fmt.Sprintf("incremental-one-change/policies=%d/pods=5000/nodes=%d", policies, nodes), func(b *testing.B) {
				before := heapInUse()
				c := NewCompiler(Options{LogDrops: true})
				c.Compile(s, "node-00")
				held := heapInUse() - before
				i := 0
				for b.Loop() {
					i++
					c.Compile(snaps[i%2], "node-00")
				}
				b.ReportMetric(float64(held)/(1<<20), "held-MB")
				runtime.KeepAlive(c)
			})
		}
	}
}

// heapInUse is the live heap after a collection.
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

func reportModel(b *testing.B, m nft.Model) {
	rules, elems := 0, 0
	for _, c := range m.Chains {
		rules += len(c.Rules)
	}
	for _, s := range m.Sets {
		elems += len(s.Elements)
	}
	b.ReportMetric(float64(len(m.Chains)), "chains")
	b.ReportMetric(float64(rules), "rules")
	b.ReportMetric(float64(len(m.Sets)), "sets")
	b.ReportMetric(float64(elems), "elements")
}

// changeOne edits one policy that selects local pods (adds a port to its
// first rule, or a rule), as an operator's edit would.
func changeOne(s *Snapshot, on bool) *Snapshot {
	out := *s
	out.Policies = append([]*networkingv1.NetworkPolicy(nil), s.Policies...)
	np := out.Policies[1].DeepCopy() // ns-01, a default deny: selects every local pod of ns-01
	if on {
		np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{
			Ports: []networkingv1.NetworkPolicyPort{{Port: intOrStr(7777)}},
		})
	}
	out.Policies[1] = np
	return &out
}

// Root benchmarks in a namespace of their own: the full replacement of a
// compiled table, and one policy changed afterwards (compile + incremental
// apply, and the apply alone).
func BenchmarkApply(b *testing.B) {
	nfttest.NeedRoot(b)
	for _, policies := range []int{1000, 10000} {
		for _, nodes := range []int{50, 1} {
			s := benchSnapshot(policies, nodes)
			name := fmt.Sprintf("policies=%d/pods=5000/nodes=%d", policies, nodes)
			m := nft.Merge(baseRuleset(), Compile(s, "node-00", Options{LogDrops: true}).Model)
			b.Run("full/"+name, func(b *testing.B) {
				a := nsApplier(b, nfttest.NewNS(b))
				for b.Loop() {
					a.Invalidate()
					if err := a.Apply(m); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(a.LastApply().Messages), "msgs")
				reportModel(b, m)
			})
			models := [2]nft.Model{m, nft.Merge(baseRuleset(), Compile(changeOne(s, true), "node-00", Options{LogDrops: true}).Model)}
			b.Run("one-change-apply/"+name, func(b *testing.B) {
				a := nsApplier(b, nfttest.NewNS(b))
				if err := a.Apply(m); err != nil {
					b.Fatal(err)
				}
				i := 0
				for b.Loop() {
					i++
					if err := a.Apply(models[i%2]); err != nil {
						b.Fatal(err)
					}
					if st := a.LastApply(); !st.Incremental {
						b.Fatalf("not incremental: %+v", st)
					}
				}
				b.ReportMetric(float64(a.LastApply().Messages), "msgs")
			})
			b.Run("one-change-compile+apply/"+name, func(b *testing.B) {
				a := nsApplier(b, nfttest.NewNS(b))
				if err := a.Apply(m); err != nil {
					b.Fatal(err)
				}
				snaps := [2]*Snapshot{s, changeOne(s, true)}
				i := 0
				for b.Loop() {
					i++
					mm := nft.Merge(baseRuleset(), Compile(snaps[i%2], "node-00", Options{LogDrops: true}).Model)
					if err := a.Apply(mm); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(a.LastApply().Messages), "msgs")
			})
			b.Run("one-change-incremental-compile+apply/"+name, func(b *testing.B) {
				a := nsApplier(b, nfttest.NewNS(b))
				c := NewCompiler(Options{LogDrops: true})
				if err := a.Apply(nft.Merge(baseRuleset(), c.Compile(s, "node-00").Model)); err != nil {
					b.Fatal(err)
				}
				snaps := [2]*Snapshot{s, changeOne(s, true)}
				i := 0
				for b.Loop() {
					i++
					mm := nft.Merge(baseRuleset(), c.Compile(snaps[i%2], "node-00").Model)
					if err := a.Apply(mm); err != nil {
						b.Fatal(err)
					}
					if st := a.LastApply(); !st.Incremental {
						b.Fatalf("not incremental: %+v", st)
					}
				}
				b.ReportMetric(float64(a.LastApply().Messages), "msgs")
			})
			b.Run("full-incremental-compiler-cold/"+name, func(b *testing.B) {
				for b.Loop() {
					NewCompiler(Options{LogDrops: true}).Compile(s, "node-00")
				}
			})
		}
	}
}
