package node

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/cluster/clustertest"
	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/mesh"
	"github.com/netloom/netloom/mesh/objects"
	"github.com/netloom/netloom/mesh/store"
	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/events"
)

// The local API's handlers are fuzzed on an agent without gossip,
// WireGuard or kernel: a store in a temporary directory holding a small
// cluster (two nodes with subnets, two attached pods, a namespace, a
// policy), and a hub over it that is built on demand, never run.

var (
	fuzzAgentOnce    sync.Once
	fuzzAgentCfg     settings
	fuzzAgentEntries []store.Entry
	fuzzAgentErr     error
)

// fuzzAgentManifest is what the fuzzed agent's store holds besides the
// agent's own kinds.
const fuzzAgentManifest = `apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
---
apiVersion: v1
kind: Pod
metadata:
  name: db
  labels: {app: db}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: db-from-web
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 5432}]
`

func fuzzAgentSetup() {
	dir, err := os.MkdirTemp("", "netloom-fuzz-cfg-")
	if err != nil {
		fuzzAgentErr = err
		return
	}
	defer os.RemoveAll(dir)
	fuzzAgentCfg, err = Config{Name: "n1", DataDir: dir, RunDir: dir, Socket: dir + "/s", AdvertiseAddr: "10.77.0.11",
		ClusterCIDR: "10.244.0.0/16", NodeMask: 24, WireGuard: "userspace", GossipPort: 7946, WGPort: 51820,
		WGIface: "netloom0", SubnetGrace: time.Hour, Exe: "/bin/true"}.check()
	if err != nil {
		fuzzAgentErr = err
		return
	}
	objs, err := objects.Parse([]byte(fuzzAgentManifest))
	if err != nil {
		fuzzAgentErr = err
		return
	}
	var puts []store.Put
	for _, o := range objs {
		puts = append(puts, store.Put{Key: store.Key{Kind: o.Kind, Namespace: o.Namespace, Name: o.Name}, Value: o.JSON})
	}
	now := time.Now().UnixMilli()
	for _, l := range []ipam.Lease{
		{Node: "n1", Subnet: netip.MustParsePrefix("10.244.1.0/24"), Claimed: now - 60000, Renewed: now},
		{Node: "n2", Subnet: netip.MustParsePrefix("10.244.2.0/24"), Claimed: now - 60000, Renewed: now},
	} {
		p, err := cluster.Leases.Put(store.Key{}, l)
		if err != nil {
			fuzzAgentErr = err
			return
		}
		puts = append(puts, p)
	}
	for _, pa := range []struct {
		name string
		pa   cluster.PodAddress
	}{
		{"web", cluster.PodAddress{Node: "n1", IP: "10.244.1.5", ContainerID: "c1", IfName: "eth0"}},
		{"db", cluster.PodAddress{Node: "n2", IP: "10.244.2.7", ContainerID: "c2", IfName: "eth0"}},
	} {
		p, err := cluster.PodAddresses.Put(store.Key{Namespace: "default", Name: pa.name}, pa.pa)
		if err != nil {
			fuzzAgentErr = err
			return
		}
		puts = append(puts, p)
	}
	for i, p := range puts {
		fuzzAgentEntries = append(fuzzAgentEntries, store.Entry{Key: p.Key, Value: p.Value, Version: store.Version{Wall: now - 1000, Logical: uint32(i), Node: "n2"}})
	}
}

type fuzzNoPeers struct{}

func (fuzzNoPeers) NumMembers() int      { return 1 }
func (fuzzNoPeers) SendToAll(msg []byte) {}

