package kube

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/mesh/objects"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The translations from API objects to what the rooms read are pure
// functions of the objects: every node makes the same ones.

const (
	// LBClass is the spec.loadBalancerClass netloom answers for (besides
	// none).
	LBClass = "netloom.io/lb"
	// ProxyNameLabel names the proxy that serves a service; kube-proxy
	// skips services that carry it.
	ProxyNameLabel = "service.kubernetes.io/service-proxy-name"
	// ProxyName is the value of ProxyNameLabel for netloom.
	ProxyName = "netloom"
)

// ProxyMode says which services netloom's proxy serves beside kube-proxy
// (--service-proxy).
type ProxyMode string

const (
	// ProxyReplace: kube-proxy is absent; netloom proxies every service
	// that does not name another proxy in ProxyNameLabel.
	ProxyReplace ProxyMode = "replace"
	// ProxyLabelled: netloom proxies only services labelled
	// ProxyNameLabel=netloom; for the others it allocates and announces
	// VIPs only, as MetalLB does.
	ProxyLabelled ProxyMode = "labelled"
	// ProxyOff: netloom proxies nothing.
	ProxyOff ProxyMode = "off"
)

// ParseProxyMode reads --service-proxy.
func ParseProxyMode(s string) (ProxyMode, error) {
	switch m := ProxyMode(s); m {
	case ProxyReplace, ProxyLabelled, ProxyOff:
		return m, nil
	case "":
		return ProxyReplace, nil
	}
	return "", fmt.Errorf("--service-proxy %q: want replace (no kube-proxy), labelled (only services labelled %s=%s) or off", s, ProxyNameLabel, ProxyName)
}

// proxies reports whether netloom's proxy serves, in mode m, a service
// whose ProxyNameLabel is name (labelled: it has one).
func (m ProxyMode) proxies(name string, labelled bool) bool {
	switch m {
	case ProxyLabelled:
		return name == ProxyName
	case ProxyOff:
		return false
	}
	return !labelled || name == ProxyName
}

// PolicyPods are the pods policy and endpoints see: every pod with an
// address, labels and named ports from its API object. The address netloom
// gossiped at CNI ADD wins over status.podIPs (it is known at once, and
// the kubelet writes status later); a gossiped address of another pod of
// the same name (another UID) does not count. Host-network pods are not
// pods of the pod network, and finished pods have no address. Addresses
// without an API object (a pod being deleted) are kept without labels, as
// in standalone mode. Sorted by key.
func PolicyPods(pods []*Pod, addrs []cluster.Keyed[cluster.PodAddress]) []policy.Pod {
	byName := make(map[string]cluster.PodAddress, len(addrs))
	for _, a := range addrs {
		byName[a.Key.Namespace+"/"+a.Key.Name] = a.Value
	}
	out := make([]policy.Pod, 0, len(pods)+len(addrs))
	seen := make(map[string]bool, len(pods))
	for _, pod := range pods {
		key := pod.Namespace + "/" + pod.Name
		if pod.HostNetwork || pod.Phase == corev1.PodSucceeded || pod.Phase == corev1.PodFailed {
			continue
		}
		p := policy.Pod{Namespace: pod.Namespace, Name: pod.Name, Node: pod.NodeName, Labels: pod.Labels, Ports: pod.Ports,
			IP: pod.IP, Unready: !pod.Ready, Terminating: pod.DeletionTimestamp != nil}
		if a, ok := byName[key]; ok && (a.UID == "" || a.UID == string(pod.UID)) {
			p.IP, _ = netip.ParseAddr(a.IP) // checked by the codec
			p.Node = a.Node
		}
		if !p.IP.IsValid() {
			continue
		}
		seen[key] = true
		out = append(out, p)
	}
	for _, a := range addrs {
		key := a.Key.Namespace + "/" + a.Key.Name
		if seen[key] {
			continue
		}
		ip, _ := netip.ParseAddr(a.Value.IP)
		out = append(out, policy.Pod{Namespace: a.Key.Namespace, Name: a.Key.Name, IP: ip, Node: a.Value.Node})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// statusIPv4 is the pod's first IPv4 address in its status.
func statusIPv4(pod *corev1.Pod) netip.Addr {
	ips := pod.Status.PodIPs
	if len(ips) == 0 && pod.Status.PodIP != "" {
		ips = []corev1.PodIP{{IP: pod.Status.PodIP}}
	}
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip.IP); err == nil && a.Is4() {
			return a
		}
	}
	return netip.Addr{}
}

// NamespaceLabels maps each namespace to its labels.
func NamespaceLabels(nss []*corev1.Namespace) map[string]map[string]string {
	out := make(map[string]map[string]string, len(nss))
	for _, ns := range nss {
		out[ns.Name] = ns.Labels
	}
	return out
}

