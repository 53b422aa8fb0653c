package demo

import (
	"context"
	"fmt"

	"github.com/netloom/netloom/kube"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RunAPIPod does for pod ns/name of the Kubernetes API what a kubelet on
// node n does once the pod is bound to n (its object must exist): the CNI
// ADD with the pod's UID, then the pod's status (Running, its address,
// Ready).
func (c *Cluster) RunAPIPod(ctx context.Context, client kube.API, n *Node, ns, name string) (*Pod, error) {
	obj := &corev1.Pod{}
	if err := client.Get(ctx, kube.Ref{Resource: "pods", Namespace: ns, Name: name}, obj); err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", ns, name, err)
	}
	p, err := c.AddKubePod(ctx, n, ns, name, string(obj.UID))
	if err != nil {
		return nil, err
	}
	if err := SetPodStatus(ctx, client, ns, name, p.IP.String(), true); err != nil {
		return nil, err
	}
	return p, nil
}

// SetPodStatus writes a pod's status as the kubelet does: Running, the
// address ip, and the Ready condition.
func SetPodStatus(ctx context.Context, client kube.API, ns, name, ip string, ready bool) error {
	obj := &corev1.Pod{}
	if err := client.Get(ctx, kube.Ref{Resource: "pods", Namespace: ns, Name: name}, obj); err != nil {
		return fmt.Errorf("pod %s/%s: %w", ns, name, err)
	}
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	obj.Status.Phase = corev1.PodRunning
	obj.Status.PodIP, obj.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	obj.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: cond, LastTransitionTime: metav1.Now()}}
	if err := client.Update(ctx, kube.Ref{Resource: "pods", Namespace: ns, Name: name, Subresource: "status"}, obj, nil); err != nil {
		return fmt.Errorf("status of pod %s/%s: %w", ns, name, err)
	}
	return nil
}
