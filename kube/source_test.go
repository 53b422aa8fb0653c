package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/mesh/store"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(t.TempDir(), "n1", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// waitFor polls cond (the informers deliver asynchronously).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func startSource(t *testing.T, cfg Config, client *fake.Clientset) *Source {
	t.Helper()
	src, err := New(cfg, newFakeAPI(client))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = src.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return src
}

func TestSourceFollowsTheAPI(t *testing.T) {
	st := openStore(t)
	state := filepath.Join(t.TempDir(), "kubernetes.json")
	web := pod("default", "web", "u-web", "n1", "", map[string]string{"app": "web"})
	client := fake.NewClientset(web, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default", Labels: map[string]string{"team": "a"}}})
	src := startSource(t, Config{Node: "n1", Store: st, StateFile: state}, client)
	ch, stop := src.Subscribe()
	defer stop()

	waitFor(t, "sync", src.Synced)
	o := src.Objects()
	if o.Policy == nil || len(o.Policy.Pods) != 0 || o.Policy.Namespaces["default"]["team"] != "a" {
		t.Fatalf("after sync: %+v (the pod has no address yet, so it is not a policy pod)", o.Policy)
	}
	// The gossiped address makes it one, with its labels.
	put, _ := cluster.PodAddresses.Put(store.Key{Namespace: "default", Name: "web"}, cluster.PodAddress{Node: "n1", IP: "10.244.1.5", UID: "u-web"})
	if _, err := st.Apply([]store.Put{put}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no notification after a gossip change")
	}
	o2 := src.Objects()
	if len(o2.Policy.Pods) != 1 || o2.Policy.Pods[0].Labels["app"] != "web" || o2.Gen.Policy == o.Gen.Policy {
		t.Fatalf("after the address: %+v gen %d→%d", o2.Policy.Pods, o.Gen.Policy, o2.Gen.Policy)
	}
	// Unchanged parts keep their pointers.
	if o3 := src.Objects(); o3.Policy != o2.Policy || o3.Gen != o2.Gen {
		t.Error("Objects rebuilt the policy snapshot with nothing changed")
	}
	// A policy created through the API arrives.
	ctx := context.Background()
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "deny"}}
	if _, err := client.NetworkingV1().NetworkPolicies("default").Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the policy", func() bool { return len(src.Objects().Policy.Policies) == 1 })
	// So do a service and its VIP in the status.
	svc := lbService("web")
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.168.1.241"}}
	if _, err := client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the service", func() bool {
		s := src.Objects().Services
		return len(s) == 1 && s[0].Assigned.VIP == netip.MustParseAddr("192.168.1.241")
	})
	if src.Service(lb.ServiceKey{Namespace: "default", Name: "web"}) == nil {
		t.Error("Service(default/web) = nil")
	}
	// get shows the objects with their type.
	if l := src.List("Pod", "default"); len(l) != 1 || !strings.Contains(string(l[0].JSON), `"kind":"Pod"`) {
		t.Errorf("List(Pod) = %s", l)
	}
	// A service as the API object: its spec and status as the server has
	// them (netloom get services -o json, the dashboard).
	l := src.List("Service", "default")
	var got corev1.Service
	if len(l) != 1 || json.Unmarshal(l[0].JSON, &got) != nil || got.Kind != "Service" || got.Spec.ClusterIP != "10.96.0.20" ||
		len(got.Spec.Ports) != 1 || got.Spec.Ports[0].NodePort != 31000 || got.Spec.Type != corev1.ServiceTypeLoadBalancer || IngressIP(&got) != netip.MustParseAddr("192.168.1.241") {
		t.Errorf("List(Service) = %s", l)
	}
	// The view is saved for a start without the API server.
	waitFor(t, "the saved view", func() bool {
		v, err := LoadView(state)
		return err == nil && v != nil && len(v.Policies) == 1 && len(v.Services) == 1
	})
}

