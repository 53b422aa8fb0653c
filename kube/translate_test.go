package kube

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/mesh/store"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func ptr[T any](v T) *T { return &v }

func pod(ns, name, uid, node, ip string, labels map[string]string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid), Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if ip != "" {
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
		p.Status.PodIP = ip
	}
	return p
}

// cached is pods as the informer's cache keeps them.
func cached(pods ...*corev1.Pod) []*Pod {
	out := make([]*Pod, len(pods))
	for i, p := range pods {
		out[i] = cachePod(p)
	}
	return out
}

func addr(ns, name, node, ip, uid string) cluster.Keyed[cluster.PodAddress] {
	return cluster.Keyed[cluster.PodAddress]{Key: store.Key{Kind: cluster.KindPodAddress, Namespace: ns, Name: name},
		Value: cluster.PodAddress{Node: node, IP: ip, UID: uid}}
}

func TestPolicyPods(t *testing.T) {
	web := map[string]string{"app": "web"}
	host := pod("default", "host", "u-h", "n1", "192.168.1.10", web)
	host.Spec.HostNetwork = true
	done := pod("default", "done", "u-d", "n1", "10.244.1.9", web)
	done.Status.Phase = corev1.PodSucceeded
	unready := pod("default", "unready", "u-u", "n2", "10.244.2.7", nil)
	unready.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
	unready.DeletionTimestamp = &metav1.Time{Time: time.Unix(1, 0)}
	named := pod("default", "named", "u-n", "n2", "", web)
	named.Spec.Containers = []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {ContainerPort: 9}}}}
	pods := cached(
		pod("default", "gossiped", "u-g", "n1", "", web), // no status yet: the gossiped address
		pod("default", "stale", "u-new", "n1", "10.244.1.20", web),
		pod("default", "nowhere", "u-x", "n1", "", nil), // no address at all
		host, done, unready, named,
	)
	addrs := []cluster.Keyed[cluster.PodAddress]{
		addr("default", "gossiped", "n1", "10.244.1.5", "u-g"),
		addr("default", "stale", "n3", "10.244.3.3", "u-old"), // another pod of that name
		addr("default", "named", "n2", "10.244.2.8", ""),      // no UID: counts
		addr("other", "orphan", "n2", "10.244.2.9", "u-o"),    // no API object
	}
	got := PolicyPods(pods, addrs)
	want := []policy.Pod{
		{Namespace: "default", Name: "gossiped", IP: netip.MustParseAddr("10.244.1.5"), Node: "n1", Labels: web},
		{Namespace: "default", Name: "named", IP: netip.MustParseAddr("10.244.2.8"), Node: "n2", Labels: web,
			Ports: []policy.NamedPort{{Name: "http", Port: 8080, Protocol: policy.TCP}}},
		{Namespace: "default", Name: "stale", IP: netip.MustParseAddr("10.244.1.20"), Node: "n1", Labels: web},
		{Namespace: "default", Name: "unready", IP: netip.MustParseAddr("10.244.2.7"), Node: "n2", Unready: true, Terminating: true},
		{Namespace: "other", Name: "orphan", IP: netip.MustParseAddr("10.244.2.9"), Node: "n2"},
	}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("PolicyPods (-want +got):\n%s", d)
	}
}

func lbService(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name), CreationTimestamp: metav1.NewTime(time.UnixMilli(1700000000123))},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.96.0.20", ClusterIPs: []string{"10.96.0.20"},
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("http"), NodePort: 31000}}},
	}
}

