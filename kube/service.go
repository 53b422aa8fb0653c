package kube

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"time"

	"github.com/netloom/netloom/lb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// CachedService is what the agent caches of a Service: its identity and
// the service as load balancing reads it, translated once when the object
// arrives (Service, without the parts that depend on the pools and the
// proxy mode), with what the Writer reads of its status. A corev1.Service
// is 640 bytes before its spec's ports, maps and strings; with 10,000
// services the cached API objects were 12 MB of a node's heap. A plain
// service (ClusterIP or headless, a selector and ports, nothing else set:
// most of a cluster's) keeps only those fields (plainService), not a
// whole lb.Service, which the Source copies into the snapshot anyway.
//
// In JSON (the saved view) it is its identity, the translated lb.Service
// and the fields below; it also reads a Service API object, as views
// saved before it hold them.
type CachedService struct {
	Meta
	// full is the translation (Assigned.Pool and ProxyElsewhere unset)
	// unless it is plain; its Selector is shared with other services of
	// the same selector (labelMaps).
	full  *lb.Service
	plain plainService
	// Err is why netloom cannot serve the service ("" when it can).
	Err string
	// Proxy is the service's ProxyNameLabel, Labelled whether it has one.
	Proxy    string
	Labelled bool
	// Ours: a LoadBalancer service whose address netloom allocates
	// (OurLoadBalancer).
	Ours bool
	// Class is spec.loadBalancerClass ("" when unset).
	Class string
	// Ingress is status.loadBalancer.ingress.
	Ingress []corev1.LoadBalancerIngress
}

// plainService is what a plain service's translation holds besides its
// identity: lb.Service{Namespace, Name, Type, Selector, Ports, ClusterIP,
// Headless, Created: {Wall: created, Node: UID}, Assigned: {ClusterIP}}.
type plainService struct {
	typ       string
	selector  map[string]string
	ports     []lb.ServicePort
	clusterIP netip.Addr
	created   int64
	headless  bool
}

// expand is the lb.Service of a plain service whose identity is m.
func (p *plainService) expand(m *Meta) lb.Service {
	return lb.Service{Namespace: m.Namespace, Name: m.Name, Type: p.typ, Selector: p.selector, Ports: p.ports,
		ClusterIP: p.clusterIP, Headless: p.headless, Created: lb.Version{Wall: p.created, Node: string(m.UID)},
		Assigned: lb.Assignment{ClusterIP: p.clusterIP}}
}

// setLB keeps s, as plainService when that gives s back exactly.
func (c *CachedService) setLB(s lb.Service) {
	p := plainService{typ: s.Type, selector: s.Selector, ports: s.Ports, clusterIP: s.ClusterIP, created: s.Created.Wall, headless: s.Headless}
	if reflect.DeepEqual(p.expand(&c.Meta), s) {
		c.plain, c.full = p, nil
		return
	}
	c.plain, c.full = plainService{}, &s
}

// LB is the translated service, Assigned.Pool and ProxyElsewhere unset
// (the zero Service when Err is set).
func (c *CachedService) LB() lb.Service {
	if c.full != nil {
		return *c.full
	}
	if c.Err != "" {
		return lb.Service{}
	}
	return c.plain.expand(&c.Meta)
}

// GetObjectKind implements runtime.Object: a cached object has no kind
// (the informer's objects come without one).
func (c *CachedService) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// cacheService makes the CachedService the cache keeps of svc.
func cacheService(svc *corev1.Service) *CachedService {
	out := &CachedService{
		Meta:    metaOf(&svc.ObjectMeta),
		Ours:    OurLoadBalancer(svc),
		Ingress: svc.Status.LoadBalancer.Ingress,
	}
	out.Proxy, out.Labelled = svc.Labels[ProxyNameLabel]
	if c := svc.Spec.LoadBalancerClass; c != nil {
		out.Class = *c
	}
	s, err := translateService(svc)
	if err != nil {
		out.Err = err.Error()
		return out
	}
	s.Selector = internMap(&labelMaps, s.Selector)
	out.setLB(s)
	return out
}

// Service is the service as load balancing sees it with mode and pools
// (Service of the API object).
func (c *CachedService) Service(mode ProxyMode, pools []lb.Pool) (lb.Service, error) {
	if c.Err != "" {
		return lb.Service{}, errors.New(c.Err)
	}
	s := c.LB()
	s.ProxyElsewhere = !mode.proxies(c.Proxy, c.Labelled)
	s.Assigned.Pool = poolOf(s.Assigned.VIP, pools)
	return s, nil
}

