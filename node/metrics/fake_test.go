package metrics

import (
	"sync"
	"time"

	"github.com/netloom/netloom/node/api"
)

// fakeSource is a Source with a fixed three-node cluster that tests change.
type fakeSource struct {
	mu   sync.Mutex
	st   api.Status
	objs map[string][]api.Object
}

// testNow is the fake cluster's "now": handshakes are dated from it.
var testNow = time.Date(2026, 11, 21, 17, 50, 0, 0, time.UTC)

func newFakeSource() *fakeSource {
	hs2 := testNow.Add(-30 * time.Second)
	return &fakeSource{
		st: api.Status{
			Node: api.NodeStatus{Name: "node1", Address: "10.77.0.11", Subnet: "10.244.20.0/24", Version: "0.1.0-test",
				WireGuard: api.LocalWireGuard{Mode: "userspace", Interface: "netloom0", PublicKey: "K1=", Port: 51820}},
			Members: []api.MemberStatus{
				{Name: "node1", Address: "10.77.0.11", State: "alive", Subnet: "10.244.20.0/24", Self: true,
					WireGuard: api.PeerWireGuard{PublicKey: "K1=", Endpoint: "10.77.0.11:51820"}},
				{Name: "node2", Address: "10.77.0.12", State: "alive", Subnet: "10.244.45.0/24",
					WireGuard: api.PeerWireGuard{PublicKey: "K2=", Endpoint: "10.77.0.12:51820", LastHandshake: &hs2, RxBytes: 476, TxBytes: 532}},
				{Name: "node3", Address: "10.77.0.13", State: "alive", Subnet: "10.244.7.0/24",
					WireGuard: api.PeerWireGuard{PublicKey: "K3=", Endpoint: "10.77.0.13:51820"}},
			},
		},
		objs: map[string][]api.Object{
			"Namespace": {{Kind: "Namespace", Name: "default"}},
			"Pod": {
				{Kind: "Pod", Namespace: "default", Name: "web", IP: "10.244.20.2", Node: "node1"},
				{Kind: "Pod", Namespace: "default", Name: "db", IP: "10.244.45.2", Node: "node2"},
			},
		},
	}
}

func (f *fakeSource) Status() api.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	st.Members = append([]api.MemberStatus(nil), f.st.Members...)
	return st
}

func (f *fakeSource) Objects(kind string) []api.Object {
	f.mu.Lock()
	defer f.mu.Unlock()
	list, ok := f.objs[kind]
	if !ok {
		return nil
	}
	return append([]api.Object{}, list...)
}

func (f *fakeSource) setState(node, state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.st.Members {
		if f.st.Members[i].Name == node {
			f.st.Members[i].State = state
		}
	}
}

// addLB gives the fake cluster an address pool, three services, two
// network policies with counters, two VIPs (one announced by node1) and the
// policy rule count.
func (f *fakeSource) addLB() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.VIPs = []api.VIPStatus{{IP: "10.77.0.200", Service: "default/web", Owner: "node1"}, {IP: "10.77.0.201", Service: "default/api", Owner: "node2"}}
	f.st.Node.PolicyRules = 14
	f.objs["AddressPool"] = []api.Object{{Kind: "AddressPool", Name: "lan"}}
	f.objs["Service"] = []api.Object{
		{Kind: "Service", Namespace: "default", Name: "api", ClusterIP: "10.96.0.11", ExternalIP: "10.77.0.201", Owner: "node2"},
		{Kind: "Service", Namespace: "default", Name: "queue", ClusterIP: "10.96.0.12", Pending: `address pool "lan" is full`},
		{Kind: "Service", Namespace: "default", Name: "web", ClusterIP: "10.96.0.10", ExternalIP: "10.77.0.200", Owner: "node1"},
	}
	f.objs["NetworkPolicy"] = []api.Object{
		{Kind: "NetworkPolicy", Namespace: "default", Name: "web-from-clients", Selects: []string{"default/web"},
			Counters: &api.PolicyCounters{Node: "node1",
				Ingress: api.PolicyCounts{AllowedPackets: 12, AllowedBytes: 1008, DroppedPackets: 3, DroppedBytes: 252}}},
		{Kind: "NetworkPolicy", Namespace: "default", Name: "db-egress", Selects: []string{},
			Counters: &api.PolicyCounters{Node: "node1"}},
		{Kind: "NetworkPolicy", Namespace: "default", Name: "elsewhere"}, // no counters on this node
	}
}
