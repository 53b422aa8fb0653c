package node

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/netloom/netloom/mesh/store"
	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/events"
)

type loneTransport struct{}

func (loneTransport) NumMembers() int      { return 1 }
func (loneTransport) SendToAll(msg []byte) {}

// TestApplyUnchangedReasserts: applying an object whose content the store
// holds already still writes it (a newer version), so that an older write
// of another node still on its way cannot replace what was just applied;
// the answer says "unchanged".
func TestApplyUnchangedReasserts(t *testing.T) {
	s, err := store.Open(t.TempDir(), "n1", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	a := &Agent{cfg: settings{Config: Config{Name: "n1"}}, store: s, repl: store.NewReplicator(s, loneTransport{}), events: events.NewLog("n1", 10)}
	apply := func() (api.ApplyResponse, store.Version) {
		t.Helper()
		body, _ := json.Marshal(api.ApplyRequest{Manifest: "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {team: a}\n"})
		rec := httptest.NewRecorder()
		a.handleApply(rec, httptest.NewRequest(http.MethodPost, api.PathApply, strings.NewReader(string(body))), false)
		if rec.Code != http.StatusOK {
			t.Fatalf("apply: %d %s", rec.Code, rec.Body)
		}
		var resp api.ApplyResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
		e, ok := s.Get(store.Key{Kind: "Namespace", Name: "shop"})
		if !ok {
			t.Fatal("namespace not stored")
		}
		return resp, e.Version
	}
	r1, v1 := apply()
	r2, v2 := apply()
	if strings.Join(r1.Results, ",") != "namespace/shop created" || strings.Join(r2.Results, ",") != "namespace/shop unchanged" {
		t.Errorf("results %q then %q, want created then unchanged", r1.Results, r2.Results)
	}
	if !v1.Less(v2) {
		t.Errorf("the second apply kept version %s (first %s); want a newer one", v2, v1)
	}
}

// TestApplyTooLarge: a body over MaxRequestBytes is refused with 413 and
// one line saying what to do, and nothing is stored.
func TestApplyTooLarge(t *testing.T) {
	s, err := store.Open(t.TempDir(), "n1", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	a := &Agent{cfg: settings{Config: Config{Name: "n1"}}, store: s, repl: store.NewReplicator(s, loneTransport{}), events: events.NewLog("n1", 10)}
	manifest := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n" + "# " + strings.Repeat("x", MaxRequestBytes) + "\n"
	body, _ := json.Marshal(api.ApplyRequest{Manifest: manifest})
	rec := httptest.NewRecorder()
	a.handleApply(rec, httptest.NewRequest(http.MethodPost, api.PathApply, strings.NewReader(string(body))), false)
	var e api.Error
	_ = json.Unmarshal(rec.Body.Bytes(), &e)
	if rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(e.Error, "split the manifest") || strings.Contains(e.Error, "\n") {
		t.Errorf("got %d %q, want 413 and one line saying to split the manifest", rec.Code, e.Error)
	}
	if s.Len() != 0 {
		t.Errorf("the store holds %d entries after a refused apply", s.Len())
	}
}

// TestDebugProfiles: the socket serves Go's profiles (the heap profile an
// operator sends with a memory report).
func TestDebugProfiles(t *testing.T) {
	a := &Agent{cfg: settings{Config: Config{Name: "n1"}}, events: events.NewLog("n1", 10)}
	h := a.handler()
	for path, want := range map[string]string{
		api.PathDebug + "heap?debug=1":      "# HeapInuse = ",
		api.PathDebug + "goroutine?debug=1": "goroutine profile:",
		api.PathDebug:                       "heap",
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), want) {
			t.Errorf("GET %s: %d, body without %q", path, rec.Code, want)
		}
	}
}
