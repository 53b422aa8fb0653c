package integration

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netloom/netloom/kube"
	"github.com/netloom/netloom/kube/manifests"
	"github.com/netloom/netloom/node/demo"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
)

// TestKubernetes runs a 3-node cluster in Kubernetes mode against a real
// kube-apiserver (RBAC on, netloom under the ServiceAccount and
// ClusterRole of `netloom k8s manifests`) and kube-controller-manager
// (EndpointSlices): the agents' Node objects, a pod the API does not know,
// the NetworkPolicy reachability matrix with every object from the API,
// services with endpoints from EndpointSlices and the VIP written into
// their status, and the API server going away. No agent may meet a 403.
func TestKubernetes(t *testing.T) {
	needRoot(t)
	x := newCluster(t, demo.Options{Nodes: 3, PodsPerNode: -1, ExtraAgentArgs: lbTimers})
	k := newKubeEnv(t, x)
	for _, n := range x.c.Nodes {
		n.ExtraArgs = append(n.ExtraArgs, k.agentArgs()...)
		n.ExtraArgs = append(n.ExtraArgs, "--cni-conflist", conflistOf(n))
	}
	x.start()
	e := setupPolEnv(t, x, k, polBaselineNS, polBaselinePods)

	t.Run("NodeObjects", func(t *testing.T) { k.testNodeObjects(x.with(t)) })
	t.Run("UnknownPodNotAttached", func(t *testing.T) { k.testUnknownPod(e.with(t)) })
	t.Run("PolicyMatrix", func(t *testing.T) { e.with(t).runMatrix(t) })
	t.Run("Services", func(t *testing.T) { k.testServices(e.with(t)) })
	t.Run("LocalService", func(t *testing.T) { k.testLocalService(e.with(t)) })
	t.Run("APIServerDown", func(t *testing.T) { k.testAPIServerDown(e.with(t)) })
	if f := k.forbidden(x); len(f) > 0 {
		t.Errorf("the API server refused netloom something (the ClusterRole must be enough):\n%s", strings.Join(f, "\n"))
	}
}

// conflistOf is where node n's agent writes its CNI conflist.
func conflistOf(n *demo.Node) string {
	return filepath.Join(n.DataDir, "..", "net.d", "10-netloom.conflist")
}

// testNodeObjects: each agent writes its subnet, WireGuard key and
// endpoint on its Node and says the network is up; status shows the link
// to the API server; `netloom apply` of a Kubernetes kind is refused.
func (k *kubeEnv) testNodeObjects(x *tc) {
	t := x.t
	ctx := context.Background()
	for _, n := range x.c.Nodes {
		st := x.status(n)
		eventually(t, 20*time.Second, "Node "+n.Name+" written by its agent", func() error {
			node, err := k.admin.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			a := node.Annotations
			if a[kube.AnnotationSubnet] != st.Node.Subnet || a[kube.AnnotationPublicKey] != st.Node.WireGuard.PublicKey ||
				a[kube.AnnotationEndpoint] != fmt.Sprintf("%s:%d", n.Addr, wgPort) {
				return fmt.Errorf("annotations %v, want subnet %s and key %s", a, st.Node.Subnet, st.Node.WireGuard.PublicKey)
			}
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionFalse && c.Reason == kube.ConditionReason {
					return nil
				}
			}
			return fmt.Errorf("no NetworkUnavailable=False condition: %+v", node.Status.Conditions)
		})
		// The kubelet sees the network once the agent wrote the conflist.
		if b, err := os.ReadFile(conflistOf(n)); err != nil || !strings.Contains(string(b), n.Socket) {
			t.Errorf("%s: conflist %s: %v %s, want one naming the agent's socket", n.Name, conflistOf(n), err, b)
		}
		if st.Node.SubnetAssigned {
			t.Errorf("%s: subnet %s shown as assigned by the cluster, which allocates no node CIDRs here", n.Name, st.Node.Subnet)
		}
		ks := st.Node.Kubernetes
		if ks == nil || !ks.Synced || ks.Server != k.srv.URL() {
			t.Errorf("%s: status.node.kubernetes = %+v, want synced with %s", n.Name, ks, k.srv.URL())
		}
		if out := x.cli(n, nil, "status"); !strings.Contains(out.stdout, "kubernetes "+k.srv.URL()+"  synced") {
			t.Errorf("%s: netloom status does not show the API link:\n%s", n.Name, out.stdout)
		}
	}
	r := x.cli(x.node(1), []byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}}\n"), "apply", "-f", "-")
	if r.err == nil || !strings.Contains(r.stderr, "kubectl") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
		t.Errorf("netloom apply in Kubernetes mode: %v, want one line pointing at kubectl", r)
	}
}

