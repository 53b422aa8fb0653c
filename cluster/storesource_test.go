package cluster

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/mesh/store"
)

// TestStoreSource: the source turns the store's kinds into the snapshot's
// parts; a part keeps its pointer while the kinds it reads stay, and a
// change to one kind renews only the parts that read it.
func TestStoreSource(t *testing.T) {
	st, err := store.Open(t.TempDir(), "n1", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	put := func(k store.Key, v string) {
		t.Helper()
		if _, err := st.Apply([]store.Put{{Key: k, Value: json.RawMessage(v)}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	putTyped := func(p store.Put, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Apply([]store.Put{p}, nil); err != nil {
			t.Fatal(err)
		}
	}
	put(store.Key{Kind: "Namespace", Name: "shop"}, `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop","labels":{"team":"a"}}}`)
	put(store.Key{Kind: "Pod", Namespace: "shop", Name: "web"}, `{"apiVersion":"v1","kind":"Pod","metadata":{"namespace":"shop","name":"web","labels":{"app":"web"}},"spec":{"containers":[{"name":"c","ports":[{"name":"http","containerPort":8080}]}]}}`)
	putTyped(PodAddresses.Put(store.Key{Namespace: "shop", Name: "web"}, PodAddress{Node: "n1", IP: "10.244.1.5", ContainerID: "c1", IfName: "eth0"}))
	putTyped(PodAddresses.Put(store.Key{Namespace: "shop", Name: "bad"}, PodAddress{Node: "n1", IP: "not-an-ip"}))
	putTyped(Leases.Put(store.Key{}, ipam.Lease{Node: "n1", Subnet: netip.MustParsePrefix("10.244.1.0/24"), Claimed: 1, Renewed: 1}))
	put(store.Key{Kind: "Service", Namespace: "shop", Name: "web"}, `{"apiVersion":"v1","kind":"Service","metadata":{"namespace":"shop","name":"web","annotations":{"netloom.io/created":"5@n2"}},"spec":{"type":"LoadBalancer","selector":{"app":"web"},"ports":[{"port":80,"targetPort":"http"}]}}`)
	putTyped(Assignments.Put(store.Key{Namespace: "shop", Name: "web"}, lb.Assignment{VIP: netip.MustParseAddr("10.77.0.200"), Pool: "lan"}))

	src := NewStoreSource(st)
	o1 := src.Objects()
	if len(o1.Policy.Pods) != 1 {
		t.Fatalf("pods %+v, want shop/web only (the other address does not parse)", o1.Policy.Pods)
	}
	p := o1.Policy.Pods[0]
	if p.IP != netip.MustParseAddr("10.244.1.5") || p.Labels["app"] != "web" || len(p.Ports) != 1 || p.Ports[0].Port != 8080 {
		t.Errorf("pod %+v: want its address, labels and named port", p)
	}
	if o1.Policy.Namespaces["shop"]["team"] != "a" || len(o1.Leases) != 1 {
		t.Errorf("namespaces %v leases %v", o1.Policy.Namespaces, o1.Leases)
	}
	if len(o1.Services) != 1 || o1.Services[0].Assigned.VIP != netip.MustParseAddr("10.77.0.200") || o1.Services[0].Created != (lb.Version{Wall: 5, Node: "n2"}) {
		t.Fatalf("services %+v: want the recorded VIP and the created stamp", o1.Services)
	}
	o2 := src.Objects()
	if o2.Policy != o1.Policy || &o2.Services[0] != &o1.Services[0] || o2.Gen != o1.Gen {
		t.Errorf("nothing changed, yet the parts were rebuilt")
	}
	// A new label: the policy view is rebuilt, the services are not.
	put(store.Key{Kind: "Pod", Namespace: "shop", Name: "web"}, `{"apiVersion":"v1","kind":"Pod","metadata":{"namespace":"shop","name":"web","labels":{"app":"web2"}}}`)
	o3 := src.Objects()
	if o3.Policy == o1.Policy || o3.Policy.Pods[0].Labels["app"] != "web2" || o3.Gen.Policy == o1.Gen.Policy {
		t.Errorf("after a label change the policy view is %+v", o3.Policy.Pods)
	}
	if &o3.Services[0] != &o1.Services[0] || o3.Gen.Services != o1.Gen.Services {
		t.Errorf("a pod change rebuilt the services")
	}
	if o3.Gen.Pods == o1.Gen.Pods {
		t.Errorf("a pod change did not move the pods' generation")
	}
	// A new policy moves the policy view, not the pods (endpoints stay).
	put(store.Key{Kind: "NetworkPolicy", Namespace: "shop", Name: "deny"}, `{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"namespace":"shop","name":"deny"},"spec":{"podSelector":{}}}`)
	if o := src.Objects(); o.Gen.Policy == o3.Gen.Policy || o.Gen.Pods != o3.Gen.Pods || len(o.Policy.Policies) != 1 {
		t.Errorf("after a new policy: gens %+v (before %+v), %d policies", o.Gen, o3.Gen, len(o.Policy.Policies))
	}
	// A new assignment: the services are rebuilt.
	putTyped(Assignments.Put(store.Key{Namespace: "shop", Name: "web"}, lb.Assignment{VIP: netip.MustParseAddr("10.77.0.201"), Pool: "lan"}))
	if o4 := src.Objects(); o4.Services[0].Assigned.VIP != netip.MustParseAddr("10.77.0.201") || o4.Gen.Services == o1.Gen.Services {
		t.Errorf("after a new assignment the service is %+v", o4.Services[0])
	}
}

// TestCodecs: each agent-written kind round-trips through its codec, and
// an entry of another kind or with a bad value is an error.
func TestCodecs(t *testing.T) {
	l := ipam.Lease{Node: "n1", Subnet: netip.MustParsePrefix("10.244.1.0/24"), Claimed: 7}
	p, err := Leases.Put(store.Key{Name: "ignored"}, l)
	if err != nil || p.Key != (store.Key{Kind: KindLease, Name: "n1"}) {
		t.Fatalf("Leases.Put = %+v, %v; want the key from the node", p, err)
	}
	got, err := Leases.Decode(store.Entry{Key: p.Key, Value: p.Value})
	if err != nil || got != l {
		t.Errorf("Leases.Decode = %+v, %v", got, err)
	}
	if _, err := Leases.Decode(store.Entry{Key: store.Key{Kind: KindLease, Name: "n2"}, Value: p.Value}); err == nil {
		t.Error("a lease of n1 stored as n2's decoded")
	}
	if _, err := Assignments.Decode(store.Entry{Key: p.Key, Value: p.Value}); err == nil {
		t.Error("a lease decoded as an assignment")
	}
	if _, err := PodAddresses.Decode(store.Entry{Key: store.Key{Kind: KindPodAddress, Name: "x"}, Value: json.RawMessage(`{"ip":"300.1.1.1"}`)}); err == nil {
		t.Error("a pod address with a bad IP decoded")
	}
}
