package node

import (
	"context"
	"encoding/json"
	"sort"
	"strings"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/kube"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/mesh/objects"
	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/webui"
	"github.com/prometheus/client_golang/prometheus"
)

// The agent is the dashboard's source: Status and Events are in agent.go
// and server.go.
var _ webui.Source = (*Agent)(nil)

// Objects lists the stored objects of a kind as `netloom get` shows them
// (pods with the address and node they attached on); nil for a kind netloom
// does not know (yet), so the dashboard hides it.
func (a *Agent) Objects(kind string) []api.Object {
	if k, err := objects.NormalizeKind(kind); err != nil || k != kind || a.store == nil {
		return nil
	}
	return a.objectList(kind, "", "")
}

// objectList is the body of `netloom get`: the objects of a canonical kind,
// optionally of one namespace and name, sorted by namespace and name, each
// with a full document that shows what the agent decided for it (the
// objects package's views), so that the table and -o json|yaml show the
// same objects. Pods attached by CNI that have no Pod object are listed
// too.
func (a *Agent) objectList(kind, ns, name string) []api.Object {
	list := []api.Object{}
	places := map[string]cluster.PodAddress{}
	if kind == "Pod" {
		for _, pa := range cluster.PodAddresses.List(a.store, ns) {
			places[pa.Key.Namespace+"/"+pa.Key.Name] = pa.Value
		}
	}
	var snap *policy.Snapshot
	var counters map[string]policy.DirCounters
	if kind == "NetworkPolicy" {
		snap = a.hub.Latest().Policy
		counters = a.policyCounters()
	}
	lbs := a.lbc.Status()
	view := func(o *api.Object, raw json.RawMessage) {
		var err error
		switch kind {
		case "Pod":
			o.Object, err = objects.PodView(raw, o.Namespace, o.Name, o.IP, o.Node)
		case "Service":
			o.Object, err = objects.ServiceView(raw, objects.ServicePlace{ClusterIP: o.ClusterIP, ExternalIP: o.ExternalIP, Owner: o.Owner,
				NodePorts: o.NodePorts, HealthCheckNodePort: o.HealthCheckNodePort, Pending: o.Pending, Conflict: o.Conflict})
		case "NetworkPolicy":
			if o.Selects != nil {
				o.Object, err = objects.PolicyView(raw, o.Selects, o.Counters)
			}
		}
		if err != nil {
			a.log.Warn("show object", "kind", kind, "object", o.Namespace+"/"+o.Name, "err", err)
			o.Object = raw
		}
	}
	seen := map[string]bool{}
	for _, e := range a.listObjects(kind, ns) {
		if name != "" && e.Name != name {
			continue
		}
		o := api.Object{Kind: kind, Namespace: e.Namespace, Name: e.Name, Object: e.JSON}
		if pa, ok := places[e.Namespace+"/"+e.Name]; ok {
			o.IP, o.Node = pa.IP, pa.Node
		}
		if snap != nil {
			if pol, err := objects.DecodeNetworkPolicy(e.JSON); err == nil {
				o.Selects = []string{}
				for _, p := range policy.Selects(snap, pol) {
					o.Selects = append(o.Selects, p.Key())
				}
				c := counters[e.Namespace+"/"+e.Name]
				o.Counters = &api.PolicyCounters{Node: a.cfg.Name, Ingress: api.PolicyCounts(c.Ingress), Egress: api.PolicyCounts(c.Egress)}
			}
		}
		if kind == "Service" && lbs.Snapshot != nil && lbs.Snapshot.LB != nil {
			st := lbs.Snapshot.LB
			k := lb.ServiceKey{Namespace: e.Namespace, Name: e.Name}
			r := st.Plan.Results[k]
			if r.ClusterIP.IsValid() {
				o.ClusterIP = r.ClusterIP.String()
			}
			if r.VIP.IsValid() {
				o.ExternalIP = r.VIP.String()
				o.Owner = st.Owners[r.VIP]
			}
			o.Pending, o.Conflict = r.Pending, lbs.Conflicts[k].Text
			o.NodePorts, o.HealthCheckNodePort = r.NodePorts, r.HealthCheckNodePort
			for _, ep := range st.Endpoints[k] {
				o.Endpoints = append(o.Endpoints, api.Endpoint{Pod: ep.PodNamespace + "/" + ep.PodName, IP: ep.IP.String(), Node: ep.Node,
					Ready: ep.Ready, Serving: ep.Serving, Terminating: ep.Terminating})
			}
		}
		view(&o, e.JSON)
		seen[e.Namespace+"/"+e.Name] = true
		list = append(list, o)
	}
	for k, pa := range places {
		if seen[k] {
			continue
		}
		pns, pname, _ := strings.Cut(k, "/")
		if name != "" && pname != name {
			continue
		}
		o := api.Object{Kind: kind, Namespace: pns, Name: pname, IP: pa.IP, Node: pa.Node}
		view(&o, nil)
		list = append(list, o)
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].Namespace != list[j].Namespace {
			return list[i].Namespace < list[j].Namespace
		}
		return list[i].Name < list[j].Name
	})
	return list
}

// listObjects are the objects of a kind: from the API server in
// Kubernetes mode, else from the store.
func (a *Agent) listObjects(kind, ns string) []kube.Object {
	if a.kube != nil {
		return a.kube.List(kind, ns)
	}
	entries := a.store.List(kind, ns)
	out := make([]kube.Object, len(entries))
	for i, e := range entries {
		out[i] = kube.Object{Namespace: e.Key.Namespace, Name: e.Key.Name, JSON: e.Value}
	}
	return out
}

// serveUI serves the dashboard and /metrics on addr until ctx ends; an empty
// addr turns it off. Call it once the agent's store, membership and
// WireGuard device exist. A dashboard that cannot start is logged, and the
// agent goes on: the pod network matters more.
func (a *Agent) serveUI(ctx context.Context, addr string, reg *prometheus.Registry) {
	if addr == "" {
		return
	}
	srv, err := webui.New(a, webui.Options{Addr: addr, Token: Token(a.secret), Registry: reg, Log: a.log})
	if err != nil {
		a.log.Error("web UI not started", "addr", addr, "err", err)
		return
	}
	go func() {
		if err := srv.Run(ctx); err != nil {
			a.log.Error("web UI stopped", "addr", addr, "err", err)
		}
	}()
}

// policyCounters reads this node's policy counters from the kernel.
func (a *Agent) policyCounters() map[string]policy.DirCounters {
	run := a.fwc.Status().Policy
	if run == nil {
		return nil
	}
	values, err := a.table.Counters(firewall.TableFamily, firewall.TableName)
	if err != nil {
		a.log.Warn("read policy counters", "err", err)
		return nil
	}
	return policy.CountersFor(run, values)
}
