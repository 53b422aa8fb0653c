package kube

import (
	"encoding/json"
	"net/netip"
	"slices"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/mesh/objects"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Pod is what the agent caches of a Pod: its identity and labels, and
// what policy and endpoints read of its spec and status, already in the
// form they read it. A corev1.Pod is 1,240 bytes before its containers
// and conditions, however few fields are set; with 5,000 pods the cached
// API objects were 12.5 MB of a node's heap, this is a few hundred bytes
// a pod. In JSON (the saved view, `netloom get pods`) it is the API
// object with those fields, and it reads one.
type Pod struct {
	metav1.TypeMeta
	// ObjectMeta keeps name, namespace, UID, resourceVersion, labels and
	// the creation and deletion timestamps.
	metav1.ObjectMeta
	NodeName    string
	HostNetwork bool
	// Ready is the Ready condition (no condition counts as ready).
	Ready bool
	Phase corev1.PodPhase
	// IP is the first IPv4 address of status.podIPs (or podIP).
	IP netip.Addr
	// Ports are the pod's named container ports.
	Ports []policy.NamedPort
}

// cachePod makes the Pod the cache keeps of p.
func cachePod(p *corev1.Pod) *Pod {
	ready, _ := objects.PodConditions(p)
	out := &Pod{
		TypeMeta: p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			Labels: internMap(&labelMaps, p.Labels), DeletionTimestamp: p.DeletionTimestamp, CreationTimestamp: p.CreationTimestamp,
		},
		NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork, Ready: ready, Phase: p.Status.Phase,
		IP: statusIPv4(p),
	}
	if ports := cluster.NamedPorts(p); len(ports) > 0 {
		out.Ports = internPorts(&podPorts, slices.Clip(ports))
	}
	return out
}

// API is the pod as an API object with the fields Pod keeps: the named
// ports in one container, "app" (their containers' names are not kept).
func (p *Pod) API() *corev1.Pod {
	out := &corev1.Pod{
		TypeMeta:   p.TypeMeta,
		ObjectMeta: *p.ObjectMeta.DeepCopy(),
		Spec:       corev1.PodSpec{NodeName: p.NodeName, HostNetwork: p.HostNetwork},
		Status:     corev1.PodStatus{Phase: p.Phase},
	}
	if len(p.Ports) > 0 {
		c := corev1.Container{Name: "app"}
		for _, np := range p.Ports {
			c.Ports = append(c.Ports, corev1.ContainerPort{Name: np.Name, ContainerPort: int32(np.Port), Protocol: corev1.Protocol(np.Protocol)})
		}
		out.Spec.Containers = []corev1.Container{c}
	}
	if p.IP.IsValid() {
		out.Status.PodIP = p.IP.String()
		out.Status.PodIPs = []corev1.PodIP{{IP: out.Status.PodIP}}
	}
	ready := corev1.ConditionFalse
	if p.Ready {
		ready = corev1.ConditionTrue
	}
	out.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}
	return out
}

// MarshalJSON writes the pod as its API object (API).
func (p *Pod) MarshalJSON() ([]byte, error) { return json.Marshal(p.API()) }

// UnmarshalJSON reads an API object (a saved view's pod).
func (p *Pod) UnmarshalJSON(b []byte) error {
	var api corev1.Pod
	if err := json.Unmarshal(b, &api); err != nil {
		return err
	}
	*p = *cachePod(&api)
	return nil
}

// DeepCopyObject implements runtime.Object, as the informer's cache needs.
// The ports are shared (with other pods of the same ports, podPorts):
// nothing writes them after cachePod made them.
// The labels are copied (they may be shared with other pods, labelMaps).
func (p *Pod) DeepCopyObject() runtime.Object {
	c := *p
	p.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	return &c
}
