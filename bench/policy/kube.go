package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/netloom/netloom/kube/devapi"
	"github.com/netloom/netloom/node/demo"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// kubeRun is the control plane of a cluster in Kubernetes mode.
type kubeRun struct {
	srv   *devapi.Server
	admin kubernetes.Interface
}

// startKube runs etcd, kube-apiserver and kube-controller-manager in the
// switch namespace of cl, prepares them for netloom as an admin does, and
// puts the agents in Kubernetes mode (they are not started yet).
func startKube(ctx context.Context, cl *demo.Cluster, bins devapi.Binaries) (*kubeRun, error) {
	srv, err := devapi.Start(ctx, devapi.Config{Bins: bins, Dir: filepath.Join(cl.Opts.StateDir, "kube"), Netns: cl.Switch, Addr: cl.SwitchAddr})
	if err != nil {
		return nil, err
	}
	k := &kubeRun{srv: srv}
	cfg := srv.RESTConfig()
	cfg.QPS, cfg.Burst = 1000, 1000 // thousands of policies, one request each
	if k.admin, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	names := []string{}
	for _, n := range cl.Nodes {
		names = append(names, n.Name)
	}
	kc := filepath.Join(cl.Opts.StateDir, "netloom.kubeconfig")
	if err := srv.Bootstrap(ctx, names, kc, 24*time.Hour); err != nil {
		return k, err
	}
	for _, n := range cl.Nodes {
		n.ExtraArgs = append(n.ExtraArgs, "--kubeconfig", kc)
	}
	return k, nil
}

// addPod does what the kubelet does for pod s: its object is in the API
// already (bound to its node), the CNI ADD gets its UID, then its status.
func (k *kubeRun) addPod(ctx context.Context, cl *demo.Cluster, s podSpec) (*demo.Pod, error) {
	n := cl.Nodes[s.node-1]
	obj := podObj(s)
	obj.Spec.NodeName = n.Name
	if _, err := k.admin.CoreV1().Pods(s.ns).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", s.ns, s.name, err)
	}
	p, err := cl.RunAPIPod(ctx, k.admin, n, s.ns, s.name)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// apply creates or updates (or deletes) Namespaces and NetworkPolicies
// through the API, as kubectl apply does.
func (k *kubeRun) apply(ctx context.Context, objs []any, del bool) error {
	for _, o := range objs {
		var err error
		switch v := o.(type) {
		case *corev1.Namespace:
			if del {
				return fmt.Errorf("the benchmark does not delete namespaces")
			}
			if _, err = k.admin.CoreV1().Namespaces().Create(ctx, v, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
				var cur *corev1.Namespace
				if cur, err = k.admin.CoreV1().Namespaces().Get(ctx, v.Name, metav1.GetOptions{}); err == nil {
					cur.Labels = v.Labels
					_, err = k.admin.CoreV1().Namespaces().Update(ctx, cur, metav1.UpdateOptions{})
				}
			}
		case *networkingv1.NetworkPolicy:
			c := k.admin.NetworkingV1().NetworkPolicies(v.Namespace)
			switch {
			case del:
				if err = c.Delete(ctx, v.Name, metav1.DeleteOptions{}); apierrors.IsNotFound(err) {
					err = nil
				}
			default:
				if _, err = c.Create(ctx, v, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
					var cur *networkingv1.NetworkPolicy
					if cur, err = c.Get(ctx, v.Name, metav1.GetOptions{}); err == nil {
						cur.Spec = v.Spec
						_, err = c.Update(ctx, cur, metav1.UpdateOptions{})
					}
				}
			}
		default:
			return fmt.Errorf("the benchmark does not send %T through the API", o)
		}
		if err != nil {
			return fmt.Errorf("API %T: %w", o, err)
		}
	}
	return nil
}

// kubeBench measures, in one run, the time from a change of a
// NetworkPolicy to its verdict on new connections, through `netloom
// apply` (standalone mode) and through the Kubernetes API (Kubernetes
// mode), with sets of o.kubeSizes unrelated policies installed: the same
// 2-node cluster, pods and toggles as e2e, built once per mode.
func kubeBench(ctx context.Context, dir string, o options, log *slog.Logger, w io.Writer) error {
	start := time.Now()
	bins, err := devapi.Build(ctx, devapi.Options{Progress: func(s string) { fmt.Fprintln(os.Stderr, s) }})
	if err != nil {
		return err
	}
	type key struct {
		mode string
		size int
	}
	took := map[key][]time.Duration{}
	modes := []string{"apply", "API"}
	for _, mode := range modes {
		var b *devapi.Binaries
		if mode == "API" {
			b = &bins
		}
		r, done, err := startE2E(ctx, dir, o, log, b)
		if err != nil {
			return fmt.Errorf("%s mode: %w", mode, err)
		}
		for _, size := range o.kubeSizes {
			p, err := r.enter(fmt.Sprintf("%s, %d unrelated", mode, size), append(unrelatedPolicies(size, bulkNamespaces), allowPolicy(true)))
			if err == nil {
				err = r.toggles(p)
			}
			if err != nil {
				return fmt.Errorf("%s mode, %d policies: %w", mode, size, errJoin(err, done()))
			}
			for _, t := range p.toggles {
				took[key{mode, size}] = append(took[key{mode, size}], t.took)
			}
		}
		if err := done(); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "## NetworkPolicy change to verdict: netloom apply vs the Kubernetes API\n\n")
	fmt.Fprintf(w, "2 nodes; the allow policy toggled %d times per node and direction (%d changes per cell); time from the request until new connections (every 5 ms) all meet the new verdict\n\n", o.toggles, 4*o.toggles)
	fmt.Fprintf(w, "| unrelated policies | apply median | apply max | API median | API max | API / apply (medians) |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, size := range o.kubeSizes {
		a, k := took[key{"apply", size}], took[key{"API", size}]
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %.2f |\n", size, ms(medianD(a)), ms(slices.Max(a)), ms(medianD(k)), ms(slices.Max(k)), float64(medianD(k))/float64(medianD(a)))
	}
	fmt.Fprintf(w, "\nwall time: %s\n\n", time.Since(start).Round(time.Second))
	return nil
}

// medianD is the median of durations.
func medianD(d []time.Duration) time.Duration {
	xs := make([]float64, len(d))
	for i, v := range d {
		xs[i] = float64(v)
	}
	return time.Duration(median(xs))
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

func errJoin(a, b error) error {
	if b == nil {
		return a
	}
	return fmt.Errorf("%w (and removing the cluster: %v)", a, b)
}
