package kube

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// strip is the informers' transform: it drops what netloom never reads
// before an object is cached (managedFields everywhere; of a pod, all but
// its identity, labels, node, host networking, container ports, phase,
// addresses and Ready condition), so that the caches of a large cluster
// stay small. Objects it does not know pass unchanged.
func strip(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return stripPod(o), nil
	case *corev1.Service:
		o.ManagedFields = nil
		delete(o.Annotations, corev1.LastAppliedConfigAnnotation)
	case *corev1.Namespace:
		o.ManagedFields = nil
		o.Annotations = nil
		o.Spec, o.Status = corev1.NamespaceSpec{}, corev1.NamespaceStatus{}
	case *networkingv1.NetworkPolicy:
		o.ManagedFields = nil
		delete(o.Annotations, corev1.LastAppliedConfigAnnotation)
	case *discoveryv1.EndpointSlice:
		return stripSlice(o), nil
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

// stripPod keeps of a pod what policy and endpoints read.
func stripPod(p *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{
		TypeMeta: p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			Labels: p.Labels, DeletionTimestamp: p.DeletionTimestamp, CreationTimestamp: p.CreationTimestamp,
		},
		Spec: corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status: corev1.PodStatus{
			Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs,
		},
	}
	for _, c := range p.Spec.Containers {
		var ports []corev1.ContainerPort
		for _, cp := range c.Ports {
			if cp.Name != "" {
				ports = append(ports, corev1.ContainerPort{Name: cp.Name, ContainerPort: cp.ContainerPort, Protocol: cp.Protocol})
			}
		}
		if len(ports) > 0 {
			out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: c.Name, Ports: ports})
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return out
}

// stripSlice keeps of an EndpointSlice what Endpoints reads: its identity,
// service-name label, address type and ports, and of each endpoint its
// first address, conditions, node and pod (kind, namespace, name). A
// cluster's slices hold an entry per pod of every service, so their
// owner references, hints and the pods' UIDs would be most of the cache.
// What endpoints share is shared, not copied per endpoint: the condition
// values, the pod kind, the node names of the slice, and a pod namespace
// equal to the slice's is left out (Endpoints reads the slice's). Cached
// objects are read-only (client-go's rule), so sharing is safe.
func stripSlice(sl *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	out := &discoveryv1.EndpointSlice{
		TypeMeta: sl.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: sl.Name, Namespace: sl.Namespace, UID: sl.UID, ResourceVersion: sl.ResourceVersion,
		},
		AddressType: sl.AddressType,
		Ports:       sl.Ports,
		Endpoints:   make([]discoveryv1.Endpoint, len(sl.Endpoints)),
	}
	if svc, ok := sl.Labels[discoveryv1.LabelServiceName]; ok {
		out.Labels = map[string]string{discoveryv1.LabelServiceName: svc}
	}
	var nodes []*string // the slice's distinct node names
	for i, e := range sl.Endpoints {
		o := discoveryv1.Endpoint{Conditions: discoveryv1.EndpointConditions{
			Ready: sharedBool(e.Conditions.Ready), Serving: sharedBool(e.Conditions.Serving), Terminating: sharedBool(e.Conditions.Terminating),
		}}
		if len(e.Addresses) > 0 {
			o.Addresses = []string{e.Addresses[0]}
		}
		if n := e.NodeName; n != nil {
			at := slices.IndexFunc(nodes, func(m *string) bool { return *m == *n })
			if at < 0 {
				at, nodes = len(nodes), append(nodes, n)
			}
			o.NodeName = nodes[at]
		}
		if r := e.TargetRef; r != nil {
			ref := &corev1.ObjectReference{Kind: r.Kind, Name: r.Name}
			if r.Kind == "Pod" {
				ref.Kind = "Pod" // one string for all, not one per endpoint
			}
			if r.Namespace != sl.Namespace {
				ref.Namespace = r.Namespace
			}
			o.TargetRef = ref
		}
		out.Endpoints[i] = o
	}
	return out
}

var sharedTrue, sharedFalse = true, false

// sharedBool is b's value as one of two shared pointers.
func sharedBool(b *bool) *bool {
	switch {
	case b == nil:
		return nil
	case *b:
		return &sharedTrue
	}
	return &sharedFalse
}
