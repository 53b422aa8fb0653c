package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/netloom/netloom/kube"
	"github.com/netloom/netloom/kube/devapi"
	"github.com/netloom/netloom/node/demo"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeDemo is the control plane of `netloom demo --kubernetes`: etcd,
// kube-apiserver and kube-controller-manager in the demo's switch
// namespace, at the switch's address, which every node reaches.
type kubeDemo struct {
	srv   *devapi.Server
	admin kube.API
	// hostKubeconfig is the admin's kubeconfig for the host, through fwd.
	hostKubeconfig string
	fwd            *demo.Forwarder
}

// startKubeDemo starts the control plane of cl, prepares it for netloom as
// an admin does (`netloom k8s manifests`, the Nodes, netloom's kubeconfig)
// and puts every agent in Kubernetes mode. The agents are not started.
func startKubeDemo(ctx context.Context, cl *demo.Cluster, bins devapi.Binaries, apiPort int) (*kubeDemo, error) {
	dir := filepath.Join(cl.Opts.StateDir, "kube")
	// Node subnets come from the controller manager, as in a cluster that
	// kubeadm init --pod-network-cidr set up.
	srv, err := devapi.Start(ctx, devapi.Config{Bins: bins, Dir: dir, Netns: cl.Switch, Addr: cl.SwitchAddr,
		AllocateNodeCIDRs: true, ClusterCIDR: cl.Opts.ClusterCIDR})
	if err != nil {
		return nil, err
	}
	k := &kubeDemo{srv: srv}
	fail := func(err error) (*kubeDemo, error) { return nil, errors.Join(err, k.stop()) }
	if k.admin, err = kube.NewAPI(srv.RESTConfig()); err != nil {
		return fail(err)
	}
	names := make([]string, len(cl.Nodes))
	for i, n := range cl.Nodes {
		names[i] = n.Name
	}
	agentKC := filepath.Join(cl.Opts.StateDir, "netloom.kubeconfig")
	if err := srv.Bootstrap(ctx, names, agentKC, 24*time.Hour); err != nil {
		return fail(err)
	}
	for _, n := range cl.Nodes {
		n.ExtraArgs = append(n.ExtraArgs, "--kubeconfig", agentKC)
	}
	// The host reaches the API server through node1's namespace; the
	// serving certificate holds 127.0.0.1.
	target := net.JoinHostPort(cl.SwitchAddr.String(), "6443")
	if k.fwd, err = cl.Forward(cl.Nodes[0], net.JoinHostPort("127.0.0.1", strconv.Itoa(apiPort)), target); err != nil {
		return fail(err)
	}
	go k.fwd.Run(ctx)
	k.hostKubeconfig = filepath.Join(cl.Opts.StateDir, "admin.kubeconfig")
	if err := hostKubeconfig(srv.AdminKubeconfig(), k.hostKubeconfig, "https://"+k.fwd.Addr().String()); err != nil {
		return fail(err)
	}
	return k, nil
}

// hostKubeconfig writes a copy of the kubeconfig from with every cluster's
// server set to server.
func hostKubeconfig(from, to, server string) error {
	cfg, err := clientcmd.LoadFromFile(from)
	if err != nil {
		return err
	}
	for _, c := range cfg.Clusters {
		c.Server = server
	}
	return clientcmd.WriteToFile(*cfg, to)
}

// addPods creates the demo's pods as the kubelet would: the Pod object
// (default/<node>-p<i>, label app=demo) on its node, then the CNI ADD
// with its UID, then its status.
func (k *kubeDemo) addPods(ctx context.Context, cl *demo.Cluster) error {
	for _, n := range cl.Nodes {
		for i := 1; i <= cl.Opts.PodsPerNode; i++ {
			name := fmt.Sprintf("%s-p%d", n.Name, i)
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: demo.PodNamespace, Name: name, Labels: map[string]string{"app": "demo", "node": n.Name}},
				Spec:       corev1.PodSpec{NodeName: n.Name, Containers: []corev1.Container{{Name: "app", Image: "demo"}}},
			}
			if err := k.admin.Create(ctx, kube.Ref{Resource: "pods", Namespace: demo.PodNamespace}, pod, nil); err != nil {
				return fmt.Errorf("create pod %s: %w", name, err)
			}
			if _, err := cl.RunAPIPod(ctx, k.admin, n, demo.PodNamespace, name); err != nil {
				return err
			}
		}
	}
	return nil
}

func (k *kubeDemo) describe() string {
	return fmt.Sprintf("\nKubernetes API server %s (in the switch namespace), on the host at https://%s\n"+
		"  admin kubeconfig: %s  (KUBECONFIG=%s kubectl get pods -o wide; kubectl 1.35 or newer)\n"+
		"  the agents run in Kubernetes mode: pods, services and NetworkPolicies come from this API server\n",
		k.srv.URL(), k.fwd.Addr(), k.hostKubeconfig, k.hostKubeconfig)
}

// stop ends the forwarder and every control plane process.
func (k *kubeDemo) stop() error {
	if k.fwd != nil {
		k.fwd.Close()
	}
	return k.srv.Stop()
}