// Policies are the NetworkPolicies in key order.
func Policies(pols []*networkingv1.NetworkPolicy) []*networkingv1.NetworkPolicy {
	out := slices.Clone(pols)
	slices.SortFunc(out, func(a, b *networkingv1.NetworkPolicy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// Service is a v1 Service as load balancing sees it in Kubernetes mode:
// its ClusterIP and node ports are the API server's; the VIP it holds is
// the first IPv4 address of status.loadBalancer.ingress (so allocations
// survive the loss of every data dir), in the pool that holds it. A
// LoadBalancer service of another loadBalancerClass gets no VIP from
// netloom (it keeps its node ports). ProxyElsewhere is set for the
// services mode leaves to another proxy. Services are ordered by creation
// (creationTimestamp, then UID) for address conflicts.
func Service(svc *corev1.Service, mode ProxyMode, pools []lb.Pool) (lb.Service, error) {
	return cacheService(svc).Service(mode, pools)
}

// translateService is Service without what depends on the mode and the
// pools (ProxyElsewhere, Assigned.Pool).
func translateService(svc *corev1.Service) (lb.Service, error) {
	s, err := objects.LBService(svc)
	if err != nil {
		return lb.Service{}, err
	}
	s.Created = lb.Version{Wall: svc.CreationTimestamp.UnixMilli(), Node: string(svc.UID)}
	if s.Type == lb.TypeLoadBalancer && !OurLoadBalancer(svc) {
		s.Type = lb.TypeClusterIP
	}
	as := lb.Assignment{ClusterIP: s.ClusterIP}
	if s.NodePorts {
		as.NodePorts = make([]uint16, len(s.Ports))
		for i, p := range s.Ports {
			as.NodePorts[i] = p.NodePort
		}
	}
	if s.NeedsHealthCheck() {
		as.HealthCheckNodePort = s.HealthCheckNodePort
	}
	if s.Type == lb.TypeLoadBalancer {
		as.VIP = IngressIP(svc)
	}
	s.Assigned = as
	return s, nil
}

// OurLoadBalancer reports whether svc is a LoadBalancer service whose
// address netloom allocates: no loadBalancerClass, or LBClass.
func OurLoadBalancer(svc *corev1.Service) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	c := svc.Spec.LoadBalancerClass
	return c == nil || *c == LBClass
}

// IngressIP is the first IPv4 address of status.loadBalancer.ingress.
func IngressIP(svc *corev1.Service) netip.Addr {
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil && a.Is4() {
			return a
		}
	}
	return netip.Addr{}
}

// poolOf names the pool holding a, "" for none.
func poolOf(a netip.Addr, pools []lb.Pool) string {
	if !a.IsValid() {
		return ""
	}
	for _, p := range pools {
		for _, r := range p.Ranges {
			if r.Contains(a) {
				return p.Name
			}
		}
	}
	return ""
}

// Endpoints are the services' endpoints from their EndpointSlices, as
// stripSlice keeps them (the slices of a service are those with its
// kubernetes.io/service-name label; IPv4 slices only). An address listed
// by two slices (while the controller moves it) counts once. Each
// service's endpoints are sorted by pod, then address.
func Endpoints(slicesIn []*Slice) map[lb.ServiceKey][]lb.Endpoint {
	var c EndpointsCache
	return c.Update(slicesIn)
}

// EndpointsCache computes Endpoints again only for the services whose
// slices changed: an informer replaces a changed object and keeps the
// pointer of an unchanged one, so a service whose slices are the same
// pointers keeps its endpoints. With 10,000 services a change of one slice
// then costs one service, not 100,000 endpoints of garbage.
//
// A service of one slice (most of them) has that slice's own endpoint
// list (serviceEndpoints): nothing to compute or keep. Only services of
// several slices are computed, and kept with their slices; the map
// returned last holds their endpoints.
type EndpointsCache struct {
	last  map[lb.ServiceKey][]lb.Endpoint
	multi map[lb.ServiceKey][]*Slice // services of several slices, by name
}

// Update returns Endpoints(slicesIn), reusing what it computed before.
// The map it returns is the caller's to keep, not to change.
func (c *EndpointsCache) Update(slicesIn []*Slice) map[lb.ServiceKey][]lb.Endpoint {
	sorted := make([]*Slice, 0, len(slicesIn))
	for _, sl := range slicesIn {
		if sl.Service != "" && sl.AddressType == discoveryv1.AddressTypeIPv4 {
			sorted = append(sorted, sl)
		}
	}
	slices.SortFunc(sorted, func(a, b *Slice) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Service, b.Service), cmp.Compare(a.Name, b.Name))
	})
	out := make(map[lb.ServiceKey][]lb.Endpoint, len(c.last))
	multi := map[lb.ServiceKey][]*Slice{}
	for len(sorted) > 0 {
		key := lb.ServiceKey{Namespace: sorted[0].Namespace, Name: sorted[0].Service}
		n := 1
		for n < len(sorted) && sorted[n].Namespace == key.Namespace && sorted[n].Service == key.Name {
			n++
		}
		run := sorted[:n:n]
		sorted = sorted[n:]
		eps, had := c.last[key]
		switch {
		case n == 1:
			// The slice's own list, or nothing when it has none.
			eps = run[0].Endpoints
		case had && slices.Equal(c.multi[key], run):
			multi[key] = c.multi[key]
		default:
			// A copy: a run of sorted would keep this pass's whole list.
			multi[key] = slices.Clone(run)
			eps = serviceEndpoints(run)
		}
		if len(eps) > 0 {
			out[key] = eps
		}
	}
	c.last, c.multi = out, multi
	return out
}

