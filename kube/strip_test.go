package kube

import (
	"bytes"
	"fmt"
	"net/netip"
	"reflect"
	goruntime "runtime"
	"strconv"
	"testing"
	"unsafe"

	"github.com/netloom/netloom/lb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/cache"
)

// A stripped EndpointSlice is its identity, its service and its
// endpoints as the load balancer reads them, and keeps nothing else.
func TestStripSlice(t *testing.T) {
	yes, no := true, false
	node, host, zone := "n1", "web-0", "z1"
	port, name := int32(8080), "http"
	full := &discoveryv1.EndpointSlice{
		TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "default", Name: "web-abc", UID: "u-slice", ResourceVersion: "42", GenerateName: "web-",
			Labels:          map[string]string{discoveryv1.LabelServiceName: "web", discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"},
			Annotations:     map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": "now"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "Service", Name: "web", UID: "u-svc"}},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager"}},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.244.1.5"}, Conditions: discoveryv1.EndpointConditions{Ready: &yes}, NodeName: &node,
				Hostname: &host, Zone: &zone, Hints: &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: zone}}},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "web-0", UID: "u-pod", ResourceVersion: "7"}},
			{Addresses: []string{"10.244.2.5", "10.244.2.6"}, Conditions: discoveryv1.EndpointConditions{Ready: &no, Terminating: &yes}},
			{Addresses: []string{"10.244.1.6"}, Conditions: discoveryv1.EndpointConditions{Ready: new(true), Serving: new(true)}, NodeName: new("n1"),
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "other", Name: "web-1"}},
			{Addresses: []string{"10.244.1.5"}, NodeName: new("n9")},  // listed twice: the first counts
			{Addresses: []string{"fd00::1"}},                          // not IPv4
			{Conditions: discoveryv1.EndpointConditions{Ready: &yes}}, // no address
		},
	}
	got, err := strip(full.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	sl := got.(*Slice)
	if sl.Name != "web-abc" || sl.Namespace != "default" || sl.ResourceVersion != "42" || sl.UID != "u-slice" || sl.Service != "web" || sl.AddressType != discoveryv1.AddressTypeIPv4 {
		t.Errorf("identity: %+v %q %q", sl.Meta, sl.Service, sl.AddressType)
	}
	// The informer reads the identity through ObjectMetaAccessor.
	if m, err := meta.Accessor(sl); err != nil || m.GetName() != "web-abc" || m.GetNamespace() != "default" || m.GetResourceVersion() != "42" || m.GetUID() != "u-slice" {
		t.Errorf("meta.Accessor: %v, %v", m, err)
	}
	if key, err := cache.MetaNamespaceKeyFunc(sl); err != nil || key != "default/web-abc" {
		t.Errorf("informer key %q, %v", key, err)
	}
	ports := map[string]uint16{"http": 8080}
	want := []lb.Endpoint{
		{IP: netip.MustParseAddr("10.244.2.5"), Serving: false, Terminating: true, ServicePorts: ports}, // no pod sorts first
		{PodNamespace: "default", PodName: "web-0", IP: netip.MustParseAddr("10.244.1.5"), Node: "n1", Ready: true, Serving: true, ServicePorts: ports},
		{PodNamespace: "other", PodName: "web-1", IP: netip.MustParseAddr("10.244.1.6"), Node: "n1", Ready: true, Serving: true, ServicePorts: ports},
	}
	if !reflect.DeepEqual(sl.Endpoints, want) {
		t.Errorf("endpoints:\n%+v\nwant\n%+v", sl.Endpoints, want)
	}
	// Shared, not copied per endpoint: node names, the slice's namespace,
	// the port map; and a service of one slice has the slice's own list.
	e1, e2 := sl.Endpoints[1], sl.Endpoints[2]
	if unsafe.StringData(e1.Node) != unsafe.StringData(e2.Node) || unsafe.StringData(e1.PodNamespace) != unsafe.StringData(sl.Namespace) {
		t.Error("equal node names or the slice's namespace are copies")
	}
	if reflect.ValueOf(e1.ServicePorts).UnsafePointer() != reflect.ValueOf(e2.ServicePorts).UnsafePointer() {
		t.Error("each endpoint has its own port map")
	}
	if eps := serviceEndpoints([]*Slice{sl}); &eps[0] != &sl.Endpoints[0] {
		t.Error("a service of one slice copies the slice's endpoints")
	}
	// The informer's cache copies objects it hands out (DeepCopyObject).
	cp := sl.DeepCopyObject().(*Slice)
	if !reflect.DeepEqual(cp, sl) || &cp.Endpoints[0] == &sl.Endpoints[0] {
		t.Errorf("DeepCopyObject = %+v", cp)
	}
	// Not IPv4: identity only.
	v6 := full.DeepCopy()
	v6.AddressType = discoveryv1.AddressTypeIPv6
	if s := stripSlice(v6); s.Endpoints != nil || s.Service != "web" {
		t.Errorf("IPv6 slice: %+v", s)
	}
}