func TestService(t *testing.T) {
	pools := []lb.Pool{{Name: "lan", Ranges: []lb.Range{{Start: netip.MustParseAddr("192.168.1.240"), End: netip.MustParseAddr("192.168.1.250")}}, AutoAssign: true}}
	svc := lbService("web")
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "fd00::1"}, {IP: "192.168.1.241"}}
	got, err := Service(svc, ProxyReplace, pools)
	if err != nil {
		t.Fatal(err)
	}
	wantAs := lb.Assignment{VIP: netip.MustParseAddr("192.168.1.241"), Pool: "lan", ClusterIP: netip.MustParseAddr("10.96.0.20"), NodePorts: []uint16{31000}}
	if !got.Assigned.Equal(wantAs) {
		t.Errorf("Assigned = %+v, want %+v", got.Assigned, wantAs)
	}
	if got.Type != lb.TypeLoadBalancer || got.ProxyElsewhere || got.Created != (lb.Version{Wall: 1700000000123, Node: "uid-web"}) {
		t.Errorf("Service = type %s, proxyElsewhere %v, created %+v", got.Type, got.ProxyElsewhere, got.Created)
	}

	// Another class: no VIP from netloom, node ports stay.
	other := lbService("other")
	other.Spec.LoadBalancerClass = ptr("example.com/lb")
	got, _ = Service(other, ProxyReplace, pools)
	if got.Type != lb.TypeClusterIP || !got.NodePorts || got.Assigned.VIP.IsValid() {
		t.Errorf("foreign class: type %s nodePorts %v VIP %v, want ClusterIP with node ports and no VIP", got.Type, got.NodePorts, got.Assigned.VIP)
	}
	ours := lbService("ours")
	ours.Spec.LoadBalancerClass = ptr(LBClass)
	if got, _ = Service(ours, ProxyReplace, pools); got.Type != lb.TypeLoadBalancer {
		t.Errorf("class %s: type %s, want LoadBalancer", LBClass, got.Type)
	}

	for _, tt := range []struct {
		mode  ProxyMode
		label string // "" = no label
		want  bool   // netloom proxies it
	}{
		{ProxyReplace, "", true}, {ProxyReplace, ProxyName, true}, {ProxyReplace, "kube-proxy", false},
		{ProxyLabelled, "", false}, {ProxyLabelled, ProxyName, true}, {ProxyLabelled, "other", false},
		{ProxyOff, "", false}, {ProxyOff, ProxyName, false},
	} {
		s := lbService("p")
		if tt.label != "" {
			s.Labels = map[string]string{ProxyNameLabel: tt.label}
		}
		got, _ := Service(s, tt.mode, pools)
		if got.ProxyElsewhere == tt.want {
			t.Errorf("mode %s label %q: ProxyElsewhere = %v, want %v", tt.mode, tt.label, got.ProxyElsewhere, !tt.want)
		}
	}
	if _, err := ParseProxyMode("sometimes"); err == nil || !strings.Contains(err.Error(), "--service-proxy") {
		t.Errorf("ParseProxyMode(sometimes) = %v, want an error naming the flag", err)
	}
}

func TestAllocateFromAPI(t *testing.T) {
	pools := []lb.Pool{{Name: "lan", Ranges: []lb.Range{{Start: netip.MustParseAddr("192.168.1.240"), End: netip.MustParseAddr("192.168.1.250")}}, AutoAssign: true}}
	a, _ := Service(lbService("a"), ProxyReplace, pools)
	outside := lbService("b")
	outside.Spec.ClusterIP, outside.Spec.ClusterIPs = "172.20.0.9", nil // another service CIDR: the API's word counts
	outside.Spec.Ports[0].NodePort = 40000
	b, _ := Service(outside, ProxyReplace, pools)
	plan := lb.Allocate(lb.Config{FromAPI: true}, []lb.Service{a, b}, pools, map[string]bool{"n1": true})
	ra, rb := plan.Results[a.Key()], plan.Results[b.Key()]
	if ra.ClusterIP != netip.MustParseAddr("10.96.0.20") || rb.ClusterIP != netip.MustParseAddr("172.20.0.9") || rb.NodePorts[0] != 40000 {
		t.Errorf("results %+v %+v: want the API's ClusterIPs and node ports", ra, rb)
	}
	if !ra.VIP.IsValid() || !rb.VIP.IsValid() || ra.VIP == rb.VIP || ra.Pending != "" || rb.Pending != "" {
		t.Errorf("results %+v %+v: want two VIPs", ra, rb)
	}
	// Only the VIPs are new: every write differs from Assigned in its VIP.
	for _, w := range plan.Writes {
		if w.Writer != "n1" || w.Assignment.ClusterIP != plan.Results[w.Service].ClusterIP {
			t.Errorf("write %+v", w)
		}
	}
	// A service the API has not given a ClusterIP yet waits.
	none := lbService("c")
	none.Spec.ClusterIP, none.Spec.ClusterIPs = "", nil
	c, _ := Service(none, ProxyReplace, pools)
	if r := lb.Allocate(lb.Config{FromAPI: true}, []lb.Service{c}, pools, nil).Results[c.Key()]; !strings.Contains(r.Pending, "clusterIP") {
		t.Errorf("no clusterIP: pending %q", r.Pending)
	}
}

// slice is the cached Slice of apiSlice(...).
func slice(svc, name string, ports map[string]int32, eps ...discoveryv1.Endpoint) *Slice {
	return stripSlice(apiSlice(svc, name, ports, eps...))
}

func apiSlice(svc, name string, ports map[string]int32, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4, Endpoints: eps,
	}
	for n, p := range ports {
		sl.Ports = append(sl.Ports, discoveryv1.EndpointPort{Name: ptr(n), Port: ptr(p)})
	}
	return sl
}

