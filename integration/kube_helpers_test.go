package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netloom/netloom/kube"
	"github.com/netloom/netloom/kube/devapi"
	"github.com/netloom/netloom/node/demo"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeEnv is a real control plane (etcd, kube-apiserver with RBAC and a
// token file, kube-controller-manager) in the switch namespace of a demo
// cluster, at the switch's address, which every node reaches on the LAN.
// The test plays the kubelet: it creates Node and Pod objects, runs the
// CNI plugin with containerd's arguments and writes pod status.
type kubeEnv struct {
	srv   *devapi.Server
	admin kubernetes.Interface
	// api is the admin's kube.API, for the demo's kubelet.
	api kube.API
	dyn dynamic.Interface
	// kubeconfig is netloom's: a token of its ServiceAccount, bound to
	// the ClusterRole of `netloom k8s manifests`.
	kubeconfig string
	// netloom is a client with netloom's credentials.
	netloom kubernetes.Interface
	// restarts are when the API server was started again and when it
	// first honoured netloom's credentials: until its RBAC caches have
	// synced it refuses requests with 403, whatever the ClusterRole says,
	// even after /readyz answers ok.
	restarts [][2]time.Time
}

// startAPIServer starts the API server again and notes from when until
// it lets netloom list nodes, and a second more: a request it refused
// just before is logged a moment later.
func (k *kubeEnv) startAPIServer(ctx context.Context) error {
	from := time.Now()
	err := k.srv.StartAPIServer(ctx)
	if err == nil {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		for {
			_, err = k.netloom.CoreV1().Nodes().List(ctx, metav1.ListOptions{Limit: 1})
			if err == nil || ctx.Err() != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			err = fmt.Errorf("the API server refuses netloom's credentials after a restart: %w", err)
		}
	}
	k.restarts = append(k.restarts, [2]time.Time{from, time.Now().Add(time.Second)})
	return err
}

// restarting reports whether a log line's time falls while the API server
// was starting again.
func (k *kubeEnv) restarting(line string) bool {
	_, rest, ok := strings.Cut(line, "time=")
	if !ok {
		return false
	}
	stamp, _, _ := strings.Cut(rest, " ")
	at, err := time.Parse(time.RFC3339Nano, stamp)
	if err != nil {
		return false
	}
	for _, w := range k.restarts {
		if !at.Before(w[0]) && !at.After(w[1]) {
			return true
		}
	}
	return false
}

// newKubeEnv builds the binaries (cached after the first time), starts
// the control plane in x's switch namespace, applies `netloom k8s
// manifests` as an admin would, creates a Node object per node and writes
// netloom's kubeconfig. The agents are not started.
func newKubeEnv(t *testing.T, x *tc, opts ...func(*devapi.Config)) *kubeEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	bins, err := devapi.Build(ctx, devapi.Options{Progress: func(s string) { t.Log(s) }})
	if err != nil {
		t.Fatalf("build the control plane: %v", err)
	}
	dir := filepath.Join(x.c.Opts.StateDir, "kube")
	cfg := devapi.Config{Bins: bins, Dir: dir, Netns: x.c.Switch, Addr: x.c.SwitchAddr}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := devapi.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start the control plane: %v", err)
	}
	// Registered after the cluster's removal: runs before it, so that no
	// process is left in the switch namespace.
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Errorf("stop the control plane: %v", err)
		}
	})
	k := &kubeEnv{srv: srv}
	rc := srv.RESTConfig()
	if k.admin, err = kubernetes.NewForConfig(rc); err != nil {
		t.Fatal(err)
	}
	if k.api, err = kube.NewAPI(rc); err != nil {
		t.Fatal(err)
	}
	if k.dyn, err = dynamic.NewForConfig(rc); err != nil {
		t.Fatal(err)
	}
	k.kubeconfig = filepath.Join(x.c.Opts.StateDir, "netloom.kubeconfig")
	names := make([]string, len(x.c.Nodes))
	for i, n := range x.c.Nodes {
		names[i] = n.Name
	}
	if err := srv.Bootstrap(ctx, names, k.kubeconfig, 24*time.Hour); err != nil {
		t.Fatalf("bootstrap the control plane for netloom: %v", err)
	}
	// netloom's token, through the control plane's dialer into the switch
	// namespace.
	kc, err := clientcmd.LoadFromFile(k.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	nc := srv.RESTConfig()
	for _, a := range kc.AuthInfos {
		nc.BearerToken = a.Token
	}
	if k.netloom, err = kubernetes.NewForConfig(nc); err != nil {
		t.Fatal(err)
	}
	if _, err := k.netloom.CoreV1().Nodes().List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		t.Fatalf("list nodes with netloom's credentials: %v", err)
	}
	return k
}