// An API server that never answers: no objects (nothing is programmed)
// without a saved view, and the saved view with one.
func TestSourceBeforeSync(t *testing.T) {
	st := openStore(t)
	down := fake.NewClientset()
	down.PrependReactor("list", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	src := startSource(t, Config{Node: "n1", Store: st, Server: "https://10.0.0.1:6443"}, down)
	if o := src.Objects(); o.Policy != nil || o.Services != nil {
		t.Fatalf("before any sync: %+v, want no objects", o)
	}
	waitFor(t, "the lost server noted", func() bool { return !src.Status().LastUnreachable.IsZero() })
	err := src.WaitPod(context.Background(), "default", "web", "u1", 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "default/web") || !strings.Contains(err.Error(), "retry") {
		t.Errorf("WaitPod = %v, want one line naming the pod and the retry", err)
	}

	state := filepath.Join(t.TempDir(), "kubernetes.json")
	saved := &View{Pods: cached(pod("default", "web", "u1", "n1", "10.244.1.5", map[string]string{"app": "web"})),
		Policies: []*networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "deny"}}}}
	if err := SaveView(state, saved); err != nil {
		t.Fatal(err)
	}
	src2 := startSource(t, Config{Node: "n1", Store: openStore(t), StateFile: state}, down)
	o := src2.Objects()
	if o.Policy == nil || len(o.Policy.Pods) != 1 || len(o.Policy.Policies) != 1 || !src2.Status().FromSaved {
		t.Fatalf("with a saved view: %+v", o.Policy)
	}
	if err := src2.WaitPod(context.Background(), "default", "web", "u1", time.Second); err != nil {
		t.Errorf("WaitPod of a saved pod: %v", err)
	}
}

// SaveView streams the objects one by one; what it writes is the View's
// JSON, and LoadView reads back every object.
func TestSaveViewRoundTrip(t *testing.T) {
	pool := &unstructured.Unstructured{}
	pool.SetAPIVersion("netloom.io/v1alpha1")
	pool.SetKind("AddressPool")
	pool.SetName("lan")
	v := &View{
		Pods:         cached(pod("default", "web", "u1", "n1", "10.244.1.5", map[string]string{"app": "web"}), pod("default", "db", "u2", "n2", "10.244.2.5", nil)),
		Namespaces:   []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "default", Labels: map[string]string{"team": "a"}}}},
		Policies:     []*networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "deny"}}},
		Services:     []*CachedService{cacheService(lbService("web"))},
		Slices:       []*Slice{slice("web", "web-1", map[string]int32{"http": 8080}, ep("10.244.1.5", "n1", "web", nil, nil, nil))},
		AddressPools: []*unstructured.Unstructured{pool},
		Nodes:        []*corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0/24"}}},
		ServiceCIDRs: []*networkingv1.ServiceCIDR{{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.96.0.0/16"}}}},
	}
	path := filepath.Join(t.TempDir(), "kubernetes.json")
	if err := SaveView(path, v); err != nil {
		t.Fatal(err)
	}
	var written, want any
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &written); err != nil {
		t.Fatalf("SaveView wrote no JSON: %v\n%s", err, b)
	}
	m, _ := json.Marshal(v)
	_ = json.Unmarshal(m, &want)
	if !reflect.DeepEqual(written, want) {
		t.Errorf("SaveView wrote\n%s\nwant\n%s", b, m)
	}
	got, err := LoadView(path)
	if err != nil {
		t.Fatal(err)
	}
	if g, _ := json.Marshal(got); string(g) != string(m) {
		t.Errorf("LoadView read\n%s\nwant\n%s", g, m)
	}
}