// BenchmarkSliceCacheHeap is what the cache of 1,000 EndpointSlices of 10
// endpoints each keeps on the heap, decoded from protobuf as the informer
// gets them and stripped, and what the services' endpoints computed from
// them keep: bytes per endpoint, after a collection.
func BenchmarkSliceCacheHeap(b *testing.B) {
	const slicesN, per = 1000, 10
	var wire [][]byte
	info, _ := runtime.SerializerInfoForMediaType(codecs().SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	enc := codecs().EncoderForVersion(info.Serializer, discoveryv1.SchemeGroupVersion)
	dec := codecs().WithoutConversion().DecoderToVersion(info.Serializer, discoveryv1.SchemeGroupVersion)
	port, yes := int32(8080), true
	for i := range slicesN {
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns" + strconv.Itoa(i%5), Name: "svc-" + strconv.Itoa(i) + "-abcde", UID: types.UID("slice-uid-" + strconv.Itoa(i)),
				ResourceVersion: strconv.Itoa(1000 + i), GenerateName: "svc-" + strconv.Itoa(i) + "-",
				Labels:          map[string]string{discoveryv1.LabelServiceName: "svc-" + strconv.Itoa(i), discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: "svc-" + strconv.Itoa(i), UID: "svc-uid"}}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: new(""), Port: &port, Protocol: new(corev1.ProtocolTCP)}},
		}
		for j := range per {
			p := (i*per + j) % 5000
			sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{fmt.Sprintf("10.244.%d.%d", 100+p/250, p%250+1)},
				Conditions: discoveryv1.EndpointConditions{Ready: &yes, Serving: &yes, Terminating: new(false)},
				NodeName:   new("node" + strconv.Itoa(1+p%2)),
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: sl.Namespace, Name: "pod-" + strconv.Itoa(p), UID: types.UID("pod-uid-" + strconv.Itoa(p))},
			})
		}
		var buf bytes.Buffer
		if err := enc.Encode(sl, &buf); err != nil {
			b.Fatal(err)
		}
		wire = append(wire, buf.Bytes())
	}
	var kept []any
	for b.Loop() {
		kept = nil
		goruntime.GC()
		var before, after goruntime.MemStats
		goruntime.ReadMemStats(&before)
		cache := make([]*Slice, 0, slicesN)
		for _, w := range wire {
			obj, _, err := dec.Decode(w, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			s, _ := strip(obj)
			cache = append(cache, s.(*Slice))
		}
		eps := make([][]lb.Endpoint, 0, slicesN)
		for _, sl := range cache {
			eps = append(eps, serviceEndpoints([]*Slice{sl}))
		}
		goruntime.GC()
		goruntime.ReadMemStats(&after)
		kept = append(kept, cache, eps)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(slicesN*per), "B/endpoint")
	}
	_ = kept
}

