package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/kube/devapi"
	"github.com/netloom/netloom/lb/proxy"
	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/demo"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// scaleMem measures the agents' memory at the scale issue #12 sets, in
// Kubernetes mode (the API server holds the pods' addresses, so pods need
// not be attached): o.scalePods Pod objects in the bulk namespaces with
// addresses in their status, then o.scaleServices ClusterIP services of 10
// endpoints each (the controller manager's EndpointSlices), then, the
// services deleted, o.scalePolicies policies over those pods. After each
// step it waits until every node's kernel holds it, then 20 s, and reads
// VmRSS and VmHWM of each agent and its heap profile (into -heap-dir).
func scaleMem(ctx context.Context, dir string, o options, log *slog.Logger, w io.Writer) error {
	start := time.Now()
	bins, err := devapi.Build(ctx, devapi.Options{Progress: func(s string) { fmt.Fprintln(os.Stderr, s) }})
	if err != nil {
		return err
	}
	r, done, err := startE2E(ctx, dir, o, log, &bins)
	if err != nil {
		return err
	}
	type row struct {
		step            string
		rss, later, hwm map[string]int64 // node -> kB
		heap            map[string]int64 // node -> bytes in use
	}
	var rows []row
	// read reads VmRSS 20 s after the step is in the kernel, and again
	// a minute later (the controller manager and the agents may still be
	// busy at the first reading), then VmHWM and the live heap.
	read := func(step string) error {
		rw := row{step: step, rss: map[string]int64{}, later: map[string]int64{}, hwm: map[string]int64{}, heap: map[string]int64{}}
		for _, at := range []map[string]int64{rw.rss, rw.later} {
			wait := 20 * time.Second
			if len(rw.rss) > 0 {
				wait = time.Minute
			}
			if err := sleep(r.ctx, wait); err != nil {
				return err
			}
			for _, n := range r.cl.Nodes {
				st, err := procStatus(n.Agent.Pid)
				if err != nil {
					return err
				}
				at[n.Name], rw.hwm[n.Name] = st["VmRSS"], st["VmHWM"]
			}
		}
		for _, n := range r.cl.Nodes {
			var err error
			path := ""
			if o.heapDir != "" {
				path = filepath.Join(o.heapDir, fmt.Sprintf("%s-%s.pb.gz", step, n.Name))
			}
			if rw.heap[n.Name], err = r.heapProfile(n, path); err != nil {
				return err
			}
		}
		fmt.Fprintf(os.Stderr, "%s: VmRSS %v kB, a minute later %v kB\n", step, rw.rss, rw.later)
		rows = append(rows, rw)
		return nil
	}
	err = func() error {
		if err := read("idle"); err != nil {
			return err
		}
		if err := r.scalePods(o.scalePods); err != nil {
			return err
		}
		if err := read("pods"); err != nil {
			return err
		}
		if o.scaleServices == 0 {
			return r.scalePolicies(o.scalePolicies, read)
		}
		svcs := scaleServices(o.scaleServices, o.scalePods)
		if err := r.kube.create(r.ctx, svcs); err != nil {
			return err
		}
		if err := r.waitElements(proxy.MapEndpoints, 10*o.scaleServices, -1); err != nil {
			return err
		}
		if err := read("services"); err != nil {
			return err
		}
		for _, s := range svcs {
			s := s.(*corev1.Service)
			if err := r.kube.admin.CoreV1().Services(s.Namespace).Delete(r.ctx, s.Name, metav1.DeleteOptions{}); err != nil {
				return fmt.Errorf("delete service %s/%s: %w", s.Namespace, s.Name, err)
			}
		}
		// The API server's own service (kubernetes) stays.
		if err := r.waitElements(proxy.MapEndpoints, 0, 10); err != nil {
			return err
		}
		return r.scalePolicies(o.scalePolicies, read)
	}()
	if derr := done(); err == nil {
		err = derr
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "## Agent memory at scale (Kubernetes mode, 2 nodes)\n\n")
	fmt.Fprintf(w, "pods: %d Pod objects with addresses (not attached) in %d namespaces; services: + %d ClusterIP services x 10 endpoints (0: step skipped); policies: services deleted, + %d NetworkPolicies over those pods. VmRSS read 20 s after every node's kernel holds the step and again a minute later; live heap = HeapAlloc right after a collection, read after VmRSS (heap profiles in %s)\n\n",
		o.scalePods, bulkNamespaces, o.scaleServices, o.scalePolicies, o.heapDir)
	fmt.Fprintf(w, "| step | node1 VmRSS | node2 VmRSS | a minute later, node1 / node2 | node1 VmHWM | node2 VmHWM | node1 live heap | node2 live heap |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, rw := range rows {
		fmt.Fprintf(w, "| %s | %.1f MiB | %.1f MiB | %.1f / %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB |\n", rw.step,
			float64(rw.rss["node1"])/1024, float64(rw.rss["node2"])/1024, float64(rw.later["node1"])/1024, float64(rw.later["node2"])/1024,
			float64(rw.hwm["node1"])/1024, float64(rw.hwm["node2"])/1024,
			float64(rw.heap["node1"])/(1<<20), float64(rw.heap["node2"])/(1<<20))
	}
	fmt.Fprintf(w, "\nwall time: %s\n\n", time.Since(start).Round(time.Second))
	return nil
}

