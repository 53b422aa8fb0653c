package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/netloom/netloom/node/demo"
)

// loadObjects are what -load installs in a netloom cluster of two pods:
// Pod objects that label the first pod client and the second server, n
// NetworkPolicies that all select the server and allow other sources and
// ports than the measured flow (so the server's ingress has a rule for
// each, in three shapes), one policy that allows the client everything
// (iperf3 and ping), and n ClusterIP services of the server.
func loadObjects(cl *demo.Cluster, n int) []map[string]any {
	ps := cl.Pods()
	meta := func(name string, labels map[string]string) map[string]any {
		m := map[string]any{"namespace": demo.PodNamespace, "name": name}
		if labels != nil {
			m["labels"] = labels
		}
		return m
	}
	pod := func(p *demo.Pod, role string) map[string]any {
		return map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": meta(p.Name, map[string]string{"role": role}),
			"spec": map[string]any{"nodeName": p.Node, "containers": []any{map[string]any{"name": "app", "image": "registry.example/app:1",
				"ports": []any{map[string]any{"name": "iperf", "containerPort": 5201, "protocol": "TCP"}}}}}}
	}
	policy := func(name string, ingress map[string]any) map[string]any {
		return map[string]any{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta(name, nil),
			"spec": map[string]any{"podSelector": map[string]any{"matchLabels": map[string]string{"role": "server"}}, "ingress": []any{ingress}}}
	}
	objs := []map[string]any{pod(ps[0], "client"), pod(ps[1], "server"),
		policy("zz-allow-client", map[string]any{"from": []any{map[string]any{"podSelector": map[string]any{"matchLabels": map[string]string{"role": "client"}}}}})}
	for i := range n {
		port := 10000 + i%50000
		var in map[string]any
		switch i % 3 {
		case 0:
			in = map[string]any{"from": []any{map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]string{"team": "bulk"}}}},
				"ports": []any{map[string]any{"protocol": "TCP", "port": port}}}
		case 1:
			in = map[string]any{"from": []any{map[string]any{"ipBlock": map[string]any{"cidr": fmt.Sprintf("192.168.%d.0/24", i%256)}}},
				"ports": []any{map[string]any{"port": "iperf"}}}
		case 2:
			in = map[string]any{"from": []any{map[string]any{"podSelector": map[string]any{"matchLabels": map[string]string{"app": fmt.Sprintf("bulk-%d", i%5)}}}},
				"ports": []any{map[string]any{"protocol": "UDP", "port": port}}}
		}
		objs = append(objs, policy(fmt.Sprintf("server-%05d", i), in))
	}
	for i := range n {
		objs = append(objs, map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": meta(fmt.Sprintf("s%05d", i), nil),
			"spec": map[string]any{"selector": map[string]string{"role": "server"},
				"ports": []any{map[string]any{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 5201}}}})
	}
	return objs
}

// loadCluster applies loadObjects(o.load) with `netloom apply` on the
// first node, waits until the second node lists them all and its nftables
// ruleset has stopped changing.
func loadCluster(ctx context.Context, e *env, o options, cl *demo.Cluster) error {
	objs := loadObjects(cl, o.load)
	items := make([]any, len(objs))
	for i, x := range objs {
		items[i] = x
	}
	b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	if err != nil {
		return err
	}
	file := filepath.Join(e.dir, "load.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		return err
	}
	if _, err := e.exec(ctx, cl.Nodes[0].NS, o.exe, "apply", "--socket", cl.Nodes[0].Socket, "-f", file); err != nil {
		return fmt.Errorf("apply the -load objects: %w", err)
	}
	recv := cl.Nodes[1]
	count := func(kind string) int {
		out, err := e.exec(ctx, recv.NS, o.exe, "get", kind, "-o", "json", "--socket", recv.Socket)
		if err != nil {
			return -1
		}
		var l struct{ Items []json.RawMessage }
		if json.Unmarshal([]byte(out), &l) != nil {
			return -1
		}
		return len(l.Items)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for count("services") != o.load || count("networkpolicies") != o.load+1 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not list the %d services and %d policies after 3 minutes", recv.Name, o.load, o.load+1)
		}
		time.Sleep(time.Second)
	}
	// the firewall and the proxy program what the node lists
	last, same := -1, 0
	for same < 5 {
		if time.Now().After(deadline) {
			return fmt.Errorf("the nftables ruleset of %s still changes after 3 minutes", recv.Name)
		}
		time.Sleep(time.Second)
		n := rulesetLines(ctx, e, recv.NS)
		if n == last {
			same++
		} else {
			last, same = n, 0
		}
	}
	return nil
}

// rulesetLines is the length of `nft list ruleset` in ns (-1 when it
// cannot be read).
func rulesetLines(ctx context.Context, e *env, ns string) int {
	out, err := e.exec(ctx, ns, "nft", "list", "ruleset")
	if err != nil {
		return -1
	}
	return strings.Count(out, "\n")
}