func ep(ip, node, pod string, ready, serving, terminating *bool) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating}}
	if node != "" {
		e.NodeName = ptr(node)
	}
	if pod != "" {
		e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: pod}
	}
	return e
}

func TestEndpoints(t *testing.T) {
	yes, no := ptr(true), ptr(false)
	v6 := apiSlice("web", "web-v6", map[string]int32{"http": 8080}, ep("fd00::5", "n1", "a", nil, nil, nil))
	v6.AddressType = discoveryv1.AddressTypeIPv6
	got := Endpoints([]*Slice{
		slice("web", "web-b", map[string]int32{"http": 8080},
			ep("10.244.2.5", "n2", "b", no, yes, yes),   // terminating, serving
			ep("10.244.1.5", "n1", "a", nil, nil, nil)), // repeated in web-a: counted once
		slice("web", "web-a", map[string]int32{"http": 8080}, ep("10.244.1.5", "n1", "a", nil, nil, nil)),
		stripSlice(v6),
		slice("ext", "ext-1", map[string]int32{"": 5432}, ep("192.168.1.50", "", "", nil, nil, nil)),
		stripSlice(&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "unlabelled"}, AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{ep("10.244.3.3", "n3", "u", nil, nil, nil)}}),
	})
	web := lb.ServiceKey{Namespace: "default", Name: "web"}
	ext := lb.ServiceKey{Namespace: "default", Name: "ext"}
	if len(got) != 2 || len(got[web]) != 2 || len(got[ext]) != 1 {
		t.Fatalf("Endpoints = %+v, want web with 2 and ext with 1", got)
	}
	a, b := got[web][0], got[web][1]
	if a.PodName != "a" || !a.Ready || !a.Serving || a.Terminating || a.Node != "n1" {
		t.Errorf("endpoint a = %+v: want ready, serving, on n1", a)
	}
	if b.PodName != "b" || b.Ready || !b.Serving || !b.Terminating || !b.TakesNew() {
		t.Errorf("endpoint b = %+v: want serving and terminating", b)
	}
	// The slice's ports replace the service's targetPort.
	sp := lb.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("web")}
	if p, ok := lb.TargetPort(sp, a); !ok || p != 8080 {
		t.Errorf("TargetPort = %d %v, want 8080 from the slice", p, ok)
	}
	if _, ok := lb.TargetPort(lb.ServicePort{Name: "metrics", Port: 9090}, a); ok {
		t.Error("a port the slice does not list must not be served")
	}
	if e := got[ext][0]; e.Node != "" || e.PodName != "" || e.IP != netip.MustParseAddr("192.168.1.50") {
		t.Errorf("selector-less endpoint = %+v", e)
	}
}

// EndpointsCache recomputes only the services whose slices are other
// objects than before, and answers as Endpoints does.
func TestEndpointsCache(t *testing.T) {
	webA := slice("web", "web-a", map[string]int32{"http": 8080}, ep("10.244.1.5", "n1", "a", nil, nil, nil))
	webB := slice("web", "web-b", map[string]int32{"http": 8080}, ep("10.244.2.5", "n2", "b", nil, nil, nil))
	db := slice("db", "db-a", map[string]int32{"": 5432}, ep("10.244.1.7", "n1", "d", nil, nil, nil))
	web := lb.ServiceKey{Namespace: "default", Name: "web"}
	dbKey := lb.ServiceKey{Namespace: "default", Name: "db"}
	var c EndpointsCache
	first := c.Update([]*Slice{webB, db, webA})
	if !reflect.DeepEqual(first, Endpoints([]*Slice{webA, webB, db})) {
		t.Fatalf("Update = %+v, want what Endpoints gives", first)
	}
	// The db slice replaced (as an informer does on an update), web's
	// slices the same objects.
	db2 := slice("db", "db-a", map[string]int32{"": 5432}, ep("10.244.2.7", "n2", "d", nil, nil, nil))
	second := c.Update([]*Slice{webA, db2, webB})
	if &second[web][0] != &first[web][0] {
		t.Error("web's endpoints were computed again though its slices did not change")
	}
	if second[dbKey][0].IP != netip.MustParseAddr("10.244.2.7") {
		t.Errorf("db after its slice changed: %+v", second[dbKey])
	}
	// A slice gone: its service is computed again; a service without
	// slices is gone.
	third := c.Update([]*Slice{webA})
	if len(third) != 1 || len(third[web]) != 1 || third[web][0].PodName != "a" {
		t.Errorf("after web-b and db-a are deleted: %+v", third)
	}
}

