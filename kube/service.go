package kube

import (
	"encoding/json"
	"errors"
	"net/netip"

	"github.com/netloom/netloom/lb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// CachedService is what the agent caches of a Service: its identity and
// the service as load balancing reads it, translated once when the object
// arrives (Service, without the parts that depend on the pools and the
// proxy mode), with what the Writer reads of its status. A corev1.Service
// is 640 bytes before its spec's ports, maps and strings; with 10,000
// services the cached API objects were 12 MB of a node's heap, and their
// translation on every change of any service another 5 MB of copies.
//
// In JSON (the saved view) it is these fields; it also reads a Service API
// object, as views saved before it hold them.
type CachedService struct {
	metav1.TypeMeta `json:",inline"`
	Meta            `json:"metadata"`
	// LB is the translated service, Assigned.Pool and ProxyElsewhere
	// unset; LB.Selector is shared with other services of the same
	// selector (labelMaps).
	LB lb.Service `json:"lb"`
	// Err is why netloom cannot serve the service ("" when it can).
	Err string `json:"err,omitempty"`
	// Proxy is the service's ProxyNameLabel, Labelled whether it has one.
	Proxy    string `json:"proxy,omitempty"`
	Labelled bool   `json:"labelled,omitempty"`
	// Ours: a LoadBalancer service whose address netloom allocates
	// (OurLoadBalancer).
	Ours bool `json:"ours,omitempty"`
	// Ingress is status.loadBalancer.ingress.
	Ingress []corev1.LoadBalancerIngress `json:"ingress,omitempty"`
}

// cacheService makes the CachedService the cache keeps of svc.
func cacheService(svc *corev1.Service) *CachedService {
	out := &CachedService{
		TypeMeta: svc.TypeMeta,
		Meta:     metaOf(&svc.ObjectMeta),
		Ours:     OurLoadBalancer(svc),
		Ingress:  svc.Status.LoadBalancer.Ingress,
	}
	out.Proxy, out.Labelled = svc.Labels[ProxyNameLabel]
	s, err := translateService(svc)
	if err != nil {
		out.Err = err.Error()
		return out
	}
	s.Selector = labelMaps.intern(s.Selector)
	out.LB = s
	return out
}

// Service is the service as load balancing sees it with mode and pools
// (Service of the API object).
func (c *CachedService) Service(mode ProxyMode, pools []lb.Pool) (lb.Service, error) {
	if c.Err != "" {
		return lb.Service{}, errors.New(c.Err)
	}
	s := c.LB
	s.ProxyElsewhere = !mode.proxies(c.Proxy, c.Labelled)
	s.Assigned.Pool = poolOf(s.Assigned.VIP, pools)
	return s, nil
}

// sameIngress reports whether the service's status holds vip alone (no
// ingress when vip is invalid).
func (c *CachedService) sameIngress(vip netip.Addr) bool {
	in := c.Ingress
	if !vip.IsValid() {
		return len(in) == 0
	}
	return len(in) == 1 && in[0].IP == vip.String() && in[0].Hostname == ""
}

// UnmarshalJSON reads a CachedService, or a Service API object (a view
// saved before the cache kept CachedServices).
func (c *CachedService) UnmarshalJSON(b []byte) error {
	var probe struct {
		Spec *json.RawMessage `json:"spec"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return err
	}
	if probe.Spec != nil {
		var api corev1.Service
		if err := json.Unmarshal(b, &api); err != nil {
			return err
		}
		*c = *cacheService(&api)
		return nil
	}
	type plain CachedService // without this method
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*c = CachedService(p)
	return nil
}

// DeepCopyObject implements runtime.Object, as the informer's cache needs.
// The translated service's slices and maps are shared: nothing writes
// them after cacheService made them.
func (c *CachedService) DeepCopyObject() runtime.Object {
	out := *c
	return &out
}
