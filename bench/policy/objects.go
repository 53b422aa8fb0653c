package main

import (
	"encoding/json"
	"fmt"

	"github.com/netloom/netloom/firewall/policy"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Objects of the end-to-end benchmark: namespaces, pods and policies,
// built as typed Kubernetes objects, sent to the agent as a JSON List and
// used for the benchmark's own policy.Snapshot (which says how many rules
// each node must end up with).

// Ports of the measured flows.
const (
	iperfPort = 5201 // iperf3, allowed in every phase
	connPort  = 5202 // connection rate and enforcement time, toggled
)

func tcp() *corev1.Protocol { p := corev1.ProtocolTCP; return &p }
func udp() *corev1.Protocol { p := corev1.ProtocolUDP; return &p }

func num(n int) *intstr.IntOrString      { v := intstr.FromInt32(int32(n)); return &v }
func named(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }

func sel(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{}
	for i := 0; i+1 < len(kv); i += 2 {
		if s.MatchLabels == nil {
			s.MatchLabels = map[string]string{}
		}
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func np(ns, name string, s *metav1.LabelSelector) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: *s},
	}
}

func namespaceObj(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}
}

// podSpec is a pod of the benchmark.
type podSpec struct {
	ns, name string
	node     int // 1-based
	labels   map[string]string
}

// podPorts are the named container ports every pod declares.
var podPorts = []policy.NamedPort{
	{Name: "http", Port: 8080, Protocol: policy.TCP},
	{Name: "iperf", Port: iperfPort, Protocol: policy.TCP},
	{Name: "dns", Port: 53, Protocol: policy.UDP},
}

func podObj(s podSpec) *corev1.Pod {
	var ports []corev1.ContainerPort
	for _, p := range podPorts {
		ports = append(ports, corev1.ContainerPort{Name: p.Name, ContainerPort: int32(p.Port), Protocol: corev1.Protocol(p.Protocol)})
	}
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: s.name, Labels: s.labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1", Ports: ports}}},
	}
}

// manifest renders objects as a JSON List, without the empty status and
// creationTimestamp typed objects marshal.
func manifest(objs []any) (string, error) {
	items := make([]json.RawMessage, 0, len(objs))
	for _, o := range objs {
		b, err := json.Marshal(o)
		if err != nil {
			return "", fmt.Errorf("encode object: %w", err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			return "", fmt.Errorf("encode object: %w", err)
		}
		delete(m, "status")
		if md, ok := m["metadata"].(map[string]any); ok {
			delete(md, "creationTimestamp")
		}
		if b, err = json.Marshal(m); err != nil {
			return "", fmt.Errorf("encode object: %w", err)
		}
		items = append(items, b)
	}
	b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	return string(b), err
}

// allowPolicy lets the client reach the server on the iperf port, and on
// the connection port when open.
func allowPolicy(open bool) *networkingv1.NetworkPolicy {
	p := np("perf", "zz-allow-client", sel("role", "server"))
	ports := []networkingv1.NetworkPolicyPort{{Protocol: tcp(), Port: num(iperfPort)}}
	if open {
		ports = append(ports, networkingv1.NetworkPolicyPort{Protocol: tcp(), Port: num(connPort)})
	}
	p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
		From:  []networkingv1.NetworkPolicyPeer{{PodSelector: sel("role", "client")}},
		Ports: ports,
	}}
	return p
}

// unrelatedPolicies are n policies spread over the bulk namespaces,
// selecting bulk pods (never the measured pods), in six shapes: ingress
// from a namespace selector, from an ipBlock with an except by named port,
// egress to pods by UDP and TCP, both selectors with a port range,
// matchExpressions, and selectors that select no pod.
func unrelatedPolicies(n, bulkNS int) []*networkingv1.NetworkPolicy {
	out := make([]*networkingv1.NetworkPolicy, 0, n)
	for i := range n {
		ns := fmt.Sprintf("bulk-%d", i%bulkNS)
		app := fmt.Sprintf("bulk-%d", (i/bulkNS)%5)
		p := np(ns, fmt.Sprintf("unrelated-%05d", i), sel("app", app))
		port := 1000 + i%20000
		switch (i / bulkNS) % 6 {
		case 0:
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", "bulk")}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: tcp(), Port: num(port)}},
			}}
		case 1:
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
					CIDR: fmt.Sprintf("10.%d.%d.0/24", 100+i%50, i%256), Except: []string{fmt.Sprintf("10.%d.%d.128/25", 100+i%50, i%256)},
				}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: named("http")}},
			}}
		case 2:
			p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
			p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", fmt.Sprintf("bulk-%d", (i+1)%5))}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: udp(), Port: num(53)}, {Protocol: tcp(), Port: num(port)}},
			}}
		case 3:
			end := int32(port + 100)
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: sel("team", "bulk"), PodSelector: sel("app", fmt.Sprintf("bulk-%d", (i+2)%5)),
				}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: tcp(), Port: num(port), EndPort: &end}},
			}}
		case 4:
			p.Spec.PodSelector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{app, fmt.Sprintf("bulk-%d", (i+3)%5)}},
			}}
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel()}}}}
		case 5:
			p.Spec.PodSelector = *sel("app", fmt.Sprintf("nothing-%d", i))
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel()}}}}
		}
		out = append(out, p)
	}
	return out
}

// serverPolicies are n policies that all select the iperf server and allow
// other sources and ports than the measured flows (from the bulk
// namespaces, from ipBlocks, on named and numbered ports), so that the
// server's ingress chain has one rule per policy before the rule of the
// allow policy, which sorts last.
func serverPolicies(n int) []*networkingv1.NetworkPolicy {
	out := make([]*networkingv1.NetworkPolicy, 0, n)
	for i := range n {
		p := np("perf", fmt.Sprintf("server-%05d", i), sel("role", "server"))
		port := 10000 + i%50000
		switch i % 3 {
		case 0:
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", "bulk")}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: tcp(), Port: num(port)}},
			}}
		case 1:
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: fmt.Sprintf("192.168.%d.0/24", i%256)}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: named("iperf")}},
			}}
		case 2:
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", "bulk"), PodSelector: sel("app", fmt.Sprintf("bulk-%d", i%5))}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: udp(), Port: num(port)}},
			}}
		}
		out = append(out, p)
	}
	return out
}

func asObjs[T any](xs []T) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}