// fuzzAgent returns a fresh agent over a store holding the fuzz cluster.
func fuzzAgent(t *testing.T) *Agent {
	t.Helper()
	fuzzAgentOnce.Do(fuzzAgentSetup)
	if fuzzAgentErr != nil {
		t.Fatalf("set up the fuzzed agent: %v", fuzzAgentErr)
	}
	// Every accepted write syncs the store file: in memory when possible,
	// or fuzzing crawls.
	dir := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "netloom-fuzz-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			dir = d
		}
	}
	if dir == "" {
		dir = t.TempDir()
	}
	st, err := store.Open(dir, "n1", store.Options{MergeFlushDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if n := len(st.Merge(fuzzAgentEntries)); n != len(fuzzAgentEntries) {
		t.Fatalf("the fuzz cluster merged %d of %d entries", n, len(fuzzAgentEntries))
	}
	a := &Agent{cfg: fuzzAgentCfg, log: slog.New(slog.DiscardHandler), events: events.NewLog("n1", 100), store: st,
		repl: store.NewReplicator(st, fuzzNoPeers{})}
	members := clustertest.NewMembers(
		mesh.Member{Name: "n1", Addr: netip.MustParseAddr("10.77.0.11"), State: mesh.StateAlive, Self: true, Meta: mesh.Meta{Addr: "10.77.0.11"}},
		mesh.Member{Name: "n2", Addr: netip.MustParseAddr("10.77.0.12"), State: mesh.StateAlive, Meta: mesh.Meta{Addr: "10.77.0.12"}},
	)
	a.hub = cluster.NewHub(cluster.HubConfig{Name: "n1", LB: a.lbConfig(), SubnetGrace: time.Hour}, cluster.NewStoreSource(st), members)
	return a
}

// serve sends body to one of a's handlers.
func serve(a *Agent, h http.HandlerFunc, path string, body []byte) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
	return rec
}

// checkRefusal checks a refusal's answer: a 4xx with one line of JSON,
// an api.Error whose message is one line.
func checkRefusal(t *testing.T, what string, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code < 400 || rec.Code > 499 {
		t.Fatalf("%s: status %d, want 4xx: %s", what, rec.Code, rec.Body)
	}
	checkErrorBody(t, what, rec)
}

func checkErrorBody(t *testing.T, what string, rec *httptest.ResponseRecorder) {
	t.Helper()
	b := rec.Body.Bytes()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: error with Content-Type %q", what, ct)
	}
	if bytes.Count(b, []byte("\n")) != 1 || !bytes.HasSuffix(b, []byte("\n")) {
		t.Fatalf("%s: error body is not one line: %q", what, b)
	}
	var e api.Error
	if err := json.Unmarshal(b, &e); err != nil || e.Error == "" || strings.Contains(e.Error, "\n") {
		t.Fatalf("%s: error body %q: %v", what, b, err)
	}
}

// storeState is what must not change when a request is refused.
type storeState struct {
	entries []store.Entry
	live    int
	gen     uint64
}

func stateOf(s *store.Store) storeState {
	return storeState{s.All(), s.Len(), s.Generation("")}
}

func checkStoreUnchanged(t *testing.T, what string, s *store.Store, before storeState) {
	t.Helper()
	after := stateOf(s)
	// cmp.Diff only to explain a difference: it is most of the cost of an
	// input otherwise.
	b1, _ := json.Marshal(before.entries)
	b2, _ := json.Marshal(after.entries)
	if before.live == after.live && before.gen == after.gen && bytes.Equal(b1, b2) {
		return
	}
	t.Fatalf("%s changed the store (-before +after):\n%s", what, cmp.Diff(before, after, cmp.AllowUnexported(storeState{}), cmpopts.EquateEmpty()))
}

// FuzzHandleApply posts a body to apply (or delete, with del). With wrap
// the fuzzed bytes are the manifest inside a well-formed ApplyRequest, so
// that the fuzzer reaches the manifest checks; without, they are the whole
// body. The handler never panics and answers 200 or a 4xx; a 4xx comes
// with a one-line JSON error and leaves the store as it was.
func FuzzHandleApply(f *testing.F) {
	for _, m := range fuzzManifestSeeds {
		f.Add([]byte(m), true, false)
		f.Add([]byte(m), true, true)
	}
	body, _ := json.Marshal(api.ApplyRequest{Manifest: "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n"})
	for _, b := range [][]byte{body, body[:len(body)/2], []byte(`{"manifest":5}`), []byte(`{"manifest":null}`), []byte(`[]`), []byte(`null`), {}, []byte("{\"manifest\":\"\\ud800\"}")} {
		f.Add(b, false, false)
	}
	f.Fuzz(func(t *testing.T, data []byte, wrap, del bool) {
		a := fuzzAgent(t)
		body := data
		if wrap {
			body, _ = json.Marshal(api.ApplyRequest{Manifest: string(data)})
		}
		before := stateOf(a.store)
		rec := serve(a, func(w http.ResponseWriter, r *http.Request) { a.handleApply(w, r, del) }, api.PathApply, body)
		if rec.Code == http.StatusOK {
			var resp api.ApplyResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || len(resp.Results) == 0 {
				t.Fatalf("apply: 200 with %q: %v", rec.Body, err)
			}
			return
		}
		checkRefusal(t, "apply", rec)
		checkStoreUnchanged(t, "a refused apply", a.store, before)
	})
}

