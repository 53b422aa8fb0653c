package kube

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
}
