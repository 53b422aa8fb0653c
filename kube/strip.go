package kube

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// strip is the informers' transform: it drops what netloom never reads
// before an object is cached (managedFields everywhere; a pod becomes a
// Pod, a Service a CachedService and an EndpointSlice a Slice, which keep
// only what netloom reads),
// so that the caches of a large cluster stay small. Objects it does not
// know pass unchanged.
func strip(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return cachePod(o), nil // a *Pod
	case *corev1.Service:
		return cacheService(o), nil // a *CachedService
	case *corev1.Namespace:
		o.ManagedFields = nil
		o.Annotations = nil
		o.Spec, o.Status = corev1.NamespaceSpec{}, corev1.NamespaceStatus{}
	case *networkingv1.NetworkPolicy:
		o.ManagedFields = nil
		delete(o.Annotations, corev1.LastAppliedConfigAnnotation)
		internSelectors(&o.Spec)
	case *discoveryv1.EndpointSlice:
		return stripSlice(o), nil // a *Slice
	case *networkingv1.ServiceCIDR:
		o.ManagedFields = nil
	case *unstructured.Unstructured:
		o.SetManagedFields(nil)
	case *corev1.Node:
		// Of a Node netloom reads its pod subnet; its status (images,
		// conditions) is most of its size.
		return &corev1.Node{
			TypeMeta:   o.TypeMeta,
			ObjectMeta: metav1.ObjectMeta{Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion},
			Spec:       corev1.NodeSpec{PodCIDR: o.Spec.PodCIDR, PodCIDRs: o.Spec.PodCIDRs},
		}, nil
	}
	return obj, nil
}

// internSelectors makes the matchLabels of every selector of a policy the
// shared map of its content (labelMaps).
func internSelectors(spec *networkingv1.NetworkPolicySpec) {
	one := func(sel *metav1.LabelSelector) {
		if sel != nil {
			sel.MatchLabels = internMap(&labelMaps, sel.MatchLabels)
		}
	}
	peers := func(ps []networkingv1.NetworkPolicyPeer) {
		for i := range ps {
			one(ps[i].PodSelector)
			one(ps[i].NamespaceSelector)
		}
	}
	one(&spec.PodSelector)
	for i := range spec.Ingress {
		peers(spec.Ingress[i].From)
	}
	for i := range spec.Egress {
		peers(spec.Egress[i].To)
	}
}