// FuzzHandleTrace posts a body to the policy trace (with wrap: a
// well-formed TraceRequest of the fuzzed fields). It never panics and
// answers 200 with a verdict or a 4xx with a one-line JSON error; it never
// changes the store.
func FuzzHandleTrace(f *testing.F) {
	for _, r := range []api.TraceRequest{
		{Src: "default/web", Dst: "default/db", Port: "5432/tcp"},
		{Src: "web", Dst: "db", Port: "5432"},
		{Src: "10.244.1.5", Dst: "10.244.2.7", Port: "53/UDP"},
		{Src: "10.77.0.11", Dst: "default/web", Port: "80"},
		{Src: "default/db", Dst: "1.1.1.1", Port: "443/sctp"},
		{Src: "default/nope", Dst: "default/db", Port: "5432"},
		{Src: "default/web", Dst: "default/db", Port: "0"},
		{Src: "default/web", Dst: "default/db", Port: "70000/tcp"},
		{Src: "default/web", Dst: "default/db", Port: "80/icmp"},
		{Src: "fe80::1%eth0", Dst: "::ffff:10.244.2.7", Port: "5432"},
	} {
		b, _ := json.Marshal(r)
		f.Add(b, r.Src, r.Dst, r.Port, true)
		f.Add(b, "", "", "", false)
	}
	for _, b := range []string{``, `{`, `null`, `[]`, `{"src":5}`, `{"src":"default/web","dst":"default/db","port":"5432","extra":[1,2]}`} {
		f.Add([]byte(b), "", "", "", false)
	}
	f.Fuzz(func(t *testing.T, data []byte, src, dst, port string, wrap bool) {
		a := fuzzAgent(t)
		body := data
		if wrap {
			body, _ = json.Marshal(api.TraceRequest{Src: src, Dst: dst, Port: port})
		}
		before := stateOf(a.store)
		rec := serve(a, a.handleTrace, api.PathTrace, body)
		checkStoreUnchanged(t, "a trace", a.store, before)
		if rec.Code == http.StatusOK {
			var resp api.TraceResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || resp.Reason == "" {
				t.Fatalf("trace: 200 with %q: %v", rec.Body, err)
			}
			return
		}
		checkRefusal(t, "trace", rec)
	})
}

