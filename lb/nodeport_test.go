package lb

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func npSvc(name string, wall int64, ports ...ServicePort) Service {
	s := Service{Namespace: "default", Name: name, Type: TypeNodePort, NodePorts: true, Ports: ports, Created: Version{Wall: wall, Node: "n1"}}
	return s
}

func tcp(port, nodePort uint16) ServicePort {
	return ServicePort{Protocol: "TCP", Port: port, NodePort: nodePort}
}

func udp(port, nodePort uint16) ServicePort {
	return ServicePort{Protocol: "UDP", Port: port, NodePort: nodePort}
}

func TestNodePorts(t *testing.T) {
	c := cfg
	c.NodePorts = PortRange{Min: 30000, Max: 30004}
	local := lbSvc("local", 50)
	local.Ports = []ServicePort{tcp(80, 0)}
	local.NodePorts = true
	local.ExternalTrafficPolicy = PolicyLocal
	pools := []Pool{mustPool("a", true, "10.77.0.10-10.77.0.12")}
	svcs := []Service{
		npSvc("a", 10, tcp(80, 0), udp(53, 0)),
		npSvc("b", 20, tcp(80, 30001)), // asks for a free port
		npSvc("c", 30, tcp(80, 30001)), // the same: loses to b
		npSvc("d", 40, udp(53, 30001)), // another protocol: no conflict
		local,
		{Namespace: "default", Name: "plain", Type: TypeClusterIP, Ports: []ServicePort{tcp(80, 0)}, Created: Version{Wall: 60, Node: "n1"}},
	}
	p := Allocate(c, svcs, pools, alive)
	got := map[string][]uint16{}
	for _, s := range svcs {
		r := p.Results[s.Key()]
		got[s.Name] = append(r.NodePorts, r.HealthCheckNodePort)
	}
	want := map[string][]uint16{
		"a":     {30000, 30002, 0},
		"b":     {30001, 0},
		"c":     {30003, 0},
		"d":     {30001, 0},
		"local": {30004, 0}, // the range is full for the health-check port
		"plain": {0},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("node ports (-want +got):\n%s", diff)
	}
	if c := p.Results[key("c")].Conflict; !strings.Contains(c, "30001/TCP is held by older service default/b") {
		t.Errorf("c's conflict = %q", c)
	}
	if r := p.Results[key("local")].Pending; !strings.Contains(r, "node port range 30000-30004 is full") {
		t.Errorf("local's pending = %q", r)
	}

	// Recorded ports stick: after the writes, a newer service asking for a
	// recorded port does not take it, and nothing more is written.
	svcs = settle(svcs, p)
	p2 := Allocate(c, svcs, pools, alive)
	for _, s := range svcs {
		if diff := cmp.Diff(p.Results[s.Key()].NodePorts, p2.Results[s.Key()].NodePorts); diff != "" {
			t.Errorf("%s moved (-before +after):\n%s", s.Name, diff)
		}
	}
	if len(p2.Writes) != 0 {
		t.Errorf("writes after settling: %+v", p2.Writes)
	}

	// The same plan whatever the order of the services.
	for range 20 {
		shuffled := append([]Service(nil), svcs...)
		rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if diff := cmp.Diff(p2, Allocate(c, shuffled, pools, alive), cmpOpts...); diff != "" {
			t.Fatalf("order changes the plan (-want +got):\n%s", diff)
		}
	}
}

func TestNodePortOutOfRange(t *testing.T) {
	s := npSvc("a", 10, tcp(80, 8080))
	p := Allocate(cfg, []Service{s}, nil, alive)
	r := p.Results[s.Key()]
	if r.NodePorts[0] != 30000 || !strings.Contains(r.Conflict, "outside the node port range 30000-32767") {
		t.Errorf("result = %+v", r)
	}
}

func TestNotProxied(t *testing.T) {
	svcs := []Service{
		{Namespace: "default", Name: "ext", Type: TypeExternalName},
		{Namespace: "default", Name: "hl", Type: TypeClusterIP, Headless: true},
	}
	p := Allocate(cfg, svcs, nil, alive)
	for _, s := range svcs {
		if r := p.Results[s.Key()]; r.ClusterIP.IsValid() || r.NodePorts != nil {
			t.Errorf("%s got addresses: %+v", s.Name, r)
		}
		if s.NotProxiedReason() == "" {
			t.Errorf("%s: no reason", s.Name)
		}
	}
	if len(p.Writes) != 0 {
		t.Errorf("writes: %+v", p.Writes)
	}
}

func TestParsePortRange(t *testing.T) {
	if r, err := ParsePortRange("30000-32767"); err != nil || r != DefaultNodePortRange {
		t.Errorf("default: %v %v", r, err)
	}
	for _, bad := range []string{"", "30000", "2-1", "0-5", "1-70000", "a-b"} {
		if _, err := ParsePortRange(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestValidateApplyNodePorts(t *testing.T) {
	c := cfg
	c.NodePorts = PortRange{Min: 30000, Max: 30010}
	held := npSvc("held", 10, tcp(80, 30005))
	cur := Snapshot{Services: []Service{held}}
	for _, tt := range []struct {
		name string
		svc  Service
		want string
	}{
		{"free", npSvc("new", 20, tcp(80, 30006)), ""},
		{"held by another", npSvc("new", 20, tcp(80, 30005)), "spec.ports[0].nodePort: 30005/TCP is already in use by Service default/held"},
		{"other protocol", npSvc("new", 20, udp(80, 30005)), ""},
		{"outside the range", npSvc("new", 20, tcp(80, 8080)), "spec.ports[0].nodePort: 8080 is outside the node port range 30000-30010"},
		{"the holder itself", npSvc("held", 10, tcp(80, 30005)), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateApply(c, cur, Snapshot{Services: []Service{tt.svc}})
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("ValidateApply = %v, want %q", err, tt.want)
			}
		})
	}
	// Two services of one manifest asking for one port.
	err := ValidateApply(c, Snapshot{}, Snapshot{Services: []Service{npSvc("a", 1, tcp(80, 30001)), npSvc("b", 2, tcp(81, 30001))}})
	if err == nil || !strings.Contains(err.Error(), "30001/TCP is already in use by Service default/a") {
		t.Errorf("ValidateApply(two asking) = %v", err)
	}
}

// TestLocalCandidates: a VIP with externalTrafficPolicy Local is owned by a
// node with a ready endpoint or, when there is none anywhere, one with a
// serving terminating endpoint.
func TestLocalCandidates(t *testing.T) {
	ready := Endpoint{Node: "n1", IP: ip("10.244.1.2"), Ready: true, Serving: true}
	going := Endpoint{Node: "n2", IP: ip("10.244.2.3"), Serving: true, Terminating: true}
	gone := Endpoint{Node: "n3", IP: ip("10.244.3.4"), Terminating: true}
	all := map[string]bool{"n1": true, "n2": true, "n3": true}
	for _, tt := range []struct {
		eps   []Endpoint
		alive map[string]bool
		want  []string
	}{
		{[]Endpoint{going, ready, gone}, all, []string{"n1"}},
		{[]Endpoint{going, gone}, all, []string{"n2"}},
		{[]Endpoint{gone}, all, nil},
		{[]Endpoint{ready, going}, map[string]bool{"n2": true}, []string{"n2"}},
	} {
		if diff := cmp.Diff(tt.want, localCandidates(tt.eps, tt.alive)); diff != "" {
			t.Errorf("localCandidates (-want +got):\n%s", diff)
		}
	}
}