func TestLoadViewDamaged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubernetes.json")
	if err := SaveView(path, &View{}); err != nil {
		t.Fatal(err)
	}
	if v, err := LoadView(path); err != nil || v == nil {
		t.Fatalf("LoadView = %v, %v", v, err)
	}
	if err := os.WriteFile(path, []byte(`{"pods": [`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadView(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "remove it") || strings.Contains(err.Error(), "\n") {
		t.Errorf("damaged: %v, want one line naming the file and the fix", err)
	}
}

func TestWriterIngress(t *testing.T) {
	svc := lbService("web")
	svc.ResourceVersion = "5"
	svc.Annotations = map[string]string{corev1.LastAppliedConfigAnnotation: `{"kind":"Service"}`}
	client := fake.NewClientset(svc)
	o, _ := strip(svc.DeepCopy()) // the cache keeps what load balancing reads
	cached := o.(*CachedService)
	w := &Writer{Client: newFakeAPI(client), Server: "https://api:6443", Node: "n1", Service: func(lb.ServiceKey) *CachedService { return cached }}
	key := lb.ServiceKey{Namespace: "default", Name: "web"}
	vip := netip.MustParseAddr("192.168.1.241")

	// The first patch meets a conflict (the cache was old): read again,
	// patch with the object's new resourceVersion.
	conflicts := 1
	var patches []string
	client.PrependReactor("patch", "services", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pa := a.(k8stesting.PatchAction)
		if a.GetSubresource() != "status" || pa.GetPatchType() != types.MergePatchType {
			t.Errorf("%s patch of %q, want a merge patch of status", pa.GetPatchType(), a.GetSubresource())
		}
		patches = append(patches, string(pa.GetPatch()))
		if conflicts > 0 {
			conflicts--
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "services"}, "web", errors.New("changed"))
		}
		return false, nil, nil
	})
	if err := w.Record(map[lb.ServiceKey]lb.Assignment{key: {VIP: vip}}, nil); err != nil {
		t.Fatal(err)
	}
	got, _ := client.CoreV1().Services("default").Get(context.Background(), "web", metav1.GetOptions{})
	if IngressIP(got) != vip {
		t.Fatalf("status.loadBalancer.ingress = %+v, want %s", got.Status.LoadBalancer.Ingress, vip)
	}
	// Only the status is written: what the cache stripped stays.
	if got.Annotations[corev1.LastAppliedConfigAnnotation] == "" || len(got.Spec.Ports) != 1 {
		t.Errorf("writing the status changed the rest: annotations %v, ports %v", got.Annotations, got.Spec.Ports)
	}
	want := `{"metadata":{"resourceVersion":"5"},"status":{"loadBalancer":{"ingress":[{"ip":"192.168.1.241","ipMode":"VIP"}]}}}`
	if len(patches) != 2 || patches[0] != want {
		t.Errorf("patches %q, want two, the first %s", patches, want)
	}
	// Written only when it differs.
	cached = cacheService(got)
	client.ClearActions()
	if err := w.Record(map[lb.ServiceKey]lb.Assignment{key: {VIP: vip}}, nil); err != nil {
		t.Fatal(err)
	}
	if n := len(client.Actions()); n != 0 {
		t.Errorf("an unchanged status made %d requests", n)
	}
	// Another class is not netloom's to write.
	other := got.DeepCopy()
	other.Spec.LoadBalancerClass = ptr("example.com/lb")
	cached = cacheService(other)
	if err := w.Record(map[lb.ServiceKey]lb.Assignment{key: {VIP: netip.MustParseAddr("192.168.1.242")}}, nil); err != nil || len(client.Actions()) != 0 {
		t.Errorf("wrote the status of a service of another class: %v %v", err, client.Actions())
	}
}