// FuzzHandleRequestBody posts a body to join and the CNI handlers (op
// picks which), as far as they run without a live cluster: a body that
// does not decode, or lacks what the handler needs, gets a 4xx with a
// one-line JSON error and changes nothing. A CNI DEL that decodes removes
// only this node's registration of exactly that container and interface.
func FuzzHandleRequestBody(f *testing.F) {
	cni := func(r api.CNIRequest) []byte { b, _ := json.Marshal(r); return b }
	join, _ := json.Marshal(api.JoinRequest{Addresses: []string{"10.77.0.12:7946"}})
	seeds := [][]byte{
		join,
		cni(api.CNIRequest{ContainerID: "c1", IfName: "eth0", Netns: "/var/run/netns/x", PodNamespace: "default", PodName: "web"}),
		cni(api.CNIRequest{ContainerID: "c2", IfName: "eth0"}),
		cni(api.CNIRequest{ContainerID: "c1"}),
		cni(api.CNIRequest{IfName: "eth0"}),
		[]byte(`{"addresses":"10.77.0.12"}`),
		[]byte(`{"containerID":5}`),
		[]byte(`{"containerID":"c1","ifName":"eth0"`),
		[]byte(`null`),
		[]byte(`[]`),
		{},
	}
	for _, b := range seeds {
		for op := range uint8(4) {
			f.Add(b, op)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, op uint8) {
		a := fuzzAgent(t)
		before := stateOf(a.store)
		switch op % 4 {
		case 0:
			var req api.JoinRequest
			if json.Unmarshal(body, &req) == nil {
				return // would call the members
			}
			rec := serve(a, a.handleJoin, api.PathJoin, body)
			checkRefusal(t, "join", rec)
			checkStoreUnchanged(t, "a refused join", a.store, before)
		case 1:
			var req api.CNIRequest
			if json.Unmarshal(body, &req) == nil && req.ContainerID != "" && req.IfName != "" {
				return // would wait for this node's subnet
			}
			rec := serve(a, a.handleCNIAdd, api.PathCNIAdd, body)
			checkRefusal(t, "CNI ADD", rec)
			checkStoreUnchanged(t, "a refused CNI ADD", a.store, before)
		case 2:
			var req api.CNIRequest
			decodes := json.Unmarshal(body, &req) == nil
			rec := serve(a, a.handleCNIDel, api.PathCNIDel, body)
			if !decodes {
				checkRefusal(t, "CNI DEL", rec)
				checkStoreUnchanged(t, "a refused CNI DEL", a.store, before)
				return
			}
			if rec.Code != http.StatusOK {
				t.Fatalf("CNI DEL of %+v: status %d: %s", req, rec.Code, rec.Body)
			}
			web := store.Key{Kind: cluster.KindPodAddress, Namespace: "default", Name: "web"}
			_, kept := a.store.Get(web)
			if mine := req.ContainerID == "c1" && req.IfName == "eth0"; mine == kept {
				t.Fatalf("CNI DEL of %+v: registration of default/web kept=%v", req, kept)
			}
			if a.store.Len() < before.live-1 {
				t.Fatalf("CNI DEL of %+v removed %d entries", req, before.live-a.store.Len())
			}
		case 3:
			var req api.CNIRequest
			decodes := json.Unmarshal(body, &req) == nil
			rec := serve(a, a.handleCNICheck, api.PathCNICheck, body)
			checkStoreUnchanged(t, "a CNI CHECK", a.store, before)
			if !decodes {
				checkRefusal(t, "CNI CHECK", rec)
				return
			}
			if rec.Code != http.StatusServiceUnavailable { // this node has no allocator
				t.Fatalf("CNI CHECK of %+v without an allocator: status %d", req, rec.Code)
			}
			checkErrorBody(t, "CNI CHECK", rec)
		}
	})
}

// fuzzManifestSeeds are manifests for FuzzHandleApply: valid ones of every
// kind, one that collides with what the store holds, and broken ones.
var fuzzManifestSeeds = []string{
	"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
	"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n  labels:\n    env: prod\n",
	`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"db","namespace":"default"},"spec":{"containers":[{"name":"pg","image":"postgres","ports":[{"containerPort":5432}]}]}}`,
	"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
	"apiVersion: netloom.io/v1alpha1\nkind: AddressPool\nmetadata:\n  name: lan\nspec:\n  addresses: [192.168.1.240/28]\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: LoadBalancer\n  loadBalancerIP: 192.168.1.241\n  selector: {app: web}\n  ports:\n  - port: 80\n",
	"apiVersion: netloom.io/v1alpha1\nkind: AddressPool\nmetadata:\n  name: pods\nspec:\n  addresses: [10.244.0.0/24]\n",
	"apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: LoadBalancer\n  loadBalancerIP: 203.0.113.9\n  ports:\n  - port: 80\n",
	"apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations:\n    netloom.io/created: yesterday\nspec:\n  clusterIP: 10.96.0.10\n  ports:\n  - port: 53\n    protocol: UDP\n",
	`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}},{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}]}`,
	"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n",
	"apiVersion: v1\nkind: Pod\nmetadata:\n\tname: web\n",
	"# nothing\n",
	"",
}
