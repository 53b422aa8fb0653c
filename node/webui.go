package node

import (
	"context"
	"encoding/json"
	"sort"
	"strings"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/firewall/policy"
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
// optionally of one namespace and name, sorted by namespace and name. Pods
// attached by CNI that have no Pod object are listed too.
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
	seen := map[string]bool{}
	for _, e := range a.store.List(kind, ns) {
		if name != "" && e.Key.Name != name {
			continue
		}
		o := api.Object{Kind: kind, Namespace: e.Key.Namespace, Name: e.Key.Name, Object: e.Value}
		if pa, ok := places[e.Key.Namespace+"/"+e.Key.Name]; ok {
			o.IP, o.Node = pa.IP, pa.Node
		}
		if snap != nil {
			if pol, err := objects.DecodeNetworkPolicy(e.Value); err == nil {
				o.Selects = []string{}
				for _, p := range policy.Selects(snap, pol) {
					o.Selects = append(o.Selects, p.Key())
				}
				c := counters[e.Key.Namespace+"/"+e.Key.Name]
				o.Counters = &api.PolicyCounters{Node: a.cfg.Name, Ingress: api.PolicyCounts(c.Ingress), Egress: api.PolicyCounts(c.Egress)}
				o.Object = withPolicyStatus(e.Value, o.Selects, o.Counters)
			}
		}
		if kind == "Service" && lbs.Snapshot != nil && lbs.Snapshot.LB != nil {
			st := lbs.Snapshot.LB
			k := lb.ServiceKey{Namespace: e.Key.Namespace, Name: e.Key.Name}
			r := st.Plan.Results[k]
			if r.ClusterIP.IsValid() {
				o.ClusterIP = r.ClusterIP.String()
			}
			if r.VIP.IsValid() {
				o.ExternalIP = r.VIP.String()
				o.Owner = st.Owners[r.VIP]
			}
			o.Pending, o.Conflict = r.Pending, lbs.Conflicts[k].Text
			for _, ep := range st.Endpoints[k] {
				o.Endpoints = append(o.Endpoints, api.Endpoint{Pod: ep.PodNamespace + "/" + ep.PodName, IP: ep.IP.String(), Node: ep.Node, Ready: ep.Ready})
			}
			o.Object = withServiceStatus(e.Value, o)
		}
		seen[e.Key.Namespace+"/"+e.Key.Name] = true
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
		list = append(list, api.Object{Kind: kind, Namespace: pns, Name: pname, IP: pa.IP, Node: pa.Node})
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].Namespace != list[j].Namespace {
			return list[i].Namespace < list[j].Namespace
		}
		return list[i].Name < list[j].Name
	})
	return list
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

// withServiceStatus returns the stored Service with what netloom decided
// filled in the Kubernetes way: spec.clusterIP and
// status.loadBalancer.ingress, and the announcing node as an annotation.
func withServiceStatus(raw json.RawMessage, o api.Object) json.RawMessage {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return raw
	}
	spec, _ := m["spec"].(map[string]any)
	if spec == nil {
		spec = map[string]any{}
		m["spec"] = spec
	}
	if o.ClusterIP != "" {
		spec["clusterIP"] = o.ClusterIP
		spec["clusterIPs"] = []string{o.ClusterIP}
	}
	lbStatus := map[string]any{}
	if o.ExternalIP != "" {
		lbStatus["ingress"] = []map[string]string{{"ip": o.ExternalIP}}
	}
	m["status"] = map[string]any{"loadBalancer": lbStatus}
	meta, _ := m["metadata"].(map[string]any)
	if meta != nil && (o.Owner != "" || o.Pending != "" || o.Conflict != "") {
		ann, _ := meta["annotations"].(map[string]any)
		if ann == nil {
			ann = map[string]any{}
			meta["annotations"] = ann
		}
		if o.Owner != "" {
			ann["netloom.io/announced-by"] = o.Owner
		}
		if o.Pending != "" {
			ann["netloom.io/pending"] = o.Pending
		}
		if o.Conflict != "" {
			ann["netloom.io/conflict"] = o.Conflict
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return raw
	}
	return b
}

// withPolicyStatus adds to a stored NetworkPolicy a status with the pods it
// selects and this node's counters.
func withPolicyStatus(raw json.RawMessage, selects []string, c *api.PolicyCounters) json.RawMessage {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return raw
	}
	m["status"] = map[string]any{"selectedPods": selects, "counters": c}
	b, err := json.Marshal(m)
	if err != nil {
		return raw
	}
	return b
}
