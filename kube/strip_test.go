package kube

import (
	"bytes"
	"fmt"
	"reflect"
	goruntime "runtime"
	"strconv"
	"testing"

	"github.com/netloom/netloom/lb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// A stripped EndpointSlice gives the same endpoints as the whole one and
// keeps nothing else of size.
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
		},
	}
	want := Endpoints([]*discoveryv1.EndpointSlice{full.DeepCopy()})
	got, err := strip(full.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	sl := got.(*discoveryv1.EndpointSlice)
	if eps := Endpoints([]*discoveryv1.EndpointSlice{sl}); !reflect.DeepEqual(eps, want) {
		t.Errorf("endpoints of the stripped slice:\n%+v\nwant\n%+v", eps, want)
	}
	if sl.Name != "web-abc" || sl.Namespace != "default" || sl.ResourceVersion != "42" || sl.UID != "u-slice" {
		t.Errorf("identity: %+v", sl.ObjectMeta)
	}
	if len(sl.Labels) != 1 || sl.Annotations != nil || sl.OwnerReferences != nil || sl.ManagedFields != nil {
		t.Errorf("metadata kept: %+v", sl.ObjectMeta)
	}
	e := sl.Endpoints[0]
	if e.Hostname != nil || e.Zone != nil || e.Hints != nil || e.TargetRef.UID != "" || e.TargetRef.ResourceVersion != "" {
		t.Errorf("endpoint kept: %+v", e)
	}
	if len(sl.Endpoints[1].Addresses) != 1 {
		t.Errorf("second address kept: %v", sl.Endpoints[1].Addresses)
	}
	// Shared, not copied per endpoint.
	e2 := sl.Endpoints[2]
	if e.NodeName != e2.NodeName || e.Conditions.Ready != e2.Conditions.Ready {
		t.Errorf("equal node names or conditions not shared: %p %p, %p %p", e.NodeName, e2.NodeName, e.Conditions.Ready, e2.Conditions.Ready)
	}
	if e.TargetRef.Namespace != "" || e2.TargetRef.Namespace != "other" {
		t.Errorf("pod namespaces %q, %q: want the slice's left out, another kept", e.TargetRef.Namespace, e2.TargetRef.Namespace)
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
		cache := make([]*discoveryv1.EndpointSlice, 0, slicesN)
		for _, w := range wire {
			obj, _, err := dec.Decode(w, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			s, _ := strip(obj)
			cache = append(cache, s.(*discoveryv1.EndpointSlice))
		}
		eps := make([][]lb.Endpoint, 0, slicesN)
		for _, sl := range cache {
			eps = append(eps, serviceEndpoints([]*discoveryv1.EndpointSlice{sl}))
		}
		goruntime.GC()
		goruntime.ReadMemStats(&after)
		kept = append(kept, cache, eps)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(slicesN*per), "B/endpoint")
	}
	_ = kept
}