func TestPatchNode(t *testing.T) {
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	w := &Writer{Client: newFakeAPI(client), Server: "https://api:6443", Node: "n1"}
	st := NodeState{Subnet: netip.MustParsePrefix("10.244.1.0/24"), PublicKey: "key=", Endpoint: netip.MustParseAddrPort("192.168.1.11:51820"), NetworkReady: true}
	if err := w.PatchNode(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	n, _ := client.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
	if n.Annotations[AnnotationSubnet] != "10.244.1.0/24" || n.Annotations[AnnotationPublicKey] != "key=" || n.Annotations[AnnotationEndpoint] != "192.168.1.11:51820" {
		t.Errorf("annotations = %v", n.Annotations)
	}
	if len(n.Status.Conditions) != 1 || n.Status.Conditions[0].Type != corev1.NodeNetworkUnavailable || n.Status.Conditions[0].Status != corev1.ConditionFalse {
		t.Errorf("conditions = %+v", n.Status.Conditions)
	}
	for _, a := range client.Actions() {
		if a.GetVerb() == "patch" && a.GetSubresource() != "status" {
			t.Errorf("patched nodes/%s, want nodes/status (the only Node verb netloom has)", a.GetSubresource())
		}
	}
	w.Node = "missing"
	if err := w.PatchNode(context.Background(), st); err == nil || !strings.Contains(err.Error(), "--name") || Unreachable(err) {
		t.Errorf("missing Node: %v, want a line pointing at --name (an answer of the server, not a lost one)", err)
	}
	// Before the routes are up, no condition.
	b, _ := NodePatch(NodeState{Subnet: st.Subnet}, time.Now())
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	if _, ok := m["status"]; ok {
		t.Errorf("patch before ready sets the condition: %s", b)
	}
}

func TestCheckAccess(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
		ra := r.Spec.ResourceAttributes
		r.Status.Allowed = !(ra.Resource == "services" && ra.Subresource == "status")
		return true, r, nil
	})
	err := CheckAccess(context.Background(), newFakeAPI(client), "https://api:6443", Needed())
	if err == nil || !strings.Contains(err.Error(), "patch services/status") || !strings.Contains(err.Error(), "netloom k8s manifests") {
		t.Errorf("CheckAccess = %v, want the missing verb and the fix", err)
	}
	if strings.Count(err.Error(), "services/status") != 1 || strings.Contains(err.Error(), "get pods") {
		t.Errorf("CheckAccess names permissions that are there: %v", err)
	}
	client = fake.NewClientset()
	client.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewUnauthorized("bad token")
	})
	if err := CheckAccess(context.Background(), newFakeAPI(client), "https://api:6443", Needed()); err == nil || !strings.Contains(err.Error(), "refuses netloom's credentials") {
		t.Errorf("401: %v", err)
	}
	// Every verb of the ClusterRole is checked.
	if n := len(Needed()); n < 20 {
		t.Errorf("Needed() has %d permissions: the ClusterRole's rules did not expand", n)
	}
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestSourceNodeSubnet: the pod subnet follows this node's Node: gossip
// while no Node has a spec.podCIDR, a wait once the cluster assigns them
// and this node has none yet, then the assigned one; before the caches
// sync the node waits.
func TestSourceNodeSubnet(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(node("n1", ""), node("n2", ""))
	down := fake.NewClientset()
	down.PrependReactor("list", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	if ns := startSource(t, Config{Node: "n1", Store: openStore(t)}, down).Objects().NodeSubnet; ns.Wait == "" {
		t.Errorf("before the caches synced: %+v, want a wait", ns)
	}

	src := startSource(t, Config{Node: "n1", Store: openStore(t)}, client)
	waitFor(t, "sync", src.Synced)
	if ns := src.Objects().NodeSubnet; ns != (cluster.NodeSubnet{}) {
		t.Fatalf("no Node with a podCIDR: %+v, want gossip agreement", ns)
	}
	ch, stop := src.Subscribe()
	defer stop()
	if _, err := client.CoreV1().Nodes().Update(ctx, node("n2", "10.244.2.0/24"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a wait", func() bool { return strings.Contains(src.Objects().NodeSubnet.Wait, "spec.podCIDR of Node n1") })
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no notification after a Node's podCIDR was set")
	}
	if _, err := client.CoreV1().Nodes().Update(ctx, node("n1", "10.244.1.0/24"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the assigned subnet", func() bool {
		return src.Objects().NodeSubnet.Assigned == netip.MustParsePrefix("10.244.1.0/24")
	})
	if l := src.live().Nodes; len(l) != 2 || len(l[0].Status.Conditions)+len(l[1].Status.Conditions) != 0 {
		t.Errorf("cached Nodes %+v, want them stripped to their pod subnets", l)
	}
}

func node(name, podCIDR string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: podCIDR}}
	if podCIDR != "" {
		n.Spec.PodCIDRs = []string{podCIDR}
	}
	return n
}

