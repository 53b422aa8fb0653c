package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/netloom/netloom/kube"
	"github.com/netloom/netloom/kube/devapi"
	"github.com/netloom/netloom/node/api"
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
	// api is the admin's kube.API, for the demo's kubelet.
	api kube.API
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
	if k.api, err = kube.NewAPI(cfg); err != nil {
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
	p, err := cl.RunAPIPod(ctx, k.api, n, s.ns, s.name)
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

// memObjects are the objects of the memory comparison: pods (bound to the
// nodes, never attached: objects only) and ClusterIP services selecting
// them, in namespace mem.
func memObjects(nodes []*demo.Node, pods, services int) []any {
	objs := []any{namespaceObj("mem", map[string]string{"team": "mem"})}
	for i := range pods {
		p := podObj(podSpec{"mem", fmt.Sprintf("p%05d", i), 1, map[string]string{"app": fmt.Sprintf("app-%d", i%services)}})
		p.Spec.NodeName = nodes[i%len(nodes)].Name
		objs = append(objs, p)
	}
	for i := range services {
		objs = append(objs, &corev1.Service{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "mem", Name: fmt.Sprintf("s%04d", i)},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": fmt.Sprintf("app-%d", i)},
				Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}},
		})
	}
	return objs
}

// kubeMem compares, in one run, the agents' memory with the same objects
// (o.memPods pods and o.memServices services) from `netloom apply`
// (standalone) and from the Kubernetes API (informers): VmRSS and VmHWM
// of each agent once every node lists every service.
func kubeMem(ctx context.Context, dir string, o options, log *slog.Logger, w io.Writer) error {
	start := time.Now()
	bins, err := devapi.Build(ctx, devapi.Options{Progress: func(s string) { fmt.Fprintln(os.Stderr, s) }})
	if err != nil {
		return err
	}
	type row struct {
		mode     string
		rss, hwm map[string]int64 // node -> kB
	}
	var rows []row
	for _, mode := range []string{"apply", "API"} {
		var b *devapi.Binaries
		if mode == "API" {
			b = &bins
		}
		r, done, err := startE2E(ctx, dir, o, log, b)
		if err != nil {
			return fmt.Errorf("%s mode: %w", mode, err)
		}
		res, err := r.memory(memObjects(r.cl.Nodes, o.memPods, o.memServices), o.memServices)
		if derr := done(); err == nil {
			err = derr
		}
		if err != nil {
			return fmt.Errorf("%s mode: %w", mode, err)
		}
		rows = append(rows, row{mode, res[0], res[1]})
	}
	fmt.Fprintf(w, "## Agent memory: the same objects from netloom apply and from the Kubernetes API\n\n")
	fmt.Fprintf(w, "2 nodes; %d pods (objects only) and %d ClusterIP services, plus the benchmark's own pods; VmRSS and VmHWM of each agent once every node lists every service, after 10 s\n\n", o.memPods, o.memServices)
	fmt.Fprintf(w, "| objects from | node1 VmRSS | node2 VmRSS | node1 VmHWM | node2 VmHWM |\n| --- | ---: | ---: | ---: | ---: |\n")
	for _, rw := range rows {
		fmt.Fprintf(w, "| %s | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB |\n", rw.mode,
			float64(rw.rss["node1"])/1024, float64(rw.rss["node2"])/1024, float64(rw.hwm["node1"])/1024, float64(rw.hwm["node2"])/1024)
	}
	a, k := rows[0], rows[1]
	fmt.Fprintf(w, "\nAPI / apply, VmRSS: node1 %.2f, node2 %.2f\n\nwall time: %s\n\n",
		float64(k.rss["node1"])/float64(a.rss["node1"]), float64(k.rss["node2"])/float64(a.rss["node2"]), time.Since(start).Round(time.Second))
	return nil
}

// memory sends objs (through the API or netloom apply), waits until every
// node lists services services in namespace mem, waits 10 s, and reads
// each agent's VmRSS and VmHWM.
func (r *e2eRun) memory(objs []any, services int) ([2]map[string]int64, error) {
	var out [2]map[string]int64
	if r.kube != nil {
		if err := r.kube.create(r.ctx, objs); err != nil {
			return out, err
		}
	} else {
		for i := 0; i < len(objs); i += 500 {
			if err := r.apply(r.cl.Nodes[0], objs[i:min(i+500, len(objs))], false); err != nil {
				return out, err
			}
		}
	}
	deadline := time.Now().Add(5 * time.Minute)
	for _, n := range r.cl.Nodes {
		for {
			var list []json.RawMessage
			ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
			err := r.api[n.Name].Do(ctx, "GET", api.PathObjects+"?kind=Service&namespace=mem", nil, &list)
			cancel()
			if err == nil && len(list) == services {
				break
			}
			if time.Now().After(deadline) {
				return out, fmt.Errorf("%s lists %d of %d services after 5 minutes (%v)", n.Name, len(list), services, err)
			}
			if err := sleep(r.ctx, time.Second); err != nil {
				return out, err
			}
		}
	}
	if err := sleep(r.ctx, 10*time.Second); err != nil {
		return out, err
	}
	out[0], out[1] = map[string]int64{}, map[string]int64{}
	for _, n := range r.cl.Nodes {
		st, err := procStatus(n.Agent.Pid)
		if err != nil {
			return out, err
		}
		out[0][n.Name], out[1][n.Name] = st["VmRSS"], st["VmHWM"]
	}
	return out, nil
}

