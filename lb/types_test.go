package lb

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The store value of a ServiceAssignment.
func TestAssignmentJSON(t *testing.T) {
	for _, tt := range []struct {
		a    Assignment
		want string
	}{
		{Assignment{VIP: ip("10.77.0.10"), Pool: "a", ClusterIP: ip("10.96.0.2")}, `{"vip":"10.77.0.10","pool":"a","clusterIP":"10.96.0.2"}`},
		{Assignment{ClusterIP: ip("10.96.0.2")}, `{"clusterIP":"10.96.0.2"}`},
		{Assignment{}, `{}`},
		{Assignment{ClusterIP: ip("10.96.0.3"), NodePorts: []uint16{30000, 30001}, HealthCheckNodePort: 30002}, `{"clusterIP":"10.96.0.3","nodePorts":[30000,30001],"healthCheckNodePort":30002}`},
	} {
		b, err := json.Marshal(tt.a)
		if err != nil || string(b) != tt.want {
			t.Errorf("Marshal(%+v) = %s, %v; want %s", tt.a, b, err, tt.want)
		}
		var back Assignment
		if err := json.Unmarshal(b, &back); err != nil || !back.Equal(tt.a) {
			t.Errorf("round trip of %s: %+v, %v", b, back, err)
		}
	}
}

func TestOlder(t *testing.T) {
	a := Service{Namespace: "b", Name: "x", Created: Version{Wall: 5, Logical: 1, Node: "n2"}}
	older := []Service{
		{Namespace: "z", Name: "z", Created: Version{Wall: 4, Logical: 9, Node: "n9"}},
		{Namespace: "z", Name: "z", Created: Version{Wall: 5, Logical: 0, Node: "n9"}},
		{Namespace: "z", Name: "z", Created: Version{Wall: 5, Logical: 1, Node: "n1"}},
		{Namespace: "a", Name: "z", Created: a.Created},
		{Namespace: "b", Name: "w", Created: a.Created},
	}
	for _, o := range older {
		if Older(o, a) >= 0 || Older(a, o) <= 0 {
			t.Errorf("%+v should be older than %+v", o, a)
		}
	}
	if Older(a, a) != 0 {
		t.Errorf("not equal to itself")
	}
	if diff := cmp.Diff("ns/name", ServiceKey{"ns", "name"}.String()); diff != "" {
		t.Error(diff)
	}
}