// testUnknownPod: the CNI ADD of a pod the API server does not know fails
// (after a bounded wait) and leaves nothing attached; once the pod exists
// it attaches.
func (k *kubeEnv) testUnknownPod(e *polEnv) {
	t := e.t
	ctx := context.Background()
	n := e.node(1)
	start := time.Now()
	_, err := e.c.AddKubePod(ctx, n, "x", "ghost", "0b0e0000-0000-4000-8000-000000000001")
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "x/ghost") || !strings.Contains(err.Error(), "retry") {
		t.Fatalf("CNI ADD of a pod the API server does not know: %v (after %s), want a refusal naming it", err, took)
	}
	t.Logf("refused after %s: %v", took.Round(100*time.Millisecond), err)
	if pods, err := e.getList(n, "pods"); err != nil || find(pods, "x", "ghost") != nil {
		t.Errorf("the refused pod is listed (%v)", err)
	}
	spec := polPodSpec{NS: "x", Name: "ghost", Node: 1, Labels: map[string]string{"app": "web"}, Serve: 8080}
	k.apply(t, polPodObject(spec))
	p := e.attach(spec)
	t.Cleanup(func() {
		if err := e.c.DelPod(context.Background(), p); err != nil {
			t.Errorf("delete pod x/ghost: %v", err)
		}
		k.del(t, polPodObject(spec))
	})
	if !p.IP.IsValid() {
		t.Errorf("pod x/ghost attached without an address")
	}
}