// attach plays the kubelet for pod ns/name (its object must exist, bound
// to n): the CNI ADD with its UID, then its status.
func (k *kubeEnv) attach(x *tc, n *demo.Node, ns, name string) *demo.Pod {
	x.t.Helper()
	p, err := x.c.RunAPIPod(context.Background(), k.api, n, ns, name)
	if err != nil {
		x.t.Fatalf("add pod %s/%s: %v", ns, name, err)
	}
	return p
}

// apply creates or updates objects through the API (what kubectl apply
// does for these kinds; a Pod's spec cannot change, so only its labels do).
func (k *kubeEnv) apply(t *testing.T, objs ...any) {
	t.Helper()
	ctx := context.Background()
	for _, o := range objs {
		var err error
		switch v := o.(type) {
		case *corev1.Namespace:
			var cur *corev1.Namespace
			if cur, err = k.admin.CoreV1().Namespaces().Get(ctx, v.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				_, err = k.admin.CoreV1().Namespaces().Create(ctx, v, metav1.CreateOptions{})
			} else if err == nil {
				cur.Labels = v.Labels
				_, err = k.admin.CoreV1().Namespaces().Update(ctx, cur, metav1.UpdateOptions{})
			}
		case *corev1.Pod:
			var cur *corev1.Pod
			if cur, err = k.admin.CoreV1().Pods(v.Namespace).Get(ctx, v.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				_, err = k.admin.CoreV1().Pods(v.Namespace).Create(ctx, v, metav1.CreateOptions{})
			} else if err == nil {
				cur.Labels = v.Labels
				_, err = k.admin.CoreV1().Pods(v.Namespace).Update(ctx, cur, metav1.UpdateOptions{})
			}
		case *networkingv1.NetworkPolicy:
			var cur *networkingv1.NetworkPolicy
			if cur, err = k.admin.NetworkingV1().NetworkPolicies(v.Namespace).Get(ctx, v.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				_, err = k.admin.NetworkingV1().NetworkPolicies(v.Namespace).Create(ctx, v, metav1.CreateOptions{})
			} else if err == nil {
				cur.Labels, cur.Spec = v.Labels, v.Spec
				_, err = k.admin.NetworkingV1().NetworkPolicies(v.Namespace).Update(ctx, cur, metav1.UpdateOptions{})
			}
		default:
			t.Fatalf("kube apply: %T is not handled", o)
		}
		if err != nil {
			t.Fatalf("kube apply %T: %v", o, err)
		}
	}
}

// del deletes objects through the API.
func (k *kubeEnv) del(t *testing.T, objs ...any) {
	t.Helper()
	ctx := context.Background()
	now := metav1.DeleteOptions{GracePeriodSeconds: new(int64)}
	for _, o := range objs {
		var err error
		switch v := o.(type) {
		case *corev1.Pod:
			err = k.admin.CoreV1().Pods(v.Namespace).Delete(ctx, v.Name, now)
		case *networkingv1.NetworkPolicy:
			err = k.admin.NetworkingV1().NetworkPolicies(v.Namespace).Delete(ctx, v.Name, now)
		default:
			t.Fatalf("kube delete: %T is not handled", o)
		}
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("kube delete %T: %v", o, err)
		}
	}
}

// agentArgs are the flags that put an agent in Kubernetes mode.
func (k *kubeEnv) agentArgs() []string { return []string{"--kubeconfig", k.kubeconfig} }

// forbidden lists the lines of the agents' logs where the API server
// refused netloom something (but while it was starting again, when the
// agent warns and retries): the ClusterRole must be enough.
func (k *kubeEnv) forbidden(x *tc) []string {
	var out []string
	for _, n := range x.c.Nodes {
		b, _ := os.ReadFile(n.LogPath)
		for _, l := range strings.Split(string(b), "\n") {
			// While the API server starts again a refusal is its doing,
			// and the agent must say so, not blame the ClusterRole.
			// (Not a bare "403": a timestamp's milliseconds can read so.)
			refused := strings.Contains(l, "(403)") || strings.Contains(strings.ToLower(l), "forbid")
			if refused && (!k.restarting(l) || strings.Contains(l, "level=ERROR")) {
				out = append(out, fmt.Sprintf("%s: %s", n.Name, l))
			}
		}
	}
	return out
}