// API is the service as an API object with what netloom keeps of it, for
// `netloom get` and the dashboard: identity, creation time, the
// ProxyNameLabel and pool annotation, the spec load balancing reads, and
// status.loadBalancer.ingress (other labels and annotations, and the spec
// of a service netloom cannot serve, are not kept).
func (c *CachedService) API() *corev1.Service {
	out := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: c.Name, Namespace: c.Namespace, UID: c.UID, ResourceVersion: c.ResourceVersion}}
	if c.Labelled {
		out.Labels = map[string]string{ProxyNameLabel: c.Proxy}
	}
	out.Status.LoadBalancer.Ingress = c.Ingress
	if c.Class != "" {
		out.Spec.LoadBalancerClass = &c.Class
	}
	if c.Err != "" {
		return out
	}
	s := c.LB()
	out.CreationTimestamp = metav1.NewTime(time.UnixMilli(s.Created.Wall))
	if s.Pool != "" {
		out.Annotations = map[string]string{lb.PoolAnnotation: s.Pool}
	}
	sp := &out.Spec
	sp.Type = corev1.ServiceType(s.Type)
	if c.Class != "" && !c.Ours {
		sp.Type = corev1.ServiceTypeLoadBalancer // translated as ClusterIP
	}
	sp.Selector = s.Selector
	switch {
	case s.Headless:
		sp.ClusterIP, sp.ClusterIPs = corev1.ClusterIPNone, []string{corev1.ClusterIPNone}
	case s.ClusterIP.IsValid():
		sp.ClusterIP = s.ClusterIP.String()
		sp.ClusterIPs = []string{sp.ClusterIP}
	}
	for _, p := range s.Ports {
		sp.Ports = append(sp.Ports, corev1.ServicePort{Name: p.Name, Protocol: corev1.Protocol(p.Protocol), Port: int32(p.Port),
			TargetPort: p.TargetPort, NodePort: int32(p.NodePort)})
	}
	for _, a := range s.ExternalIPs {
		sp.ExternalIPs = append(sp.ExternalIPs, a.String())
	}
	if s.LoadBalancerIP.IsValid() {
		sp.LoadBalancerIP = s.LoadBalancerIP.String()
	}
	for _, r := range s.SourceRanges {
		sp.LoadBalancerSourceRanges = append(sp.LoadBalancerSourceRanges, r.String())
	}
	if s.SessionAffinity {
		sp.SessionAffinity = corev1.ServiceAffinityClientIP
		if s.AffinityTimeout > 0 {
			t := int32(s.AffinityTimeout / time.Second)
			sp.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &t}}
		}
	}
	sp.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicy(s.ExternalTrafficPolicy)
	if s.InternalTrafficPolicy == lb.PolicyLocal {
		local := corev1.ServiceInternalTrafficPolicyLocal
		sp.InternalTrafficPolicy = &local
	}
	sp.PublishNotReadyAddresses = s.PublishNotReady
	sp.HealthCheckNodePort = int32(s.HealthCheckNodePort)
	if sp.Type == corev1.ServiceTypeLoadBalancer && !s.NodePorts {
		no := false
		sp.AllocateLoadBalancerNodePorts = &no
	}
	return out
}

// sameIngress reports whether status.loadBalancer.ingress in holds vip
// alone (no ingress when vip is invalid).
func sameIngress(in []corev1.LoadBalancerIngress, vip netip.Addr) bool {
	if !vip.IsValid() {
		return len(in) == 0
	}
	return len(in) == 1 && in[0].IP == vip.String() && in[0].Hostname == ""
}

// cachedJSON is a CachedService in JSON.
type cachedJSON struct {
	Meta     Meta                         `json:"metadata"`
	Class    string                       `json:"class,omitempty"`
	LB       *lb.Service                  `json:"lb,omitempty"`
	Err      string                       `json:"err,omitempty"`
	Proxy    string                       `json:"proxy,omitempty"`
	Labelled bool                         `json:"labelled,omitempty"`
	Ours     bool                         `json:"ours,omitempty"`
	Ingress  []corev1.LoadBalancerIngress `json:"ingress,omitempty"`
}

// MarshalJSON writes the service with its translation whole.
func (c *CachedService) MarshalJSON() ([]byte, error) {
	j := cachedJSON{Meta: c.Meta, Class: c.Class, Err: c.Err, Proxy: c.Proxy, Labelled: c.Labelled, Ours: c.Ours, Ingress: c.Ingress}
	if c.Err == "" {
		s := c.LB()
		j.LB = &s
	}
	return json.Marshal(j)
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
	var j cachedJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*c = CachedService{Meta: j.Meta, Class: j.Class, Err: j.Err, Proxy: j.Proxy, Labelled: j.Labelled, Ours: j.Ours, Ingress: j.Ingress}
	if j.LB != nil && j.Err == "" {
		j.LB.Selector = internMap(&labelMaps, j.LB.Selector)
		c.setLB(*j.LB)
	}
	return nil
}

// DeepCopyObject implements runtime.Object, as the informer's cache needs.
// The translated service's slices and maps are shared: nothing writes
// them after cacheService made them.
func (c *CachedService) DeepCopyObject() runtime.Object {
	out := *c
	return &out
}
