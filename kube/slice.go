package kube

import (
	"cmp"
	"net/netip"
	"slices"
	"unique"

	"github.com/netloom/netloom/lb"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Slice is what the agent caches of an EndpointSlice: its identity, the
// service it belongs to, its address type and its endpoints already in
// the form the load balancer reads (lb.Endpoint: the first address of
// each IPv4 endpoint, conditions as KEP-1669 defines them when unset:
// ready true, serving as ready, terminating false; node; pod; the slice's
// target ports by service port name), each address once, sorted by pod,
// then address. A cluster's slices hold an entry per pod of every
// service: kept as API objects and converted on every change they were
// two copies of every endpoint; kept like this they are one, which a
// service of one slice (most of them) shares with the endpoints it hands
// the load balancer. Cached objects are read-only (client-go's rule), so
// sharing is safe.
type Slice struct {
	Meta `json:"metadata"`
	// Service is the slice's kubernetes.io/service-name label.
	Service     string                  `json:"service"`
	AddressType discoveryv1.AddressType `json:"addressType"`
	Endpoints   []lb.Endpoint           `json:"endpoints"`
}

// DeepCopyObject implements runtime.Object, as the informer's cache needs.
// The endpoints' port maps are shared: nothing writes them after
// stripSlice made them.
func (s *Slice) DeepCopyObject() runtime.Object {
	return &Slice{Meta: s.Meta, Service: s.Service, AddressType: s.AddressType, Endpoints: slices.Clone(s.Endpoints)}
}

// GetObjectKind implements runtime.Object: a cached object has no kind
// (the informer's objects come without one).
func (s *Slice) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// stripSlice turns an EndpointSlice into the Slice the cache keeps. Node
// names and port maps repeat across slices and are kept once
// (unique.Make, portMaps); a pod namespace is the slice's string when
// equal to it.
func stripSlice(sl *discoveryv1.EndpointSlice) *Slice {
	out := &Slice{
		Meta:        metaOf(&sl.ObjectMeta),
		Service:     sl.Labels[discoveryv1.LabelServiceName],
		AddressType: sl.AddressType,
	}
	if sl.AddressType != discoveryv1.AddressTypeIPv4 || len(sl.Endpoints) == 0 {
		return out
	}
	ports := make(map[string]uint16, len(sl.Ports))
	for _, p := range sl.Ports {
		if p.Port != nil && *p.Port > 0 && *p.Port <= 65535 {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			ports[name] = uint16(*p.Port)
		}
	}
	ports = internMap(&portMaps, ports)
	// Sized once: the cache keeps this list, and append's doubling would
	// leave it up to twice as long as it is.
	eps := make([]lb.Endpoint, 0, len(sl.Endpoints))
	seen := make(map[netip.Addr]bool, len(sl.Endpoints))
	for _, e := range sl.Endpoints {
		if len(e.Addresses) == 0 {
			continue
		}
		ip, err := netip.ParseAddr(e.Addresses[0])
		if err != nil || !ip.Is4() || seen[ip] {
			continue
		}
		seen[ip] = true
		ep := lb.Endpoint{IP: ip, ServicePorts: ports}
		ep.Ready = e.Conditions.Ready == nil || *e.Conditions.Ready
		ep.Serving = ep.Ready
		if e.Conditions.Serving != nil {
			ep.Serving = *e.Conditions.Serving
		}
		ep.Terminating = e.Conditions.Terminating != nil && *e.Conditions.Terminating
		if n := e.NodeName; n != nil {
			ep.Node = unique.Make(*n).Value()
		}
		if r := e.TargetRef; r != nil && r.Kind == "Pod" {
			ep.PodNamespace, ep.PodName = sl.Namespace, r.Name
			if r.Namespace != "" && r.Namespace != sl.Namespace {
				ep.PodNamespace = r.Namespace
			}
		}
		eps = append(eps, ep)
	}
	sortEndpoints(eps)
	if len(eps) > 0 {
		out.Endpoints = slices.Clip(eps)
	}
	return out
}

// sortEndpoints orders endpoints by pod, then address.
func sortEndpoints(eps []lb.Endpoint) {
	slices.SortFunc(eps, func(a, b lb.Endpoint) int {
		return cmp.Or(cmp.Compare(a.PodNamespace, b.PodNamespace), cmp.Compare(a.PodName, b.PodName), a.IP.Compare(b.IP))
	})
}
