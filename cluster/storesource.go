package cluster

import (
	"net/netip"
	"sort"
	"sync"

	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/mesh/objects"
	"github.com/netloom/netloom/mesh/store"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// Objects are the objects of the cluster as a Source yields them.
type Objects struct {
	Leases     []ipam.Lease
	NodeSubnet NodeSubnet
	Policy     *policy.Snapshot
	Services   []lb.Service
	Pools      []lb.Pool
	// Endpoints, when not nil, are the services' endpoints (see
	// Snapshot.Endpoints).
	Endpoints map[lb.ServiceKey][]lb.Endpoint
	Gen       Gens
}

// Source yields the cluster's objects. Objects must be cheap when nothing
// changed and keep the pointers of unchanged parts. A source without a
// complete view yet returns a nil Policy (see Snapshot.Policy).
type Source interface {
	Objects() Objects
	// Subscribe returns a channel that receives (without blocking the
	// source) after each change, and a function that ends the
	// subscription.
	Subscribe() (<-chan struct{}, func())
}

// StoreSource is the gossip store as a Source: it keeps what it decoded
// between calls, decodes only entries whose version changed, and keeps the
// derived parts while the kinds they read stay.
type StoreSource struct {
	st *store.Store

	namespaces *decoded[namespaceLabels]
	podAddrs   *decoded[Keyed[PodAddress]]
	pods       *decoded[*corev1.Pod]
	policies   *decoded[*networkingv1.NetworkPolicy]
	services   *decoded[lb.Service]
	pools      *decoded[lb.Pool]
	assigned   *decoded[Keyed[lb.Assignment]]
	leases     *decoded[ipam.Lease]

	mu     sync.Mutex
	polKey [4]uint64
	pol    *policy.Snapshot
	svcKey [2]uint64
	svcs   []lb.Service
	svcGen uint64
	polGen uint64
	podKey [2]uint64
	podGen uint64
}

type namespaceLabels struct {
	name   string
	labels map[string]string
}

// NewStoreSource reads objects from st.
func NewStoreSource(st *store.Store) *StoreSource {
	s := &StoreSource{st: st}
	s.namespaces = newDecoded("Namespace", func(e store.Entry) (namespaceLabels, bool) {
		ns, err := objects.DecodeNamespace(e.Value)
		if err != nil {
			return namespaceLabels{}, false
		}
		return namespaceLabels{name: e.Key.Name, labels: ns.Labels}, true
	})
	s.podAddrs = newDecoded(KindPodAddress, keyedOf(PodAddresses))
	s.pods = newDecoded("Pod", func(e store.Entry) (*corev1.Pod, bool) {
		pod, err := objects.DecodePod(e.Value)
		return pod, err == nil
	})
	s.policies = newDecoded("NetworkPolicy", func(e store.Entry) (*networkingv1.NetworkPolicy, bool) {
		pol, err := objects.DecodeNetworkPolicy(e.Value)
		return pol, err == nil
	})
	s.services = newDecoded(KindService, func(e store.Entry) (lb.Service, bool) {
		v, err := DecodeService(e)
		return v, err == nil
	})
	s.pools = newDecoded("AddressPool", func(e store.Entry) (lb.Pool, bool) {
		v, err := DecodePool(e)
		return v, err == nil
	})
	s.assigned = newDecoded(KindAssignment, keyedOf(Assignments))
	s.leases = newDecoded(KindLease, func(e store.Entry) (ipam.Lease, bool) {
		v, err := Leases.Decode(e)
		return v, err == nil
	})
	return s
}

func keyedOf[T any](c Codec[T]) func(store.Entry) (Keyed[T], bool) {
	return func(e store.Entry) (Keyed[T], bool) {
		v, err := c.Decode(e)
		return Keyed[T]{Key: e.Key, Value: v}, err == nil
	}
}

// Subscribe implements Source.
func (s *StoreSource) Subscribe() (<-chan struct{}, func()) { return s.st.Subscribe() }

// Objects implements Source.
func (s *StoreSource) Objects() Objects {
	leases, gLease := s.leases.list(s.st)
	pools, gPool := s.pools.list(s.st)
	pol, gPol := s.policy()
	gPods := s.podsGen()
	svcs, gSvc := s.servicesWithAssignments()
	return Objects{Leases: leases, Policy: pol, Services: svcs, Pools: pools,
		Gen: Gens{Leases: gLease, Policy: gPol, Services: gSvc, Pools: gPool, Pods: gPods}}
}

// servicesWithAssignments are the services with what the store records
// for each; the slice stays while neither kind changes.
func (s *StoreSource) servicesWithAssignments() ([]lb.Service, uint64) {
	services, gSvc := s.services.list(s.st)
	assigned, gAs := s.assigned.list(s.st)
	key := [2]uint64{gSvc, gAs}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.svcs != nil && s.svcKey == key {
		return s.svcs, s.svcGen
	}
	as := make(map[lb.ServiceKey]lb.Assignment, len(assigned))
	for _, ka := range assigned {
		as[lb.ServiceKey{Namespace: ka.Key.Namespace, Name: ka.Key.Name}] = ka.Value
	}
	out := make([]lb.Service, len(services))
	for i, sv := range services {
		sv.Assigned = as[sv.Key()]
		out[i] = sv
	}
	s.svcGen++
	s.svcs, s.svcKey = out, key
	return out, s.svcGen
}

// podsGen is a generation that moves only when the kinds endpoints read
// (pods and pod addresses) change.
func (s *StoreSource) podsGen() uint64 {
	key := [2]uint64{s.st.Generation(KindPodAddress), s.st.Generation("Pod")}
	s.mu.Lock()
	defer s.mu.Unlock()
	if key != s.podKey || s.podGen == 0 {
		s.podKey = key
		s.podGen++
	}
	return s.podGen
}

// policy builds what NetworkPolicy decisions depend on: every pod that has
// an address (labels and named ports from its Pod object, when there is
// one), namespace labels, and the policies. While none of these kinds
// changes it returns the same snapshot.
func (s *StoreSource) policy() (*policy.Snapshot, uint64) {
	nss, gNS := s.namespaces.list(s.st)
	addrs, gAddr := s.podAddrs.list(s.st)
	_, gPod := s.pods.list(s.st)
	pols, gPol := s.policies.list(s.st)
	key := [4]uint64{gNS, gAddr, gPod, gPol}
	s.mu.Lock()
	if s.pol != nil && s.polKey == key {
		p, g := s.pol, s.polGen
		s.mu.Unlock()
		return p, g
	}
	s.mu.Unlock()

	snap := &policy.Snapshot{Namespaces: make(map[string]map[string]string, len(nss))}
	for _, ns := range nss {
		snap.Namespaces[ns.name] = ns.labels
	}
	snap.Pods = make([]policy.Pod, 0, len(addrs))
	for _, pa := range addrs {
		ip, _ := netip.ParseAddr(pa.Value.IP) // checked by the codec
		p := policy.Pod{Namespace: pa.Key.Namespace, Name: pa.Key.Name, IP: ip, Node: pa.Value.Node}
		if pod, ok := s.pods.get(s.st, store.Key{Kind: "Pod", Namespace: pa.Key.Namespace, Name: pa.Key.Name}); ok {
			p.Labels, p.Ports = pod.Labels, NamedPorts(pod)
			ready, terminating := objects.PodConditions(pod)
			p.Unready, p.Terminating = !ready, terminating
		}
		snap.Pods = append(snap.Pods, p)
	}
	sort.Slice(snap.Pods, func(i, j int) bool { return snap.Pods[i].Key() < snap.Pods[j].Key() })
	snap.Policies = pols
	s.mu.Lock()
	s.polGen++
	s.pol, s.polKey = snap, key
	g := s.polGen
	s.mu.Unlock()
	return snap, g
}

// NamedPorts are the named container ports of a pod, as policy resolves
// them.
func NamedPorts(pod *corev1.Pod) []policy.NamedPort {
	var out []policy.NamedPort
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == "" {
				continue
			}
			proto := policy.Protocol(cp.Protocol)
			if proto == "" {
				proto = policy.TCP
			}
			out = append(out, policy.NamedPort{Name: cp.Name, Port: uint16(cp.ContainerPort), Protocol: proto})
		}
	}
	return out
}

// Leases are the subnet leases of the store and their generation: a
// Kubernetes source reads leases from gossip too.
func (s *StoreSource) Leases() ([]ipam.Lease, uint64) { return s.leases.list(s.st) }

// PodAddresses are the pod attachments of the store and their generation.
func (s *StoreSource) PodAddresses() ([]Keyed[PodAddress], uint64) { return s.podAddrs.list(s.st) }
