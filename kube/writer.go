package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/netloom/netloom/lb"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
)

// Node annotations netloom writes on its own Node (through nodes/status).
const (
	AnnotationSubnet    = "netloom.io/pod-subnet"
	AnnotationPublicKey = "netloom.io/wireguard-public-key"
	AnnotationEndpoint  = "netloom.io/wireguard-endpoint"
	// ConditionReason is the reason of the NetworkUnavailable condition
	// netloom sets.
	ConditionReason = "NetloomIsUp"
)

// Writer writes what netloom decided into the API: service load-balancer
// status, this node's annotations and condition, and events.
type Writer struct {
	Client API
	Server string
	// Node is this node's name.
	Node string
	// Timeout bounds each request (default 10s).
	Timeout time.Duration
	// Service returns the cached Service (nil when unknown).
	Service func(lb.ServiceKey) *CachedService
}

func (w *Writer) ctx() (context.Context, context.CancelFunc) {
	t := w.Timeout
	if t <= 0 {
		t = 10 * time.Second
	}
	return context.WithTimeout(context.Background(), t)
}

// Record implements lbctl.Assignments: it writes the VIP of each
// LoadBalancer service netloom serves into status.loadBalancer.ingress,
// only when it differs, with the object's resourceVersion, reading it again
// on a conflict. ClusterIPs and node ports are the API server's: nothing
// to write. Deletions need nothing: the status goes with its service.
func (w *Writer) Record(puts map[lb.ServiceKey]lb.Assignment, _ []lb.ServiceKey) error {
	var errs []error
	for k, as := range puts {
		if err := w.writeIngress(k, as.VIP); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Deleted implements lbctl.Assignments: the status lives in each service,
// so none outlives its service.
func (w *Writer) Deleted() []lb.ServiceKey { return nil }

// IngressFor is the status.loadBalancer.ingress netloom writes for vip.
func IngressFor(vip netip.Addr) []corev1.LoadBalancerIngress {
	if !vip.IsValid() {
		return nil
	}
	mode := corev1.LoadBalancerIPModeVIP
	return []corev1.LoadBalancerIngress{{IP: vip.String(), IPMode: &mode}}
}

// ingressPatch is the JSON merge patch of services/status that sets
// status.loadBalancer.ingress to vip (removes it when vip is invalid), on
// condition that the object is still at resourceVersion rv.
func ingressPatch(rv string, vip netip.Addr) ([]byte, error) {
	return json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": rv},
		"status":   map[string]any{"loadBalancer": map[string]any{"ingress": IngressFor(vip)}},
	})
}

// writeIngress patches the service's status only: an update of
// services/status with the cached object would also write its metadata,
// and the cache keeps the object stripped (no last-applied-configuration
// annotation: kubectl apply would lose it).
func (w *Writer) writeIngress(k lb.ServiceKey, vip netip.Addr) error {
	svc := w.Service(k)
	if svc == nil || !svc.Ours || sameIngress(svc.Ingress, vip) {
		return nil
	}
	ctx, cancel := w.ctx()
	defer cancel()
	rv := svc.ResourceVersion
	first := true
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if !first {
			fresh := &corev1.Service{}
			if err := w.Client.Get(ctx, Ref{Resource: "services", Namespace: k.Namespace, Name: k.Name}, fresh); err != nil {
				return err
			}
			if !OurLoadBalancer(fresh) || sameIngress(fresh.Status.LoadBalancer.Ingress, vip) {
				return nil
			}
			rv = fresh.ResourceVersion
		}
		first = false
		patch, err := ingressPatch(rv, vip)
		if err != nil {
			return err
		}
		return w.Client.Patch(ctx, Ref{Resource: "services", Namespace: k.Namespace, Name: k.Name, Subresource: "status"}, types.MergePatchType, patch)
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("write status.loadBalancer.ingress of service %s: %w", k, APIError(w.Server, err))
	}
	return nil
}

// NodeState is what netloom writes on its Node.
type NodeState struct {
	Subnet    netip.Prefix
	PublicKey string
	Endpoint  netip.AddrPort
	// NetworkReady sets NetworkUnavailable=False (the routes are up).
	NetworkReady bool
}

// NodePatch is the strategic merge patch of nodes/status for st.
func NodePatch(st NodeState, now time.Time) ([]byte, error) {
	ann := map[string]any{}
	if st.Subnet.IsValid() {
		ann[AnnotationSubnet] = st.Subnet.String()
	}
	if st.PublicKey != "" {
		ann[AnnotationPublicKey] = st.PublicKey
	}
	if st.Endpoint.IsValid() {
		ann[AnnotationEndpoint] = st.Endpoint.String()
	}
	patch := map[string]any{"metadata": map[string]any{"annotations": ann}}
	if st.NetworkReady {
		patch["status"] = map[string]any{"conditions": []corev1.NodeCondition{{
			Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, Reason: ConditionReason,
			Message: "netloom's routes and WireGuard peers are up", LastTransitionTime: metav1.NewTime(now), LastHeartbeatTime: metav1.NewTime(now),
		}}}
	}
	return json.Marshal(patch)
}

// PatchNode writes st on this node's Node object through nodes/status.
func (w *Writer) PatchNode(ctx context.Context, st NodeState) error {
	b, err := NodePatch(st, time.Now())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = w.Client.Patch(ctx, Ref{Resource: "nodes", Name: w.Node, Subresource: "status"}, types.StrategicMergePatchType, b)
	if apierrors.IsNotFound(err) {
		return &Error{msg: fmt.Sprintf("the API server %s has no Node %q: start the agent with --name set to this node's Kubernetes name", w.Server, w.Node), err: err}
	}
	if err != nil {
		return fmt.Errorf("patch Node %s: %w", w.Node, APIError(w.Server, err))
	}
	return nil
}

// Event records an event about a service (e.g. which node announces its
// VIP).
func (w *Writer) Event(k lb.ServiceKey, reason, msg string) error {
	svc := w.Service(k)
	if svc == nil {
		return nil
	}
	ctx, cancel := w.ctx()
	defer cancel()
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: svc.Name + ".", Namespace: svc.Namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "Service", APIVersion: "v1", Namespace: svc.Namespace, Name: svc.Name, UID: svc.UID, ResourceVersion: svc.ResourceVersion},
		Reason:         reason, Message: msg, Type: corev1.EventTypeNormal,
		Source:         corev1.EventSource{Component: "netloom", Host: w.Node},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
		ReportingController: "netloom.io/lb", ReportingInstance: w.Node,
	}
	if err := w.Client.Create(ctx, Ref{Resource: "events", Namespace: svc.Namespace}, ev, nil); err != nil {
		return fmt.Errorf("record event on service %s: %w", k, APIError(w.Server, err))
	}
	return nil
}