func TestPool(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "netloom.io/v1alpha1", "kind": "AddressPool",
		"metadata": map[string]any{"name": "lan"},
		"spec":     map[string]any{"addresses": []any{"192.168.1.240-192.168.1.250"}},
	}}
	p, err := Pool(u)
	if err != nil || p.Name != "lan" || len(p.Ranges) != 1 || !p.AutoAssign {
		t.Fatalf("Pool = %+v, %v", p, err)
	}
	u.Object["spec"] = map[string]any{"addresses": []any{"not-an-address"}}
	if _, err := Pool(u); err == nil || !strings.Contains(err.Error(), "AddressPool lan") {
		t.Errorf("bad pool: %v, want an error naming it", err)
	}
}

// The cache keeps a pod as a Pod: what policy and endpoints read, and in
// JSON the API object with those fields, which reads back the same.
func TestCachePod(t *testing.T) {
	p := pod("default", "web", "u1", "n1", "10.244.1.5", map[string]string{"app": "web"})
	p.ResourceVersion = "7"
	p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}
	p.Annotations = map[string]string{"big": strings.Repeat("x", 1000)}
	p.Spec.Containers = []corev1.Container{{Name: "c", Image: "nginx", Env: []corev1.EnvVar{{Name: "A", Value: "b"}},
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}, {ContainerPort: 81}}},
		{Name: "d", Ports: []corev1.ContainerPort{{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}}}}
	p.Status.PodIPs = []corev1.PodIP{{IP: "fd00::5"}, {IP: "10.244.1.5"}}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: corev1.ConditionFalse, Message: "m"}}
	o, _ := strip(p)
	s := o.(*Pod)
	want := &Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", UID: "u1", ResourceVersion: "7", Labels: map[string]string{"app": "web"}},
		NodeName: "n1", Phase: corev1.PodRunning, IP: netip.MustParseAddr("10.244.1.5"),
		Ports: []policy.NamedPort{{Name: "http", Port: 80, Protocol: policy.TCP}, {Name: "dns", Port: 53, Protocol: policy.UDP}}}
	if d := cmp.Diff(want, s, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("cached pod (-want +got):\n%s", d)
	}
	pp := PolicyPods([]*Pod{s}, nil)
	if len(pp) != 1 || !pp[0].Unready || pp[0].Labels["app"] != "web" || len(pp[0].Ports) != 2 || pp[0].IP != netip.MustParseAddr("10.244.1.5") {
		t.Errorf("the cached pod reads as %+v", pp)
	}
	// In JSON: the API object, which reads back as the same Pod (a
	// saved view, `netloom get pods`).
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var api corev1.Pod
	if err := json.Unmarshal(b, &api); err != nil || api.Status.PodIP != "10.244.1.5" || api.Spec.NodeName != "n1" || len(api.Spec.Containers) != 1 {
		t.Errorf("as JSON: %s (%v)", b, err)
	}
	var back Pod
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, &back, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("read back (-want +got):\n%s", d)
	}
	// No Ready condition counts as ready, and stays so.
	p.Status.Conditions = nil
	s = cachePod(p)
	b, _ = json.Marshal(s)
	if err := json.Unmarshal(b, &back); err != nil || !s.Ready || !back.Ready {
		t.Errorf("a pod without a Ready condition: ready %v, read back %v (%v)", s.Ready, back.Ready, err)
	}
	// The informer's cache copies objects it hands out.
	cp := s.DeepCopyObject().(*Pod)
	cp.Labels["app"] = "db"
	if s.Labels["app"] != "web" {
		t.Error("DeepCopyObject shares the labels")
	}
}

