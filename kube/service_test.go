package kube

import (
	"encoding/json"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/cache"
)

// A cached service gives back exactly its translation, kept plain when it
// is a plain ClusterIP or headless service and whole otherwise; in JSON it
// reads back the same.
func TestCachedServiceForms(t *testing.T) {
	plain := func(name string) *corev1.Service {
		s := lbService(name)
		s.Spec.Type = corev1.ServiceTypeClusterIP
		s.Spec.Ports[0].NodePort = 0
		return s
	}
	cases := map[string]struct {
		svc   *corev1.Service
		plain bool
	}{
		"clusterIP": {plain("a"), true},
		"headless": {func() *corev1.Service {
			s := plain("b")
			s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ClusterIPNone, nil
			return s
		}(), true},
		"no selector": {func() *corev1.Service { s := plain("c"); s.Spec.Selector = nil; return s }(), true},
		"numbered target port": {func() *corev1.Service {
			s := plain("d")
			s.Spec.Ports[0].TargetPort = intstr.FromInt32(8080)
			return s
		}(), true},
		"load balancer": {lbService("e"), false},
		"node port":     {func() *corev1.Service { s := plain("f"); s.Spec.Type = corev1.ServiceTypeNodePort; return s }(), false},
		"external IPs":  {func() *corev1.Service { s := plain("g"); s.Spec.ExternalIPs = []string{"192.0.2.7"}; return s }(), false},
		"affinity": {func() *corev1.Service {
			s := plain("h")
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			return s
		}(), false},
		"publishNotReady": {func() *corev1.Service { s := plain("i"); s.Spec.PublishNotReadyAddresses = true; return s }(), false},
		"internal local": {func() *corev1.Service {
			s := plain("j")
			s.Spec.InternalTrafficPolicy = new(corev1.ServiceInternalTrafficPolicyLocal)
			return s
		}(), false},
		"other class": {func() *corev1.Service {
			s := lbService("l")
			s.Spec.LoadBalancerClass = new("example.com/lb")
			return s
		}(), false},
		"no node ports": {func() *corev1.Service {
			s := lbService("m")
			s.Spec.AllocateLoadBalancerNodePorts = new(false)
			s.Spec.Ports[0].NodePort = 0
			s.Spec.LoadBalancerSourceRanges = []string{"192.0.2.0/24"}
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			s.Spec.HealthCheckNodePort = 32000
			s.Labels = map[string]string{ProxyNameLabel: "other"}
			return s
		}(), false},
		"pool annotation": {func() *corev1.Service {
			s := lbService("k")
			s.Annotations = map[string]string{"netloom.io/address-pool": "lan"}
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.168.1.241"}}
			return s
		}(), false},
	}
	for name, tc := range cases {
		tc.svc.ResourceVersion = "7"
		c := cacheService(tc.svc)
		want, err := translateService(tc.svc)
		if err != nil || c.Err != "" {
			t.Fatalf("%s: %v %q", name, err, c.Err)
		}
		want.Selector = internMap(&labelMaps, want.Selector)
		if got := c.LB(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: cached %+v, want %+v", name, got, want)
		}
		if (c.full == nil) != tc.plain {
			t.Errorf("%s: kept plain %v, want %v", name, c.full == nil, tc.plain)
		}
		// As an API object (netloom get) it caches back to the same.
		if again := cacheService(c.API()); !reflect.DeepEqual(again, c) {
			t.Errorf("%s: the API object %+v caches as %+v, want %+v", name, c.API(), again, c)
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var back CachedService
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(&back, c) {
			t.Errorf("%s: JSON %s read back as %+v, %v; want %+v", name, b, back, err, c)
		}
		// The informer's key and its resourceVersion check read the identity.
		m, err := meta.Accessor(c)
		key, kerr := cache.MetaNamespaceKeyFunc(c)
		if err != nil || kerr != nil || m.GetResourceVersion() != "7" || key != "default/"+tc.svc.Name {
			t.Errorf("%s: accessor %v %v, key %q %v", name, m, err, key, kerr)
		}
	}
	// One that cannot be served keeps its reason, in JSON too.
	bad := lbService("bad")
	bad.Spec.ClusterIP = "not-an-address"
	c := cacheService(bad)
	b, _ := json.Marshal(c)
	var back CachedService
	if err := json.Unmarshal(b, &back); err != nil || back.Err == "" || back.Err != c.Err {
		t.Errorf("a service that does not translate: %+v from %s, want its reason", back, b)
	}
	if _, err := back.Service(ProxyReplace, nil); err == nil {
		t.Error("Service of a service that does not translate gave no error")
	}
}
