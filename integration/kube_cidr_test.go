package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/netloom/netloom/kube/devapi"
	"github.com/netloom/netloom/node/demo"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestKubernetesNodeCIDRs: in a cluster whose kube-controller-manager
// allocates node CIDRs (--allocate-node-cidrs, as kubeadm's
// --pod-network-cidr sets up), each agent takes its Node's spec.podCIDR as
// its pod subnet instead of agreeing on one by gossip, its pods get
// addresses from it, and pods on different nodes reach each other.
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
		n.ExtraArgs = append(n.ExtraArgs, "--cni-conflist", conflistOf(n))
	}
	x.start()

	var pods []*demo.Pod
	for _, n := range x.c.Nodes {
		if st := x.status(n); st.Node.Subnet != podCIDR[n.Name].String() {
			t.Errorf("%s: pod subnet %s, want its spec.podCIDR %s", n.Name, st.Node.Subnet, podCIDR[n.Name])
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
	if f := k.forbidden(x); len(f) > 0 {
		t.Errorf("the API server refused netloom something (the ClusterRole must be enough):\n%s", strings.Join(f, "\n"))
	}
}
