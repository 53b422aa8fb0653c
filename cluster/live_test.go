package cluster

import (
	"reflect"
	"testing"

	"github.com/netloom/netloom/lb"
)

func TestLiveEndpoints(t *testing.T) {
	a := lb.ServiceKey{Namespace: "x", Name: "a"}
	b := lb.ServiceKey{Namespace: "x", Name: "b"}
	c := lb.ServiceKey{Namespace: "x", Name: "c"}
	all := map[lb.ServiceKey][]lb.Endpoint{
		a: {{PodName: "a1", Node: "n1"}, {PodName: "ext"}},              // all can serve
		b: {{PodName: "b1", Node: "n1"}, {PodName: "b2", Node: "gone"}}, // one on a node that is gone
		c: {{PodName: "c1", Node: "gone"}},                              // none left
	}
	got := liveEndpoints(all, map[string]bool{"n1": true})
	if len(got) != 2 || &got[a][0] != &all[a][0] {
		t.Errorf("liveEndpoints = %v: want a (its slice shared) and b", got)
	}
	if len(got[b]) != 1 || got[b][0].PodName != "b1" || len(all[b]) != 2 {
		t.Errorf("b = %v (input %v): want b1 only, the input unchanged", got[b], all[b])
	}
	// Every endpoint can serve: the map itself is shared; a service with
	// no endpoints is left out.
	both := map[string]bool{"n1": true, "gone": true}
	if got := liveEndpoints(all, both); reflect.ValueOf(got).Pointer() != reflect.ValueOf(all).Pointer() {
		t.Errorf("all endpoints live: a new map %v", got)
	}
	all[c] = nil
	if got := liveEndpoints(all, both); len(got) != 2 || got[c] != nil {
		t.Errorf("with an empty service: %v, want a and b only", got)
	}
}
