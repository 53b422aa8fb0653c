package webui

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/events"
)

func getSnapshot(t *testing.T, s *Server) Snapshot {
	t.Helper()
	resp := do(t, s.Handler(), "GET", "/api/snapshot", nil, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /api/snapshot: status %d", resp.StatusCode)
	}
	var snap Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil {
		t.Fatal(err)
	}
	return snap
}

func TestSnapshotHasServicesAndPolicies(t *testing.T) {
	src := newFakeSource()
	src.addLB()
	s := newTestServer(t, src, Options{})
	snap := getSnapshot(t, s)

	ignoreRaw := cmpopts.IgnoreFields(api.Object{}, "Object")
	wantSvc := api.Object{Kind: "Service", Namespace: "default", Name: "web", ClusterIP: "10.96.0.10", ExternalIP: "10.77.0.200", Owner: "node1",
		Endpoints: []api.Endpoint{{Pod: "default/web", IP: "10.244.20.2", Node: "node1", Ready: true}, {Pod: "default/web-2", IP: "10.244.45.3", Node: "node2", Ready: false}}}
	var gotSvc, pending api.Object
	for _, o := range snap.Objects["Service"] {
		switch o.Name {
		case "web":
			gotSvc = o
		case "queue":
			pending = o
		}
	}
	if diff := cmp.Diff(wantSvc, gotSvc, ignoreRaw); diff != "" {
		t.Errorf("service web in the snapshot (-want +got):\n%s", diff)
	}
	if pending.Pending != `address pool "lan" is full` || pending.ExternalIP != "" {
		t.Errorf("pending service queue: %+v", pending)
	}
	if !strings.Contains(string(gotSvc.Object), `"selector":{"app":"web"}`) {
		t.Errorf("service web lacks its spec: %s", gotSvc.Object)
	}

	wantPol := api.Object{Kind: "NetworkPolicy", Namespace: "default", Name: "web-from-clients", Selects: []string{"default/web"},
		Counters: &api.PolicyCounters{Node: "node1", Ingress: api.PolicyCounts{AllowedPackets: 12, AllowedBytes: 1008, DroppedPackets: 3, DroppedBytes: 252}}}
	pols := snap.Objects["NetworkPolicy"]
	if len(pols) != 2 {
		t.Fatalf("%d network policies in the snapshot, want 2", len(pols))
	}
	if diff := cmp.Diff(wantPol, pols[0], ignoreRaw); diff != "" {
		t.Errorf("policy web-from-clients in the snapshot (-want +got):\n%s", diff)
	}
	// A policy that selects nothing (the list is omitted in JSON; the page
	// says "no pods").
	if len(pols[1].Selects) != 0 || pols[1].Counters == nil {
		t.Errorf("policy db-egress: selects %v, counters %v", pols[1].Selects, pols[1].Counters)
	}

	if diff := cmp.Diff([]api.VIPStatus{{IP: "10.77.0.200", Service: "default/web", Owner: "node1"}, {IP: "10.77.0.201", Service: "default/api", Owner: "node2"}}, snap.Status.VIPs); diff != "" {
		t.Errorf("VIPs in the status (-want +got):\n%s", diff)
	}
	if snap.Status.Node.PolicyRules != 14 {
		t.Errorf("policy rules in the status: %d", snap.Status.Node.PolicyRules)
	}
	if len(snap.Objects["AddressPool"]) != 1 {
		t.Errorf("address pools in the snapshot: %v", snap.Objects["AddressPool"])
	}

	// The same through /api/objects, and the raw JSON keeps the field names
	// the page reads.
	resp := do(t, s.Handler(), "GET", "/api/objects?kind=NetworkPolicy", nil, nil)
	body := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /api/objects?kind=NetworkPolicy: %d %s", resp.StatusCode, body)
	}
	for _, want := range []string{`"selects":["default/web"]`, `"droppedPackets":3`, `"node":"node1"`} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /api/objects?kind=NetworkPolicy lacks %s:\n%s", want, body)
		}
	}
	resp = do(t, s.Handler(), "GET", "/api/objects?kind=Service", nil, nil)
	body = readAll(t, resp)
	for _, want := range []string{`"externalIP":"10.77.0.200"`, `"owner":"node1"`, `"clusterIP":"10.96.0.10"`, `"pending":"address pool \"lan\" is full"`,
		`"endpoints":[{"pod":"default/web","ip":"10.244.20.2","node":"node1","ready":true}`} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /api/objects?kind=Service lacks %s:\n%s", want, body)
		}
	}
}

// The page always has the services and policies sections, visible, with
// the places the script fills and an empty-state text; the script draws
// what the snapshot holds (checked in the browser test).
func TestPageHasServicesAndPolicies(t *testing.T) {
	h := newTestServer(t, newFakeSource(), Options{}).Handler()
	page := readAll(t, do(t, h, "GET", "/", nil, nil))
	for _, id := range []string{"sec-services", "sec-policies"} {
		m := regexp.MustCompile(`<section id="` + id + `"[^>]*>`).FindString(page)
		if m == "" {
			t.Errorf("the page has no section %s", id)
			continue
		}
		if strings.Contains(m, "hidden") {
			t.Errorf("section %s is hidden: %s", id, m)
		}
	}
	for _, want := range []string{`id="services"`, `id="services-empty"`, `id="policies"`, `id="policies-empty"`, `id="pools"`,
		"External IP (VIP)", "Announced by", "Endpoints", "Selects", "Rules", `id="th-ingress"`, `id="th-egress"`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	js := readAll(t, do(t, h, "GET", "/static/app.js", nil, nil))
	for _, want := range []string{`"vip-failover"`, `"vip-conflict"`, "droppedPackets", "externalIP", "endpoints", "vip-badge", "selects"} {
		if !strings.Contains(js, want) {
			t.Errorf("app.js lacks %s", want)
		}
	}
	// No inline script or style: the CSP allows neither.
	for _, bad := range []string{"<script>", "style=", "onclick", "onload"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page has inline %q, which the CSP blocks", bad)
		}
	}
}

func TestStreamCarriesServicesPoliciesAndVIPEvents(t *testing.T) {
	src := newFakeSource()
	src.addLB()
	src.log.Add(events.VIPFailover, "10.77.0.201", "VIP 10.77.0.201 moved from node3 to node2")
	s := newTestServer(t, src, Options{})
	snap := getSnapshot(t, s)
	if len(snap.Objects["Service"]) != 3 || len(snap.Objects["NetworkPolicy"]) != 2 {
		t.Errorf("snapshot: %d services, %d policies", len(snap.Objects["Service"]), len(snap.Objects["NetworkPolicy"]))
	}
	var kinds []string
	for _, e := range snap.Events {
		kinds = append(kinds, e.Kind)
	}
	if diff := cmp.Diff([]string{events.Join, events.VIPFailover}, kinds); diff != "" {
		t.Errorf("event kinds (-want +got):\n%s", diff)
	}
}
