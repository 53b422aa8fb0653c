package node

import (
	"encoding/json"
	"net/netip"
	"sort"

	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/mesh/objects"
	"github.com/netloom/netloom/mesh/store"
	networkingv1 "k8s.io/api/networking/v1"
)

// policySnapshot builds what NetworkPolicy decisions depend on from the
// store: every pod that has an address (labels and named ports from its Pod
// object, when there is one), namespace labels, and the policies.
func (a *Agent) policySnapshot() *policy.Snapshot {
	s := &policy.Snapshot{Namespaces: map[string]map[string]string{}}
	for _, e := range a.store.List("Namespace", "") {
		ns, err := objects.DecodeNamespace(e.Value)
		if err != nil {
			continue
		}
		s.Namespaces[e.Key.Name] = ns.Labels
	}
	for _, e := range a.store.List(KindPodAddr, "") {
		var pa PodAddress
		if json.Unmarshal(e.Value, &pa) != nil {
			continue
		}
		ip, err := netip.ParseAddr(pa.IP)
		if err != nil {
			continue
		}
		p := policy.Pod{Namespace: e.Key.Namespace, Name: e.Key.Name, IP: ip, Node: pa.Node}
		if obj, ok := a.store.Get(podKey(e.Key.Namespace, e.Key.Name)); ok {
			if pod, err := objects.DecodePod(obj.Value); err == nil {
				p.Labels = pod.Labels
				for _, c := range pod.Spec.Containers {
					for _, cp := range c.Ports {
						if cp.Name == "" {
							continue
						}
						proto := policy.Protocol(cp.Protocol)
						if proto == "" {
							proto = policy.TCP
						}
						p.Ports = append(p.Ports, policy.NamedPort{Name: cp.Name, Port: uint16(cp.ContainerPort), Protocol: proto})
					}
				}
			}
		}
		s.Pods = append(s.Pods, p)
	}
	sort.Slice(s.Pods, func(i, j int) bool { return s.Pods[i].Key() < s.Pods[j].Key() })
	s.Policies = a.policies()
	return s
}

func (a *Agent) policies() []*networkingv1.NetworkPolicy {
	var out []*networkingv1.NetworkPolicy
	for _, e := range a.store.List("NetworkPolicy", "") {
		if pol, err := objects.DecodeNetworkPolicy(e.Value); err == nil {
			out = append(out, pol)
		}
	}
	return out
}

func podKey(ns, name string) store.Key { return store.Key{Kind: "Pod", Namespace: ns, Name: name} }