// testServices: a LoadBalancer service of pods in x, with its VIP from an
// AddressPool custom resource: endpoints come from the EndpointSlices of
// kube-controller-manager; the ClusterIP and node port are the API
// server's; the VIP is written into status.loadBalancer.ingress once, and
// the announcing node into an event; a LAN client reaches the VIP and the
// node port, a pod the ClusterIP.
func (k *kubeEnv) testServices(e *polEnv) {
	t := e.t
	ctx := context.Background()
	e.setPolicies()
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": manifests.APIVersion, "kind": manifests.AddressPoolKind,
		"metadata": map[string]any{"name": "lan"},
		"spec":     map[string]any{"addresses": []any{lbPool}},
	}}
	if _, err := k.dyn.Resource(manifests.AddressPoolGVR).Create(ctx, pool, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create AddressPool: %v", err)
	}
	w, err := k.admin.CoreV1().Services("x").Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=web"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(80)}}},
	}
	created, err := k.admin.CoreV1().Services("x").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service: %v", err)
	}
	nodePort := created.Spec.Ports[0].NodePort
	cip := netip.MustParseAddr(created.Spec.ClusterIP)

	var vip netip.Addr
	eventually(t, 30*time.Second, "the VIP in status.loadBalancer.ingress", func() error {
		s, err := k.admin.CoreV1().Services("x").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if vip = kube.IngressIP(s); !vip.IsValid() {
			return fmt.Errorf("status %+v", s.Status.LoadBalancer)
		}
		return nil
	})
	if vip != lbPoolFirst {
		t.Errorf("VIP %s, want the pool's first address %s", vip, lbPoolFirst)
	}
	c1 := e.addClient("c1", client1Addr)
	answered := func(what, ns string, addr netip.AddrPort) {
		eventually(t, 30*time.Second, what, func() error {
			s, err := askTCP(ns, addr, time.Second)
			if err != nil {
				return err
			}
			if !strings.HasPrefix(s, "x/a ") && !strings.HasPrefix(s, "x/c ") {
				return fmt.Errorf("answer %q, want one of x/a or x/c", s)
			}
			return nil
		})
	}
	answered("the VIP from a LAN client", c1.ns, netip.AddrPortFrom(vip, 80))
	answered("the node port of node3 from a LAN client", c1.ns, netip.AddrPortFrom(e.node(3).Addr, uint16(nodePort)))
	answered("the ClusterIP from pod z/b", e.pod("z/b").Pod.NS, netip.AddrPortFrom(cip, 80))
	// Every node shows the API's ClusterIP and node port.
	for _, n := range e.c.Nodes {
		v := e.settled("x/web", true, n)
		if v.clusterIP != cip || v.vip != vip || v.nodePorts[0] != uint16(nodePort) {
			t.Errorf("%s shows %+v, want clusterIP %s, VIP %s, nodePort %d", n.Name, v, cip, vip, nodePort)
		}
	}
	// The announcer in an event: one per move of the VIP, the newest naming
	// the node that announces it now. (Under load the fast failure
	// detection of these tests can declare a node dead for a moment; the
	// VIP then moves and moves back, and each move is an event.)
	eventually(t, 20*time.Second, "a VIPAnnounced event naming the announcer", func() error {
		evs, err := k.admin.CoreV1().Events("x").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=web,reason=VIPAnnounced"})
		if err != nil {
			return err
		}
		if len(evs.Items) == 0 {
			return errors.New("no event")
		}
		// Newest last: etcd's revisions order them (timestamps have
		// seconds only).
		items := evs.Items
		rv := func(ev corev1.Event) int64 { n, _ := strconv.ParseInt(ev.ResourceVersion, 10, 64); return n }
		slices.SortFunc(items, func(a, b corev1.Event) int { return cmp.Compare(rv(a), rv(b)) })
		var msgs []string
		for i, ev := range items {
			msgs = append(msgs, ev.Message)
			if i > 0 && ev.Source.Host == items[i-1].Source.Host {
				return fmt.Errorf("two events in a row from %s, not a move: %q", ev.Source.Host, msgs)
			}
		}
		svcs, err := e.services(e.node(1))
		if err != nil {
			return err
		}
		if owner := items[len(items)-1].Source.Host; svcs["x/web"].owner != owner {
			return fmt.Errorf("the newest event names %s, node1 says %s announces the VIP: %q", owner, svcs["x/web"].owner, msgs)
		}
		if len(items) > 1 {
			t.Logf("the VIP moved while the test ran: %q", msgs)
		}
		return nil
	})
	writes := 0
	var last []corev1.LoadBalancerIngress
	for drained := false; !drained; {
		select {
		case ev := <-w.ResultChan():
			s, ok := ev.Object.(*corev1.Service)
			if !ok || ev.Type != watch.Modified {
				continue
			}
			if fmt.Sprint(s.Status.LoadBalancer.Ingress) != fmt.Sprint(last) {
				writes++
				last = s.Status.LoadBalancer.Ingress
			}
		case <-time.After(time.Second):
			drained = true
		}
	}
	if writes != 1 {
		t.Errorf("status.loadBalancer.ingress changed %d times, want once", writes)
	}
}

// testLocalService: a LoadBalancer service with externalTrafficPolicy
// Local is announced only by a node with a ready endpoint in the
// EndpointSlices the controller manager writes from the pods' status: its
// one pod x/b on node1 makes node1 the announcer and answers through the
// VIP; the pod turned not ready through the API leaves the VIP with no
// announcer; ready again, node1 announces it again.
func (k *kubeEnv) testLocalService(e *polEnv) {
	t := e.t
	ctx := context.Background()
	e.setPolicies()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "local"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "db"},
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Ports:                 []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(80)}}},
	}
	if _, err := k.admin.CoreV1().Services("x").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create service: %v", err)
	}
	owner := func(want string) svcView {
		return e.settledWhere("x/local", want != "", func(v svcView) error {
			if v.owner != want {
				return fmt.Errorf("announced by %q, want %q", v.owner, want)
			}
			return nil
		})
	}
	v := owner("node1")
	c1 := e.addClient("c1", client1Addr)
	eventually(t, 30*time.Second, "x/b through the VIP of x/local", func() error {
		s, err := askTCP(c1.ns, netip.AddrPortFrom(v.vip, 80), time.Second)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(s, "x/b ") {
			return fmt.Errorf("answer %q, want x/b", s)
		}
		return nil
	})
	b := e.pod("x/b").Pod
	if err := demo.SetPodStatus(ctx, k.api, "x", "b", b.IP.String(), false); err != nil {
		t.Fatal(err)
	}
	owner("")
	if err := demo.SetPodStatus(ctx, k.api, "x", "b", b.IP.String(), true); err != nil {
		t.Fatal(err)
	}
	owner("node1")
	if err := k.admin.CoreV1().Services("x").Delete(ctx, "local", metav1.DeleteOptions{}); err != nil {
		t.Errorf("delete service: %v", err)
	}
}