func TestPoolsOldestWins(t *testing.T) {
	mk := func(name string, created int64, addrs ...any) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "netloom.io/v1alpha1", "kind": "AddressPool",
			"metadata": map[string]any{"name": name},
			"spec":     map[string]any{"addresses": addrs},
		}}
		u.SetCreationTimestamp(metav1.NewTime(time.Unix(created, 0)))
		return u
	}
	s := &Source{cfg: Config{ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16")}}
	s.cfg.Log = slogDiscard()
	s.cache.problems = map[string]string{}
	svcCIDRs := ServiceCIDRs([]*networkingv1.ServiceCIDR{
		{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.96.0.0/16", "fd00:96::/112"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "more"}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.97.0.0/24"}}},
	})
	if fmt.Sprint(svcCIDRs) != "[10.96.0.0/16 10.97.0.0/24]" {
		t.Errorf("ServiceCIDRs = %v, want the IPv4 ones", svcCIDRs)
	}
	got := s.pools([]*unstructured.Unstructured{
		mk("b-new", 20, "192.168.1.245-192.168.1.250"), // overlaps a-old: left out
		mk("a-old", 10, "192.168.1.240-192.168.1.246"),
		mk("pods", 5, "10.244.9.0/24"), // the pod network: left out
		mk("c", 30, "192.168.2.0/28"),
		mk("svc", 40, "10.97.0.128/25"), // a service CIDR: left out
	}, svcCIDRs)
	var names []string
	for _, p := range got {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "a-old,c" {
		t.Errorf("pools = %v, want a-old,c", names)
	}
	if len(s.cache.problems) != 3 || !strings.Contains(s.cache.problems["AddressPool/b-new"], "a-old") ||
		!strings.Contains(s.cache.problems["AddressPool/svc"], "service CIDR 10.97.0.0/24") {
		t.Errorf("problems = %v", s.cache.problems)
	}
}

func TestNodeSubnet(t *testing.T) {
	dual := node("n1", "fd00:1::/64")
	dual.Spec.PodCIDRs = []string{"fd00:1::/64", "10.244.1.0/24"}
	tests := []struct {
		name  string
		nodes []*corev1.Node
		want  netip.Prefix
		wait  string
	}{
		{"no Node has one: gossip", []*corev1.Node{node("n1", ""), node("n2", "")}, netip.Prefix{}, ""},
		{"no Nodes at all: gossip", nil, netip.Prefix{}, ""},
		{"this Node's", []*corev1.Node{node("n1", "10.244.1.0/24"), node("n2", "10.244.2.0/24")}, netip.MustParsePrefix("10.244.1.0/24"), ""},
		{"dual-stack: the IPv4 one", []*corev1.Node{dual}, netip.MustParsePrefix("10.244.1.0/24"), ""},
		{"IPv6 only: given, and refused later", []*corev1.Node{node("n1", "fd00:1::/64")}, netip.MustParsePrefix("fd00:1::/64"), ""},
		{"others have one: wait", []*corev1.Node{node("n1", ""), node("n2", "10.244.2.0/24")}, netip.Prefix{}, "kube-controller-manager has not set spec.podCIDR of Node n1"},
		{"no Node of this node: wait", []*corev1.Node{node("n2", "10.244.2.0/24")}, netip.Prefix{}, "has no Node n1"},
	}
	for _, tc := range tests {
		got := NodeSubnet(tc.nodes, "n1")
		if got.Assigned != tc.want || (tc.wait == "") != (got.Wait == "") || !strings.Contains(got.Wait, tc.wait) {
			t.Errorf("%s: %+v, want %s, wait %q", tc.name, got, tc.want, tc.wait)
		}
	}
}

// TestNodeSubnetChanged: of a Node's updates only a new pod subnet counts
// (its status changes every few seconds).
func TestNodeSubnetChanged(t *testing.T) {
	ready := node("n1", "10.244.1.0/24")
	ready.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	if nodeSubnetChanged(node("n1", "10.244.1.0/24"), ready) {
		t.Error("a status update counted as a change")
	}
	if !nodeSubnetChanged(node("n1", ""), node("n1", "10.244.1.0/24")) {
		t.Error("a podCIDR set did not count")
	}
}

// BenchmarkEndpointsCacheHeap is the heap the endpoints cache and the map
// it returns hold beyond the slices themselves: 10,000 services of one
// slice each and 100 of two, 10 endpoints a slice, updated once.
func BenchmarkEndpointsCacheHeap(b *testing.B) {
	var in []*Slice
	for i := range 10100 {
		svc := "svc-" + strconv.Itoa(i)
		n := 1
		if i >= 10000 {
			n = 2
		}
		for k := range n {
			var eps []discoveryv1.Endpoint
			for j := range 10 {
				p := (i*10 + j + k*5) % 5000
				eps = append(eps, ep(fmt.Sprintf("10.244.%d.%d", 100+p/250, p%250+1), "node1", "", nil, nil, nil))
			}
			in = append(in, slice(svc, svc+"-"+strconv.Itoa(k), map[string]int32{"http": 8080}, eps...))
		}
	}
	var kept []any
	for b.Loop() {
		kept = nil
		goruntime.GC()
		var before, after goruntime.MemStats
		goruntime.ReadMemStats(&before)
		c := &EndpointsCache{}
		out := c.Update(in)
		goruntime.GC()
		goruntime.ReadMemStats(&after)
		kept = append(kept, c, out)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/10100, "B/service")
	}
	_ = kept
}