// TestWarmup: a refusal (403, or permissions a SelfSubjectAccessReview
// denies) within WarmupGrace of the API server having been unreachable is
// its start, not the ClusterRole; before any outage, or later, it is.
func TestWarmup(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	down := APIError("https://api:6443", errors.New(`Get "https://api:6443/api": dial tcp 10.0.0.1:6443: connect: connection refused`))
	forbidden := fmt.Errorf("patch Node n1: %w", APIError("https://api:6443", apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "n1", errors.New("RBAC: clusterrole \"netloom\" not found"))))
	missing := &Error{msg: "the API server https://api:6443 does not let netloom list pods", denied: true}
	if !Unreachable(down) || Unreachable(forbidden) || Unreachable(missing) || !Denied(forbidden) || Denied(down) || !Denied(missing) {
		t.Fatalf("Unreachable/Denied: down %v/%v, forbidden %v/%v", Unreachable(down), Denied(down), Unreachable(forbidden), Denied(forbidden))
	}
	if !apierrors.IsForbidden(forbidden) {
		t.Error("APIError hides the API status")
	}
	var w Warmup
	if w.Starting(forbidden, t0) {
		t.Error("a 403 with no outage before counted as the server starting")
	}
	// An outage a watch saw counts as one the probes saw.
	var seen Warmup
	seen.Unreachable(t0)
	if !seen.Starting(forbidden, t0.Add(time.Second)) {
		t.Error("a 403 a second after a watch lost the server did not count as it starting")
	}
	w.Starting(down, t0)
	for _, c := range []struct {
		err   error
		after time.Duration
		want  bool
	}{{forbidden, 2 * time.Second, true}, {missing, 20 * time.Second, true}, {forbidden, WarmupGrace + time.Second, false}} {
		if got := w.Starting(c.err, t0.Add(c.after)); got != c.want {
			t.Errorf("%v %v after the outage: starting %v, want %v", c.err, c.after, got, c.want)
		}
	}
}

// A view saved before the cache kept Slices holds the API objects under
// "endpointSlices": LoadView turns them into Slices, not into nothing.
func TestLoadViewOldSlices(t *testing.T) {
	old := apiSlice("web", "web-1", map[string]int32{"http": 8080}, ep("10.244.1.5", "n1", "web", nil, nil, nil))
	b, err := json.Marshal(map[string]any{"pods": []any{}, "endpointSlices": []*discoveryv1.EndpointSlice{old}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubernetes.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := LoadView(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Slices) != 1 || !reflect.DeepEqual(v.Slices[0], stripSlice(old)) {
		t.Errorf("slices of the old view: %+v", v.Slices)
	}
}

// A view saved before the cache kept CachedServices holds Service API
// objects under "services": LoadView translates them as the cache would,
// and a service netloom cannot serve keeps its reason.
func TestLoadViewOldServices(t *testing.T) {
	web := lbService("web")
	web.CreationTimestamp = metav1.NewTime(time.Unix(1700000000, 0)) // JSON keeps seconds
	web.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.168.1.241"}}
	bad := lbService("bad")
	bad.Spec.ClusterIP = "not-an-address"
	b, err := json.Marshal(map[string]any{"pods": []any{}, "services": []*corev1.Service{web, bad}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubernetes.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := LoadView(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Services) != 2 || !reflect.DeepEqual(v.Services[0], cacheService(web)) {
		t.Fatalf("services of the old view: %+v", v.Services)
	}
	pools := []lb.Pool{{Name: "lan", Ranges: []lb.Range{{Start: netip.MustParseAddr("192.168.1.240"), End: netip.MustParseAddr("192.168.1.250")}}}}
	got, err := v.Services[0].Service(ProxyReplace, pools)
	want, _ := Service(web, ProxyReplace, pools)
	if err != nil || !reflect.DeepEqual(got, want) || got.Assigned.VIP != netip.MustParseAddr("192.168.1.241") || got.Assigned.Pool != "lan" {
		t.Errorf("translated from the old view: %+v, %v; want %+v", got, err, want)
	}
	if _, err := v.Services[1].Service(ProxyReplace, pools); err == nil || !strings.Contains(err.Error(), "clusterIP") {
		t.Errorf("a service that does not translate: %v, want its reason", err)
	}
}

// A save that took long waits 20 times as long before the next: saving
// takes at most a twentieth of a CPU however large the cluster.
func TestSaveWait(t *testing.T) {
	for _, c := range []struct{ took, want time.Duration }{
		{0, saveEvery},
		{5 * time.Millisecond, saveEvery},
		{100 * time.Millisecond, saveEvery},
		{time.Second, 20 * time.Second},
		{4 * time.Second, 80 * time.Second},
	} {
		if got := saveWait(c.took); got != c.want {
			t.Errorf("saveWait(%s) = %s, want %s", c.took, got, c.want)
		}
	}
}
