package node

import (
	"encoding/json"
	"net/netip"
	"sort"
	"sync"

	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/mesh/objects"
	"github.com/netloom/netloom/mesh/store"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// objCaches keep what the agent decodes from the store between passes, so
// that a pass decodes only what changed, and keep the derived snapshot and
// load-balancing state while their inputs stay.
type objCaches struct {
	namespaces *decoded[namespaceLabels]
	podAddrs   *decoded[podAddr]
	pods       *decoded[*corev1.Pod]
	policies   *decoded[*networkingv1.NetworkPolicy]
	services   *decoded[lb.Service]
	pools      *decoded[lb.Pool]
	assigned   *decoded[keyedAssignment]

	mu      sync.Mutex
	snapKey [4]uint64
	snap    *policy.Snapshot
	lbKey   lbKey
	lb      lbState
	lbOK    bool
	lbGen   uint64
}

type namespaceLabels struct {
	name   string
	labels map[string]string
}

type podAddr struct {
	key  store.Key
	addr PodAddress
	ip   netip.Addr
}

type keyedAssignment struct {
	key lb.ServiceKey
	as  lb.Assignment
}

func newObjCaches() *objCaches {
	return &objCaches{
		namespaces: newDecoded("Namespace", func(e store.Entry) (namespaceLabels, bool) {
			ns, err := objects.DecodeNamespace(e.Value)
			if err != nil {
				return namespaceLabels{}, false
			}
			return namespaceLabels{name: e.Key.Name, labels: ns.Labels}, true
		}),
		podAddrs: newDecoded(KindPodAddr, func(e store.Entry) (podAddr, bool) {
			var pa PodAddress
			if json.Unmarshal(e.Value, &pa) != nil {
				return podAddr{}, false
			}
			ip, err := netip.ParseAddr(pa.IP)
			if err != nil {
				return podAddr{}, false
			}
			return podAddr{key: e.Key, addr: pa, ip: ip}, true
		}),
		pods: newDecoded("Pod", func(e store.Entry) (*corev1.Pod, bool) {
			pod, err := objects.DecodePod(e.Value)
			return pod, err == nil
		}),
		policies: newDecoded("NetworkPolicy", func(e store.Entry) (*networkingv1.NetworkPolicy, bool) {
			pol, err := objects.DecodeNetworkPolicy(e.Value)
			return pol, err == nil
		}),
		services: newDecoded("Service", func(e store.Entry) (lb.Service, bool) {
			svc, err := objects.DecodeService(e.Value)
			if err != nil {
				return lb.Service{}, false
			}
			s, err := objects.LBService(svc)
			if err != nil {
				return lb.Service{}, false
			}
			s.Created = parseCreated(svc.Annotations[CreatedAnnotation], e.Version)
			return s, true
		}),
		pools: newDecoded("AddressPool", func(e store.Entry) (lb.Pool, bool) {
			ap, err := objects.DecodeAddressPool(e.Value)
			if err != nil {
				return lb.Pool{}, false
			}
			p, err := ap.LBPool()
			return p, err == nil
		}),
		assigned: newDecoded(lb.AssignmentKind, func(e store.Entry) (keyedAssignment, bool) {
			var as lb.Assignment
			if json.Unmarshal(e.Value, &as) != nil {
				return keyedAssignment{}, false
			}
			return keyedAssignment{key: lb.ServiceKey{Namespace: e.Key.Namespace, Name: e.Key.Name}, as: as}, true
		}),
	}
}

// policySnapshot builds what NetworkPolicy decisions depend on from the
// store: every pod that has an address (labels and named ports from its Pod
// object, when there is one), namespace labels, and the policies. While
// none of these kinds changes it returns the same snapshot (read only).
func (a *Agent) policySnapshot() *policy.Snapshot {
	o := a.objs
	nss, gNS := o.namespaces.list(a.store)
	addrs, gAddr := o.podAddrs.list(a.store)
	_, gPod := o.pods.list(a.store)
	pols, gPol := o.policies.list(a.store)
	key := [4]uint64{gNS, gAddr, gPod, gPol}
	o.mu.Lock()
	if o.snap != nil && o.snapKey == key {
		s := o.snap
		o.mu.Unlock()
		return s
	}
	o.mu.Unlock()

	s := &policy.Snapshot{Namespaces: make(map[string]map[string]string, len(nss))}
	for _, ns := range nss {
		s.Namespaces[ns.name] = ns.labels
	}
	s.Pods = make([]policy.Pod, 0, len(addrs))
	for _, pa := range addrs { // in key order, i.e. by namespace/name
		p := policy.Pod{Namespace: pa.key.Namespace, Name: pa.key.Name, IP: pa.ip, Node: pa.addr.Node}
		if pod, ok := o.pods.get(a.store, podKey(pa.key.Namespace, pa.key.Name)); ok {
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
		s.Pods = append(s.Pods, p)
	}
	sort.Slice(s.Pods, func(i, j int) bool { return s.Pods[i].Key() < s.Pods[j].Key() })
	s.Policies = pols
	o.mu.Lock()
	o.snap, o.snapKey = s, key
	o.mu.Unlock()
	return s
}

func podKey(ns, name string) store.Key { return store.Key{Kind: "Pod", Namespace: ns, Name: name} }
