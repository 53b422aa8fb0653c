package kube

import (
	"reflect"
	"testing"

	"github.com/netloom/netloom/firewall/policy"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func same[V any](a, b map[string]V) bool {
	return reflect.ValueOf(a).Pointer() == reflect.ValueOf(b).Pointer()
}

func TestInterner(t *testing.T) {
	var in interner[map[string]string]
	a := internMap(&in, map[string]string{"app": "web", "tier": "front"})
	b := internMap(&in, map[string]string{"tier": "front", "app": "web"})
	if !same(a, b) {
		t.Error("two maps of one content are two maps")
	}
	// Contents that would read alike without quoting stay apart.
	for _, m := range []map[string]string{{"app": "webtier", "": "front"}, {"app": "web", "tier": "fron"}, {"app\"": "web", "tier": "front"}} {
		if got := internMap(&in, m); same(got, a) || !reflect.DeepEqual(got, m) {
			t.Errorf("intern(%v) = %v, the map of %v", m, got, a)
		}
	}
	if got := internMap(&in, map[string]string(nil)); got != nil {
		t.Errorf("intern(nil) = %v", got)
	}
	// Full, it starts over: maps handed out stay as they were.
	for i := range maxInterned {
		internMap(&in, map[string]string{"n": string(rune('a' + i%26)), "i": string(rune(i))})
	}
	if len(in.m) > maxInterned {
		t.Errorf("the interner holds %d contents, more than %d", len(in.m), maxInterned)
	}
	if a["app"] != "web" || len(a) != 2 {
		t.Errorf("a map handed out changed: %v", a)
	}
}

// Lists of one content are one list; lists that would read alike
// without quoting, or differ in a port or a protocol, stay apart.
func TestPortLists(t *testing.T) {
	var in interner[[]policy.NamedPort]
	mk := func(ps ...policy.NamedPort) []policy.NamedPort { return ps }
	http := policy.NamedPort{Name: "http", Port: 8080, Protocol: policy.TCP}
	a := internPorts(&in, mk(http, policy.NamedPort{Name: "dns", Port: 53, Protocol: policy.UDP}))
	b := internPorts(&in, mk(http, policy.NamedPort{Name: "dns", Port: 53, Protocol: policy.UDP}))
	if &a[0] != &b[0] {
		t.Error("two lists of one content are two lists")
	}
	for _, ps := range [][]policy.NamedPort{
		mk(http),
		mk(http, policy.NamedPort{Name: "dns", Port: 53, Protocol: policy.TCP}),
		mk(http, policy.NamedPort{Name: "dns", Port: 54, Protocol: policy.UDP}),
		mk(policy.NamedPort{Name: "http8", Port: 80, Protocol: policy.TCP}),
	} {
		if got := internPorts(&in, ps); &got[0] == &a[0] || !reflect.DeepEqual(got, ps) {
			t.Errorf("intern(%v) = %v, the list of %v", ps, got, a)
		}
	}
	if got := internPorts(&in, nil); got != nil {
		t.Errorf("intern(nil) = %v", got)
	}
	for i := range maxInterned {
		internPorts(&in, mk(policy.NamedPort{Name: "p", Port: uint16(i)}))
	}
	if len(in.m) > maxInterned || a[0] != http || len(a) != 2 {
		t.Errorf("full: %d contents held; a list handed out is now %v", len(in.m), a)
	}
}

// Pods of one ReplicaSet share their labels and ports; policies share the
// maps of their selectors.
func TestCacheSharesLabels(t *testing.T) {
	p1 := pod("default", "web-1", "u1", "n1", "10.244.1.5", map[string]string{"app": "web", "pod-template-hash": "abc"})
	p2 := pod("default", "web-2", "u2", "n2", "10.244.2.5", map[string]string{"pod-template-hash": "abc", "app": "web"})
	for _, p := range []*corev1.Pod{p1, p2} {
		p.Spec.Containers = []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}
	}
	c1, c2 := cachePod(p1), cachePod(p2)
	if !same(c1.Labels, c2.Labels) {
		t.Error("two pods with the same labels keep two maps")
	}
	if len(c1.Ports) != 1 || len(c2.Ports) != 1 || &c1.Ports[0] != &c2.Ports[0] {
		t.Errorf("two pods with the same ports keep two lists: %v %v", c1.Ports, c2.Ports)
	}
	if cp := c1.DeepCopyObject().(*Pod); same(cp.Labels, c1.Labels) {
		t.Error("DeepCopyObject shares the labels")
	}
	web := func() *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	}
	np := func(name string) *networkingv1.NetworkPolicy {
		return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: *web(),
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: web(), NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}}}}},
				Egress:  []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: web()}}}}}}
	}
	o1, _ := strip(np("a"))
	o2, _ := strip(np("b"))
	a, b := o1.(*networkingv1.NetworkPolicy), o2.(*networkingv1.NetworkPolicy)
	m := a.Spec.PodSelector.MatchLabels
	for what, got := range map[string]map[string]string{
		"b's podSelector":  b.Spec.PodSelector.MatchLabels,
		"a's ingress peer": a.Spec.Ingress[0].From[0].PodSelector.MatchLabels,
		"b's egress peer":  b.Spec.Egress[0].To[0].PodSelector.MatchLabels,
	} {
		if !same(m, got) {
			t.Errorf("%s does not share a's podSelector map", what)
		}
	}
	if same(m, c1.Labels) {
		t.Error("maps of other contents are shared")
	}
	if ns := b.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels; !same(ns, a.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels) || ns["team"] != "a" {
		t.Errorf("namespace selectors: %v", ns)
	}
}