// testAPIServerDown: with the API server stopped, policies and pod traffic
// hold, an agent restarted meanwhile programs the same from its saved
// view, and the VIP still fails over when its owner dies. Then the API
// server comes back and every agent syncs again.
func (k *kubeEnv) testAPIServerDown(e *polEnv) {
	t := e.t
	ctx := context.Background()
	deny := polNP("y", "deny-all", polSel())
	deny.Spec.PolicyTypes = polTypes(polIngress)
	e.setPolicies(deny)
	e.converge(t)
	if err := k.srv.StopAPIServer(); err != nil {
		t.Fatalf("stop the API server: %v", err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			if err := k.startAPIServer(context.Background()); err != nil {
				t.Errorf("start the API server again: %v", err)
			}
		}
	})
	e.checkMatrix(t, 15*time.Second)
	for _, n := range e.c.Nodes {
		eventually(t, 30*time.Second, n.Name+" reports the API server down", func() error {
			if ks := e.status(n).Node.Kubernetes; ks == nil || ks.LastError == "" {
				return fmt.Errorf("status.node.kubernetes = %+v", ks)
			}
			return nil
		})
	}

	n2 := e.node(2)
	if err := e.c.Restart(n2); err != nil {
		t.Fatalf("restart %s: %v", n2.Name, err)
	}
	e.waitReady()
	if ks := e.status(n2).Node.Kubernetes; ks == nil || ks.Synced || !ks.FromSaved {
		t.Errorf("%s after a restart without the API server: %+v, want working from its saved view", n2.Name, ks)
	}
	e.checkMatrix(t, 15*time.Second)

	// The VIP's owner dies: another node takes the VIP over by gossip.
	before := e.settled("x/web", true)
	owner := e.c.Node(before.owner)
	if err := e.c.StopAgent(owner, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the agent of %s: %v", owner.Name, err)
	}
	others := []*demo.Node{}
	for _, n := range e.c.Nodes {
		if n != owner {
			others = append(others, n)
		}
	}
	after := e.settledWhere("x/web", true, func(v svcView) error {
		if v.owner == owner.Name || v.owner == "" {
			return fmt.Errorf("announced by %q", v.owner)
		}
		return nil
	}, others...)
	c2 := e.addClient("c2", client2Addr)
	eventually(t, 20*time.Second, "the VIP answers after its owner died", func() error {
		_, err := askTCP(c2.ns, netip.AddrPortFrom(before.vip, 80), time.Second)
		return err
	})
	t.Logf("VIP %s moved from %s to %s with the API server down", before.vip, owner.Name, after.owner)
	if err := e.c.StartAgent(owner); err != nil {
		t.Fatalf("start %s again: %v", owner.Name, err)
	}
	e.waitReady()

	if err := k.startAPIServer(ctx); err != nil {
		t.Fatalf("start the API server again: %v", err)
	}
	restarted = true
	for _, n := range e.c.Nodes {
		eventually(t, 60*time.Second, n.Name+" synced again", func() error {
			if ks := e.status(n).Node.Kubernetes; ks == nil || !ks.Synced || ks.LastError != "" {
				return fmt.Errorf("status.node.kubernetes = %+v", ks)
			}
			return nil
		})
	}
	e.checkMatrix(t, 15*time.Second)
}