// BenchmarkPodCacheHeap is the heap the pod cache keeps per pod: Pods as
// the API server sends them to the informer (labels, two named container
// ports, a running status with an address and conditions), decoded from
// protobuf and stripped.
func BenchmarkPodCacheHeap(b *testing.B) {
	const podsN = 5000
	var wire [][]byte
	info, _ := runtime.SerializerInfoForMediaType(codecs().SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	enc := codecs().EncoderForVersion(info.Serializer, corev1.SchemeGroupVersion)
	dec := codecs().WithoutConversion().DecoderToVersion(info.Serializer, corev1.SchemeGroupVersion)
	for i := range podsN {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns" + strconv.Itoa(i%5), Name: "pod-" + strconv.Itoa(i), UID: types.UID("pod-uid-" + strconv.Itoa(i)),
				ResourceVersion: strconv.Itoa(1000 + i), CreationTimestamp: metav1.Now(),
				Labels: map[string]string{"app": "app-" + strconv.Itoa(i%50), "tier": "web"}},
			Spec: corev1.PodSpec{NodeName: "node" + strconv.Itoa(1+i%2), Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}, {Name: "metrics", ContainerPort: 9090, Protocol: corev1.ProtocolTCP}}}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.244.%d.%d", 100+i/250, i%250+1),
				Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
		}
		p.Status.PodIPs = []corev1.PodIP{{IP: p.Status.PodIP}}
		var buf bytes.Buffer
		if err := enc.Encode(p, &buf); err != nil {
			b.Fatal(err)
		}
		wire = append(wire, buf.Bytes())
	}
	var kept []any
	for b.Loop() {
		kept = nil
		goruntime.GC()
		var before, after goruntime.MemStats
		goruntime.ReadMemStats(&before)
		cache := make([]any, 0, podsN)
		for _, w := range wire {
			obj, _, err := dec.Decode(w, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			s, _ := strip(obj)
			cache = append(cache, s)
		}
		goruntime.GC()
		goruntime.ReadMemStats(&after)
		kept = append(kept, cache)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/podsN, "B/pod")
	}
	_ = kept
}

// BenchmarkServiceCacheHeap is the heap the Service cache keeps per
// service: ClusterIP services as the API server sends them to the
// informer (a selector, one port, a cluster IP, a creation time),
// decoded from protobuf and stripped.
func BenchmarkServiceCacheHeap(b *testing.B) {
	const svcsN = 10000
	var wire [][]byte
	info, _ := runtime.SerializerInfoForMediaType(codecs().SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	enc := codecs().EncoderForVersion(info.Serializer, corev1.SchemeGroupVersion)
	dec := codecs().WithoutConversion().DecoderToVersion(info.Serializer, corev1.SchemeGroupVersion)
	for i := range svcsN {
		ip := fmt.Sprintf("10.96.%d.%d", 1+i/250, 1+i%250)
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bulk-" + strconv.Itoa(i%10), Name: fmt.Sprintf("scale-%05d", i), UID: types.UID("svc-uid-" + strconv.Itoa(i)),
				ResourceVersion: strconv.Itoa(1000 + i), CreationTimestamp: metav1.Now()},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Selector: map[string]string{"svc": "s-" + strconv.Itoa(i/10%500)},
				ClusterIP: ip, ClusterIPs: []string{ip}, IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol}, SessionAffinity: corev1.ServiceAffinityNone,
				Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		}
		var buf bytes.Buffer
		if err := enc.Encode(svc, &buf); err != nil {
			b.Fatal(err)
		}
		wire = append(wire, buf.Bytes())
	}
	var kept []any
	for b.Loop() {
		kept = nil
		goruntime.GC()
		var before, after goruntime.MemStats
		goruntime.ReadMemStats(&before)
		cache := make([]any, 0, svcsN)
		for _, w := range wire {
			obj, _, err := dec.Decode(w, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			s, _ := strip(obj)
			cache = append(cache, s)
		}
		goruntime.GC()
		goruntime.ReadMemStats(&after)
		kept = append(kept, cache)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/svcsN, "B/service")
	}
	_ = kept
}

