package node

import (
	"context"
	"encoding/json"
	"github.com/netloom/netloom/firewall/policy"
	"sort"
	"strings"

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
	places := map[string]PodAddress{}
	if kind == "Pod" {
		for _, e := range a.store.List(KindPodAddr, ns) {
			var pa PodAddress
			if json.Unmarshal(e.Value, &pa) == nil {
				places[e.Key.Namespace+"/"+e.Key.Name] = pa
			}
		}
	}
	var snap *policy.Snapshot
	if kind == "NetworkPolicy" {
		snap = a.policySnapshot()
	}
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
			}
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
