package integration

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/netloom/netloom/kube"
	"github.com/netloom/netloom/kube/devapi"
	"github.com/netloom/netloom/kube/manifests"
	"github.com/netloom/netloom/node/demo"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestKubernetesNodeCIDRs: in a cluster whose kube-controller-manager
// allocates node CIDRs (--allocate-node-cidrs, as kubeadm's
// --pod-network-cidr sets up), each agent takes its Node's spec.podCIDR as
// its pod subnet instead of agreeing on one by gossip, its pods get
// addresses from it, and pods on different nodes reach each other. The
// agents run beside a kube-proxy (--service-proxy=labelled): netloom
// proxies only the services labelled for it, and gives the others VIPs
// only, as MetalLB would.
func TestKubernetesNodeCIDRs(t *testing.T) {
	needRoot(t)
	x := newCluster(t, demo.Options{Nodes: 2, PodsPerNode: -1})
	k := newKubeEnv(t, x, func(c *devapi.Config) {
		c.AllocateNodeCIDRs, c.ClusterCIDR, c.NodeCIDRMaskSize = true, x.c.Opts.ClusterCIDR, 24
	})
	ctx := context.Background()
	podCIDR := map[string]netip.Prefix{}
	for _, n := range x.c.Nodes {
		eventually(t, 30*time.Second, "spec.podCIDR of Node "+n.Name, func() error {
			node, err := k.admin.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			p, err := netip.ParsePrefix(node.Spec.PodCIDR)
			if err != nil {
				return fmt.Errorf("spec.podCIDR %q", node.Spec.PodCIDR)
			}
			podCIDR[n.Name] = p
			return nil
		})
		n.ExtraArgs = append(n.ExtraArgs, k.agentArgs()...)
		n.ExtraArgs = append(n.ExtraArgs, "--cni-conflist", conflistOf(n), "--service-proxy", "labelled")
	}
	x.start()

	var pods []*demo.Pod
	for _, n := range x.c.Nodes {
		if st := x.status(n); st.Node.Subnet != podCIDR[n.Name].String() || !st.Node.SubnetAssigned {
			t.Errorf("%s: pod subnet %s (assigned %v), want its spec.podCIDR %s, assigned", n.Name, st.Node.Subnet, st.Node.SubnetAssigned, podCIDR[n.Name])
		}
		if b, _ := os.ReadFile(n.LogPath); !strings.Contains(string(b), "the cluster assigned (spec.podCIDR)") {
			t.Errorf("%s: the agent's log does not say the subnet came from spec.podCIDR", n.Name)
		}
		name := "p-" + n.Name
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{"app": "p"}},
			Spec:       corev1.PodSpec{NodeName: n.Name, Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
		}
		if _, err := k.admin.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod %s: %v", name, err)
		}
		p := k.attach(x, n, "default", name)
		if !podCIDR[n.Name].Contains(p.IP) {
			t.Errorf("pod %s on %s got %s, outside the node's spec.podCIDR %s", name, n.Name, p.IP, podCIDR[n.Name])
		}
		pods = append(pods, p)
	}
	for _, pair := range [][2]*demo.Pod{{pods[0], pods[1]}, {pods[1], pods[0]}} {
		eventually(t, 20*time.Second, fmt.Sprintf("ping %s -> %s", pair[0].Name, pair[1].Name), func() error {
			if r := inNS(pair[0].NS, nil, nil, "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", pair[1].IP.String()); r.err != nil {
				return fmt.Errorf("%v", r)
			}
			return nil
		})
	}
	t.Run("LabelledProxy", func(t *testing.T) { k.testLabelledProxy(x.with(t), pods[0], pods[1]) })
	if f := k.forbidden(x); len(f) > 0 {
		t.Errorf("the API server refused netloom something (the ClusterRole must be enough):\n%s", strings.Join(f, "\n"))
	}
}

// testLabelledProxy: with --service-proxy=labelled a LoadBalancer service
// labelled service.kubernetes.io/service-proxy-name=netloom is proxied by
// netloom (its ClusterIP answers from a pod); one without the label gets
// a VIP from the pool, written into its status and announced, but netloom
// programs no proxy rule for it (kube-proxy's job).
func (k *kubeEnv) testLabelledProxy(x *tc, client, backend *demo.Pod) {
	t := x.t
	ctx := context.Background()
	serveLine(t, backend, 8080, "backend")
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": manifests.APIVersion, "kind": manifests.AddressPoolKind,
		"metadata": map[string]any{"name": "lan"},
		"spec":     map[string]any{"addresses": []any{lbPool}},
	}}
	if _, err := k.dyn.Resource(manifests.AddressPoolGVR).Create(ctx, pool, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create AddressPool: %v", err)
	}
	mk := func(name string, labels map[string]string) *corev1.Service {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: labels},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "p"},
				Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		}
		out, err := k.admin.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create service %s: %v", name, err)
		}
		return out
	}
	mine := mk("mine", map[string]string{kube.ProxyNameLabel: "netloom"})
	theirs := mk("theirs", nil)
	for _, svc := range []*corev1.Service{mine, theirs} {
		eventually(t, 30*time.Second, "the VIP of "+svc.Name+" in its status", func() error {
			s, err := k.admin.CoreV1().Services("default").Get(ctx, svc.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !kube.IngressIP(s).IsValid() {
				return fmt.Errorf("status %+v", s.Status.LoadBalancer)
			}
			return nil
		})
		x.settled(svc.Name, true)
	}
	eventually(t, 20*time.Second, "the ClusterIP of the labelled service", func() error {
		s, err := askTCP(client.NS, netip.AddrPortFrom(netip.MustParseAddr(mine.Spec.ClusterIP), 80), time.Second)
		if err == nil && s != "backend" {
			err = fmt.Errorf("answer %q", s)
		}
		return err
	})
	// An address in nft's output, not a prefix of a longer one.
	has := func(rules, ip string) bool {
		return regexp.MustCompile(`(^|[^0-9.])` + regexp.QuoteMeta(ip) + `($|[^0-9])`).MatchString(rules)
	}
	for _, n := range x.c.Nodes {
		rules := x.must(n.NS, "nft", "list", "ruleset")
		if !has(rules, mine.Spec.ClusterIP) {
			t.Errorf("%s: no proxy rule for the labelled service's ClusterIP %s", n.Name, mine.Spec.ClusterIP)
		}
		if has(rules, theirs.Spec.ClusterIP) {
			t.Errorf("%s: netloom proxies the ClusterIP %s of a service left to kube-proxy", n.Name, theirs.Spec.ClusterIP)
		}
	}
}

// serveLine answers every TCP connection to port in pod p with line, until
// the test ends.
func serveLine(t *testing.T, p *demo.Pod, port int, line string) {
	t.Helper()
	var ln net.Listener
	err := demo.Do(p.NS, func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatalf("listen in pod %s: %v", p.Name, err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, line)
			c.Close()
		}
	}()
}
