package webui

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/events"
)

// fakeSource is a Source with a fixed three-node cluster that tests change.
type fakeSource struct {
	mu   sync.Mutex
	st   api.Status
	objs map[string][]api.Object
	log  *events.Log
}

// testNow is the fake cluster's "now": handshakes are dated from it.
var testNow = time.Date(2026, 11, 21, 17, 50, 0, 0, time.UTC)

func newFakeSource() *fakeSource {
	hs2 := testNow.Add(-30 * time.Second)
	f := &fakeSource{
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
			"Namespace": {{Kind: "Namespace", Name: "default", Object: json.RawMessage(`{"metadata":{"name":"default"}}`)}},
			"Pod": {
				{Kind: "Pod", Namespace: "default", Name: "web", IP: "10.244.20.2", Node: "node1",
					Object: json.RawMessage(`{"metadata":{"name":"web","labels":{"app":"web"}}}`)},
				{Kind: "Pod", Namespace: "default", Name: "db", IP: "10.244.45.2", Node: "node2"},
			},
		},
		log: events.NewLog("node1", 100),
	}
	f.log.Add(events.Join, "node2", "member node2 joined")
	return f
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

func (f *fakeSource) Events() *events.Log { return f.log }

func (f *fakeSource) setState(node, state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.st.Members {
		if f.st.Members[i].Name == node {
			f.st.Members[i].State = state
		}
	}
}

func (f *fakeSource) setObjects(kind string, list []api.Object) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.objs[kind] = list
}