// Slices with the same ports share one port map, and node names are one
// string across slices.
func TestStripSliceShares(t *testing.T) {
	mk := func(name string, ports map[string]int32) *Slice {
		sl := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: name}}, AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}, NodeName: new(string(append([]byte(nil), "node1"...)))}}}
		for n, p := range ports {
			sl.Ports = append(sl.Ports, discoveryv1.EndpointPort{Name: new(n), Port: new(p)})
		}
		return stripSlice(sl)
	}
	a := mk("a", map[string]int32{"http": 80, "https": 443})
	b := mk("b", map[string]int32{"https": 443, "http": 80})
	c := mk("c", map[string]int32{"http": 8080, "https": 443})
	d := mk("d", map[string]int32{"http\"80": 443}) // a name that quotes
	ptr := func(s *Slice) uintptr { return reflect.ValueOf(s.Endpoints[0].ServicePorts).Pointer() }
	if ptr(a) != ptr(b) {
		t.Error("two slices with the same ports have two maps")
	}
	if ptr(a) == ptr(c) || ptr(c) == ptr(d) || !reflect.DeepEqual(c.Endpoints[0].ServicePorts, map[string]uint16{"http": 8080, "https": 443}) {
		t.Errorf("other ports share a map: %v %v %v", a.Endpoints[0].ServicePorts, c.Endpoints[0].ServicePorts, d.Endpoints[0].ServicePorts)
	}
	if unsafe.StringData(a.Endpoints[0].Node) != unsafe.StringData(c.Endpoints[0].Node) {
		t.Error("the node name of two slices is two strings")
	}
}

// BenchmarkPolicyCacheHeap is the heap the NetworkPolicy cache keeps per
// policy: 10,000 policies in 5 namespaces selecting pods by one of a few
// app labels, with peers by pod, namespace and address block, decoded
// from protobuf as the informer gets them and stripped.
func BenchmarkPolicyCacheHeap(b *testing.B) {
	const n = 10000
	var wire [][]byte
	info, _ := runtime.SerializerInfoForMediaType(codecs().SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	enc := codecs().EncoderForVersion(info.Serializer, networkingv1.SchemeGroupVersion)
	dec := codecs().WithoutConversion().DecoderToVersion(info.Serializer, networkingv1.SchemeGroupVersion)
	sel := func(k, v string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{k: v}}
	}
	tcp := corev1.ProtocolTCP
	for i := range n {
		p := &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns" + strconv.Itoa(i%5), Name: fmt.Sprintf("policy-%05d", i), UID: types.UID("uid-" + strconv.Itoa(i)),
				ResourceVersion: strconv.Itoa(1000 + i), CreationTimestamp: metav1.Now()},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "app-"+strconv.Itoa(i%5)),
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
		}
		port := intstr.FromInt32(int32(1000 + i%20000))
		peer := networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("team", "bulk"), PodSelector: sel("app", "app-"+strconv.Itoa((i+1)%5))}
		if i%3 == 1 {
			peer = networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: fmt.Sprintf("10.%d.%d.0/24", 100+i%50, i%256)}}
		}
		p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{peer},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}}}
		var buf bytes.Buffer
		if err := enc.Encode(p, &buf); err != nil {
			b.Fatal(err)
		}
		wire = append(wire, buf.Bytes())
	}
	var kept []any
	for b.Loop() {
		kept = nil
		goruntime.GC()
		var before, after goruntime.MemStats
		goruntime.ReadMemStats(&before)
		cache := make([]any, 0, n)
		for _, w := range wire {
			obj, _, err := dec.Decode(w, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			s, _ := strip(obj)
			cache = append(cache, s)
		}
		goruntime.GC()
		goruntime.ReadMemStats(&after)
		kept = append(kept, cache)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/policy")
	}
	_ = kept
}
