package node

import (
	"encoding/json"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/mesh/store"
)

// TestDeletedAssignments: a recorded assignment is of a deleted service
// when the service's tombstone is held, or when the record is older than
// any tombstone; a record whose service is live or merely not here yet
// (gossip brought the record first) is kept.
func TestDeletedAssignments(t *testing.T) {
	now := time.Now()
	st, err := store.Open(t.TempDir(), "n1", store.Options{TombstoneTTL: time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	w := storeWriter{repl: store.NewReplicator(st, loneTransport{}), st: st}
	svc := func(name string) store.Key {
		return store.Key{Kind: cluster.KindService, Namespace: "default", Name: name}
	}
	var puts []store.Put
	for _, name := range []string{"live", "gone"} {
		puts = append(puts, store.Put{Key: svc(name), Value: json.RawMessage(`{"metadata":{"name":"` + name + `"}}`)})
	}
	if _, err := w.repl.Apply(puts, nil); err != nil {
		t.Fatal(err)
	}
	as := map[lb.ServiceKey]lb.Assignment{}
	for _, name := range []string{"live", "gone", "notyet"} {
		as[lb.ServiceKey{Namespace: "default", Name: name}] = lb.Assignment{VIP: netip.MustParseAddr("192.0.2.1")}
	}
	if err := w.Record(as, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.repl.Apply(nil, []store.Key{svc("gone")}); err != nil {
		t.Fatal(err)
	}
	names := func() []string {
		var out []string
		for _, k := range w.Deleted() {
			out = append(out, k.Name)
		}
		slices.Sort(out)
		return out
	}
	if got := names(); !slices.Equal(got, []string{"gone"}) {
		t.Errorf("deleted %v, want [gone]", got)
	}
	// Past the tombstones' memory a record of a service never heard of is
	// of a deleted one.
	now = now.Add(2 * time.Hour)
	if got := names(); !slices.Equal(got, []string{"gone", "notyet"}) {
		t.Errorf("after the tombstone TTL deleted %v, want [gone notyet]", got)
	}
}