// serviceEndpoints are the endpoints of one service's slices (sorted by
// name), as Endpoints describes them. A service of one slice has the
// slice's own list.
func serviceEndpoints(run []*Slice) []lb.Endpoint {
	if len(run) == 1 {
		return run[0].Endpoints
	}
	n := 0
	for _, sl := range run {
		n += len(sl.Endpoints)
	}
	if n == 0 {
		return nil
	}
	// Sized once: the cache keeps this list, and append's doubling would
	// leave it up to twice as long as it is.
	out := make([]lb.Endpoint, 0, n)
	seen := make(map[netip.Addr]bool, n)
	for _, sl := range run {
		for _, ep := range sl.Endpoints {
			if !seen[ep.IP] {
				seen[ep.IP] = true
				out = append(out, ep)
			}
		}
	}
	sortEndpoints(out)
	return slices.Clip(out)
}

// Pool is an AddressPool custom resource as load balancing sees it, with
// the same checks as `netloom apply` makes.
func Pool(u *unstructured.Unstructured) (lb.Pool, error) {
	raw, err := json.Marshal(u.Object)
	if err != nil {
		return lb.Pool{}, fmt.Errorf("AddressPool %s: %w", u.GetName(), err)
	}
	ap, err := objects.DecodeAddressPool(raw)
	if err != nil {
		return lb.Pool{}, fmt.Errorf("AddressPool %s: %w", u.GetName(), err)
	}
	return ap.LBPool()
}

// NodeSubnet is how node self gets its pod subnet from the Nodes: the
// spec.podCIDR of its Node (the first IPv4 one of spec.podCIDRs) when the
// cluster set one. When some Node has one (kube-controller-manager
// allocates node CIDRs) but self's has none yet, self waits for it rather
// than picking one that would then move. When no Node has one, the nodes
// agree by gossip.
func NodeSubnet(nodes []*corev1.Node, self string) cluster.NodeSubnet {
	allocating := false
	var mine *corev1.Node
	for _, n := range nodes {
		if n.Name == self {
			mine = n
		}
		if podCIDR(n).IsValid() {
			allocating = true
		}
	}
	switch {
	case mine != nil && podCIDR(mine).IsValid():
		return cluster.NodeSubnet{Assigned: podCIDR(mine)}
	case !allocating:
		return cluster.NodeSubnet{}
	case mine == nil:
		return cluster.NodeSubnet{Wait: fmt.Sprintf("the cluster assigns pod subnets (spec.podCIDR) and has no Node %s yet", self)}
	}
	return cluster.NodeSubnet{Wait: fmt.Sprintf("kube-controller-manager has not set spec.podCIDR of Node %s yet", self)}
}

// podCIDR is n's pod subnet: the first IPv4 prefix of spec.podCIDRs (or
// spec.podCIDR), else the first one; invalid when it has none.
func podCIDR(n *corev1.Node) netip.Prefix {
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	var first netip.Prefix
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			continue
		}
		if p.Addr().Is4() {
			return p
		}
		if !first.IsValid() {
			first = p
		}
	}
	return first
}

// nodeSubnetChanged reports whether an update of a Node changed its pod
// subnet (the only part of a Node the Source reads).
func nodeSubnetChanged(old, cur any) bool {
	o, ok1 := old.(*corev1.Node)
	c, ok2 := cur.(*corev1.Node)
	return !ok1 || !ok2 || podCIDR(o) != podCIDR(c)
}

// ServiceCIDRs are the IPv4 ranges of the ServiceCIDR objects, where the
// API server takes ClusterIPs from: no AddressPool may overlap them.
func ServiceCIDRs(objs []*networkingv1.ServiceCIDR) []netip.Prefix {
	var out []netip.Prefix
	for _, o := range objs {
		for _, c := range o.Spec.CIDRs {
			if p, err := netip.ParsePrefix(c); err == nil && p.Addr().Is4() {
				out = append(out, p.Masked())
			}
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return slices.Compact(out)
}
