package lb

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestEndpoints(t *testing.T) {
	pods := []Pod{
		{Namespace: "default", Name: "web-b", Labels: map[string]string{"app": "web", "tier": "fe"}, IP: ip("10.244.1.3"), Node: "n1", Ports: map[string]uint16{"http": 8080}},
		{Namespace: "default", Name: "web-a", Labels: map[string]string{"app": "web"}, IP: ip("10.244.2.3"), Node: "n2", Ports: map[string]uint16{"http": 9090, "metrics": 9100}},
		{Namespace: "default", Name: "web-new", Labels: map[string]string{"app": "web"}, Node: "n3"},
		{Namespace: "other", Name: "web-x", Labels: map[string]string{"app": "web"}, IP: ip("10.244.3.3"), Node: "n3"},
		{Namespace: "default", Name: "db", Labels: map[string]string{"app": "db"}, IP: ip("10.244.3.4"), Node: "n3"},
	}
	svc := Service{Namespace: "default", Name: "web", Selector: map[string]string{"app": "web"}, Ports: []ServicePort{
		{Name: "http", Protocol: "TCP", Port: 80, TargetPort: intstr.FromString("http")},
		{Name: "num", Protocol: "UDP", Port: 53, TargetPort: intstr.FromInt32(5353)},
		{Name: "same", Protocol: "TCP", Port: 443},
		{Name: "metrics", Protocol: "TCP", Port: 9100, TargetPort: intstr.FromString("metrics")},
	}}
	eps := Endpoints(svc, pods)
	want := []Endpoint{
		{PodNamespace: "default", PodName: "web-a", IP: ip("10.244.2.3"), Node: "n2", Ready: true, Serving: true, Ports: map[string]uint16{"http": 9090, "metrics": 9100}},
		{PodNamespace: "default", PodName: "web-b", IP: ip("10.244.1.3"), Node: "n1", Ready: true, Serving: true, Ports: map[string]uint16{"http": 8080}},
		{PodNamespace: "default", PodName: "web-new", Node: "n3"},
	}
	if diff := cmp.Diff(want, eps, cmpOpts...); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
	wantB := [][]Backend{
		{{IP: ip("10.244.2.3"), Port: 9090, Node: "n2"}, {IP: ip("10.244.1.3"), Port: 8080, Node: "n1"}},
		{{IP: ip("10.244.2.3"), Port: 5353, Node: "n2"}, {IP: ip("10.244.1.3"), Port: 5353, Node: "n1"}},
		{{IP: ip("10.244.2.3"), Port: 443, Node: "n2"}, {IP: ip("10.244.1.3"), Port: 443, Node: "n1"}},
		{{IP: ip("10.244.2.3"), Port: 9100, Node: "n2"}},
	}
	if diff := cmp.Diff(wantB, Backends(svc, eps), cmpOpts...); diff != "" {
		t.Errorf("backends (-want +got):\n%s", diff)
	}

	// Empty selector: no endpoints managed.
	if got := Endpoints(Service{Namespace: "default"}, pods); got != nil {
		t.Errorf("empty selector: %v", got)
	}
	all := AllEndpoints([]Service{svc, {Namespace: "default", Name: "db", Selector: map[string]string{"app": "db"}}, {Namespace: "default", Name: "none"}}, pods)
	if len(all) != 2 || len(all[svc.Key()]) != 3 || all[ServiceKey{"default", "db"}][0].PodName != "db" {
		t.Errorf("AllEndpoints: %+v", all)
	}
}

func TestSelects(t *testing.T) {
	for _, tt := range []struct {
		sel, labels map[string]string
		want        bool
	}{
		{map[string]string{"a": "1"}, map[string]string{"a": "1", "b": "2"}, true},
		{map[string]string{"a": "1", "b": "2"}, map[string]string{"a": "1"}, false},
		{map[string]string{"a": ""}, map[string]string{}, false},
		{map[string]string{"a": ""}, map[string]string{"a": ""}, true},
		{nil, map[string]string{"a": "1"}, false},
	} {
		if got := Selects(tt.sel, tt.labels); got != tt.want {
			t.Errorf("Selects(%v, %v) = %v", tt.sel, tt.labels, got)
		}
	}
}

// TestEndpointConditions: the EndpointSlice controller's ready, serving
// and terminating, from the pod's Ready condition and deletion.
func TestEndpointConditions(t *testing.T) {
	pods := []Pod{
		{Namespace: "default", Name: "ok", Labels: map[string]string{"app": "web"}, IP: ip("10.244.1.2")},
		{Namespace: "default", Name: "unready", Labels: map[string]string{"app": "web"}, IP: ip("10.244.1.3"), Unready: true},
		{Namespace: "default", Name: "going", Labels: map[string]string{"app": "web"}, IP: ip("10.244.1.4"), Terminating: true},
		{Namespace: "default", Name: "going-unready", Labels: map[string]string{"app": "web"}, IP: ip("10.244.1.5"), Terminating: true, Unready: true},
	}
	type cond struct{ Ready, Serving, Terminating bool }
	for _, tt := range []struct {
		publish bool
		want    map[string]cond
	}{
		{false, map[string]cond{"ok": {true, true, false}, "unready": {false, false, false}, "going": {false, true, true}, "going-unready": {false, false, true}}},
		{true, map[string]cond{"ok": {true, true, false}, "unready": {true, true, false}, "going": {true, true, true}, "going-unready": {true, true, true}}},
	} {
		s := Service{Namespace: "default", Name: "web", Selector: map[string]string{"app": "web"}, PublishNotReady: tt.publish}
		got := map[string]cond{}
		for _, ep := range Endpoints(s, pods) {
			got[ep.PodName] = cond{ep.Ready, ep.Serving, ep.Terminating}
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("publishNotReadyAddresses %v (-want +got):\n%s", tt.publish, diff)
		}
	}
}
