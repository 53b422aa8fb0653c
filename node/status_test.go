package node

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/lb/lbctl"
	"github.com/netloom/netloom/node/api"
)

// TestVIPStatus: a VIP is listed with its owner, and recorded once the
// service holds it in the store, not while it is only this node's plan.
func TestVIPStatus(t *testing.T) {
	ip := netip.MustParseAddr
	web := lb.Service{Namespace: "default", Name: "web", Type: lb.TypeLoadBalancer, Assigned: lb.Assignment{VIP: ip("10.77.0.200")}}
	api2 := lb.Service{Namespace: "default", Name: "api", Type: lb.TypeLoadBalancer}
	s := &cluster.Snapshot{Services: []lb.Service{web, api2}, LB: &cluster.LB{
		Plan: lb.Plan{Results: map[lb.ServiceKey]lb.Result{
			web.Key():  {VIP: ip("10.77.0.200")},
			api2.Key(): {VIP: ip("10.77.0.201")},
		}},
		Owners: map[netip.Addr]string{ip("10.77.0.200"): "n1", ip("10.77.0.201"): "n2"},
	}}
	want := []api.VIPStatus{
		{IP: "10.77.0.200", Service: "default/web", Owner: "n1", Recorded: true},
		{IP: "10.77.0.201", Service: "default/api", Owner: "n2"},
	}
	if diff := cmp.Diff(want, vipStatus(&lbctl.Status{Snapshot: s})); diff != "" {
		t.Errorf("vipStatus (-want +got):\n%s", diff)
	}
}