// scalePolicies applies n policies over the pods, waits until both nodes
// compiled them, and reads.
func (r *e2eRun) scalePolicies(n int, read func(string) error) error {
	if n == 0 {
		return nil
	}
	if _, err := r.enter("policies", unrelatedPolicies(n, bulkNamespaces)); err != nil {
		return err
	}
	return read("policies")
}

// scalePods creates n Pod objects in the bulk namespaces (labels app
// bulk-0..4, as the unrelated policies select, and svc s-0..99 for the
// services), bound to the nodes in turn, with a Running, Ready status and
// an address in 10.244.100.0 and up (outside every node's subnet).
func (r *e2eRun) scalePods(n int) error {
	fmt.Fprintf(os.Stderr, "creating %d pods\n", n)
	for i := range n {
		ns := fmt.Sprintf("bulk-%d", i%bulkNamespaces)
		j := i / bulkNamespaces
		p := podObj(podSpec{ns, fmt.Sprintf("s%05d", i), 0, map[string]string{
			"app": fmt.Sprintf("bulk-%d", j%5), "svc": fmt.Sprintf("s-%d", j%100)}})
		p.Spec.NodeName = r.cl.Nodes[i%len(r.cl.Nodes)].Name
		if _, err := r.kube.admin.CoreV1().Pods(ns).Create(r.ctx, p, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create pod %s/%s: %w", ns, p.Name, err)
		}
		ip := fmt.Sprintf("10.244.%d.%d", 100+i/250, 1+i%250)
		if err := demo.SetPodStatus(r.ctx, r.kube.api, ns, p.Name, ip, true); err != nil {
			return err
		}
		r.objectPods = append(r.objectPods, policy.Pod{Namespace: ns, Name: p.Name, IP: netip.MustParseAddr(ip), Node: p.Spec.NodeName,
			Labels: p.Labels, Ports: podPorts})
	}
	return nil
}

// scaleServices are n ClusterIP services spread over the bulk namespaces,
// each selecting the pods of one svc label: 10 endpoints each when there
// are 1,000 pods per namespace.
func scaleServices(n, pods int) []any {
	perLabel := max(1, pods/bulkNamespaces/10)
	var out []any
	for i := range n {
		out = append(out, &corev1.Service{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
			ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("bulk-%d", i%bulkNamespaces), Name: fmt.Sprintf("scale-%05d", i)},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"svc": fmt.Sprintf("s-%d", (i/bulkNamespaces)%perLabel)},
				Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}},
		})
	}
	return out
}

// waitElements waits until every node's nftables map m (table inet
// netloom) holds at least least elements and, unless most is negative, at
// most most.
func (r *e2eRun) waitElements(m string, least, most int) error {
	deadline := time.Now().Add(10 * time.Minute)
	for _, n := range r.cl.Nodes {
		for {
			out, err := exec.CommandContext(r.ctx, "ip", "netns", "exec", n.NS, "nft", "list", "map", "inet", "netloom", m).Output()
			// Every element is "key : value"; the map's type line has one
			// " : " too.
			got := strings.Count(string(out), " : ") - 1
			if err == nil && got >= least && (most < 0 || got <= most) {
				fmt.Fprintf(os.Stderr, "  %s: %d elements in %s\n", n.Name, got, m)
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: map %s holds %d elements, not %d to %d, after 10 minutes (%v)", n.Name, m, got, least, most, err)
			}
			if err := sleep(r.ctx, 2*time.Second); err != nil {
				return err
			}
		}
	}
	return nil
}

// heapProfile saves node n's agent heap profile to path (unless it is
// empty) and returns the live heap: HeapAlloc right after a collection
// (gc=1), so that garbage not yet collected does not count.
func (r *e2eRun) heapProfile(n *demo.Node, path string) (int64, error) {
	text, err := r.debugGet(n, "heap?gc=1&debug=1")
	if err != nil {
		return 0, err
	}
	// "# HeapAlloc = N" in the runtime.MemStats footer of debug=1.
	var inuse int64
	for _, l := range strings.Split(string(text), "\n") {
		if v, ok := strings.CutPrefix(l, "# HeapAlloc = "); ok {
			fmt.Sscan(v, &inuse)
		}
	}
	if path == "" {
		return inuse, nil
	}
	pb, err := r.debugGet(n, "heap")
	if err != nil {
		return 0, err
	}
	return inuse, os.WriteFile(path, pb, 0o644)
}

// debugGet reads the profile name from node n's agent (api.PathDebug).
func (r *e2eRun) debugGet(n *demo.Node, name string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	defer cancel()
	body, err := r.api[n.Name].Stream(ctx, api.PathDebug+name)
	if err != nil {
		return nil, fmt.Errorf("%s: profile %s: %w", n.Name, name, err)
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		return nil, fmt.Errorf("%s: profile %s: %w", n.Name, name, err)
	}
	return b, nil
}