// create creates Namespaces, Pods and Services through the API.
func (k *kubeRun) create(ctx context.Context, objs []any) error {
	for _, o := range objs {
		var err error
		switch v := o.(type) {
		case *corev1.Namespace:
			_, err = k.admin.CoreV1().Namespaces().Create(ctx, v, metav1.CreateOptions{})
		case *corev1.Pod:
			_, err = k.admin.CoreV1().Pods(v.Namespace).Create(ctx, v, metav1.CreateOptions{})
		case *corev1.Service:
			_, err = k.admin.CoreV1().Services(v.Namespace).Create(ctx, v, metav1.CreateOptions{})
		default:
			err = fmt.Errorf("the benchmark does not create %T through the API", o)
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return nil
}

// kubePod measures, in one run, the time from a new pod's creation until
// a pod on the other node connects to it: in standalone mode the Pod object
// goes in with netloom apply and the CNI ADD follows; in Kubernetes mode
// the Pod object is created through the API and the test kubelet runs the
// CNI ADD with its UID and writes its status. Each new pod serves TCP in
// this process from the moment ADD returns; perf/client (node1) tries a
// connection every 5 ms.
func kubePod(ctx context.Context, dir string, o options, log *slog.Logger, w io.Writer) error {
	start := time.Now()
	bins, err := devapi.Build(ctx, devapi.Options{Progress: func(s string) { fmt.Fprintln(os.Stderr, s) }})
	if err != nil {
		return err
	}
	took := map[string][]time.Duration{}
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
		for i := range o.podRuns {
			d, err := r.newPodReachable(podSpec{"perf", fmt.Sprintf("new%d", i), 2, map[string]string{"role": "new"}})
			if err != nil {
				return fmt.Errorf("%s mode: %w", mode, errJoin(err, done()))
			}
			took[mode] = append(took[mode], d)
			fmt.Fprintf(os.Stderr, "  %s: pod %d reachable after %s\n", mode, i, d.Round(time.Millisecond))
		}
		if err := done(); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "## New pod to pod-to-pod traffic: netloom apply vs the Kubernetes API\n\n")
	fmt.Fprintf(w, "2 nodes; %d pods per mode; from the create request until a connection from perf/client (node1) to the new pod (node2) succeeds\n\n", o.podRuns)
	fmt.Fprintf(w, "| objects from | median | min | max |\n| --- | ---: | ---: | ---: |\n")
	for _, m := range modes {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", m, ms(medianD(took[m])), ms(slices.Min(took[m])), ms(slices.Max(took[m])))
	}
	fmt.Fprintf(w, "\nAPI / apply (medians): %.2f\n\nwall time: %s\n\n", float64(medianD(took["API"]))/float64(medianD(took["apply"])), time.Since(start).Round(time.Second))
	return nil
}

// newPodReachable creates pod s as its mode does, serves TCP connPort in
// it once attached, and returns the time from the start until perf/client
// first connects to it.
func (r *e2eRun) newPodReachable(s podSpec) (time.Duration, error) {
	t0 := time.Now()
	var p *demo.Pod
	var err error
	if r.kube != nil {
		p, err = r.kube.addPod(r.ctx, r.cl, s)
	} else {
		if err = r.apply(r.cl.Nodes[0], []any{podObj(s)}, false); err == nil {
			p, err = r.cl.AddPodIn(r.ctx, r.cl.Nodes[s.node-1], s.ns, s.name)
		}
	}
	if err != nil {
		return 0, err
	}
	var ln net.Listener
	if err := demo.Do(p.NS, func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", connPort))
		return err
	}); err != nil {
		return 0, err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := dialIn(r.client.NS, netip.AddrPortFrom(p.IP, connPort), 200*time.Millisecond); err == nil {
			return time.Since(t0), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("pod %s/%s (%s) not reachable from perf/client after 30 s", s.ns, s.name, p.IP)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
