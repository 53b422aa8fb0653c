package lb

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// KEP-1669: Ready endpoints take new connections; without any, the
// serving terminating ones; for all endpoints and for a node's apart.
func TestBackendsTerminating(t *testing.T) {
	svc := Service{Namespace: "default", Name: "web", Ports: []ServicePort{
		{Protocol: "TCP", Port: 80, TargetPort: intstr.FromInt32(8080)},
		{Protocol: "TCP", Port: 90, TargetPort: intstr.FromString("alt")},
	}}
	ready := func(name, addr, node string) Endpoint {
		return Endpoint{PodNamespace: "default", PodName: name, IP: ip(addr), Node: node, Ready: true, Serving: true}
	}
	term := func(name, addr, node string, serving bool) Endpoint {
		return Endpoint{PodNamespace: "default", PodName: name, IP: ip(addr), Node: node, Serving: serving, Terminating: true,
			Ports: map[string]uint16{"alt": 9090}}
	}
	b := func(addr string, port uint16, node string) Backend {
		return Backend{IP: ip(addr), Port: port, Node: node}
	}
	eps := []Endpoint{
		ready("a", "10.0.0.1", "n1"),
		term("b", "10.0.0.2", "n2", true),
		term("c", "10.0.0.3", "n2", false),
		{PodNamespace: "default", PodName: "d", Node: "n2", Serving: true, Terminating: true}, // no address
	}
	// Port 80: a is ready, b is avoided. Port 90 ("alt"): a has no such
	// port, so no endpoint is ready for it: b.
	want := [][]Backend{{b("10.0.0.1", 8080, "n1")}, {b("10.0.0.2", 9090, "n2")}}
	if diff := cmp.Diff(want, Backends(svc, eps), cmpOpts...); diff != "" {
		t.Errorf("Backends (-want +got):\n%s", diff)
	}
	// On n2 nothing is ready: its serving terminating endpoint, for
	// both ports, although n1 has a ready one for port 80.
	want = [][]Backend{{b("10.0.0.2", 8080, "n2")}, {b("10.0.0.2", 9090, "n2")}}
	if diff := cmp.Diff(want, LocalBackends(svc, eps, "n2"), cmpOpts...); diff != "" {
		t.Errorf("LocalBackends n2 (-want +got):\n%s", diff)
	}
	want = [][]Backend{{b("10.0.0.1", 8080, "n1")}, nil}
	if diff := cmp.Diff(want, LocalBackends(svc, eps, "n1"), cmpOpts...); diff != "" {
		t.Errorf("LocalBackends n1 (-want +got):\n%s", diff)
	}
	if got := LocalBackends(svc, eps, ""); got[0] != nil || got[1] != nil {
		t.Errorf("LocalBackends without a node: %v", got)
	}
	// Nothing serving: no backend.
	if got := Backends(svc, eps[2:]); got[0] != nil || got[1] != nil {
		t.Errorf("no serving endpoint: %v", got)
	}
}
