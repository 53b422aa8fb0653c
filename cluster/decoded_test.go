package cluster

import (
	"encoding/json"
	"testing"

	"github.com/netloom/netloom/mesh/store"
)

type thing struct{ V int }

// TestDecoded: unchanged entries keep their decoded value (the same
// pointer), changed ones are decoded again, deleted ones go, and a kind
// that did not change is not read again.
func TestDecoded(t *testing.T) {
	s, err := store.Open(t.TempDir(), "n1", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	decodes := 0
	d := newDecoded("Thing", func(e store.Entry) (*thing, bool) {
		decodes++
		var x thing
		return &x, json.Unmarshal(e.Value, &x) == nil
	})
	put := func(name, v string) {
		t.Helper()
		if _, err := s.Apply([]store.Put{{Key: store.Key{Kind: "Thing", Namespace: "ns", Name: name}, Value: json.RawMessage(v)}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	put("a", `{"V":1}`)
	put("b", `{"V":2}`)
	put("c", `{"V":"not a number"}`)
	first, g1 := d.list(s)
	if len(first) != 2 || first[0].V != 1 || first[1].V != 2 || decodes != 3 {
		t.Fatalf("first list: %d items, %d decodes; want a, b and 3 decodes", len(first), decodes)
	}
	again, g2 := d.list(s)
	if g2 != g1 || decodes != 3 || &again[0] != &first[0] {
		t.Fatalf("unchanged kind: generation %d -> %d, %d decodes; want the same slice and no decode", g1, g2, decodes)
	}
	// Another kind does not move this one.
	if _, err := s.Apply([]store.Put{{Key: store.Key{Kind: "Other", Name: "x"}, Value: json.RawMessage(`{}`)}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, g := d.list(s); g != g1 {
		t.Errorf("a write of another kind moved the generation %d -> %d", g1, g)
	}
	put("b", `{"V":3}`)
	if _, err := s.Apply(nil, []store.Key{{Kind: "Thing", Namespace: "ns", Name: "c"}}); err != nil {
		t.Fatal(err)
	}
	third, _ := d.list(s)
	if len(third) != 2 || third[0] != first[0] || third[1].V != 3 || decodes != 4 {
		t.Fatalf("after b changed and c was deleted: %+v, %d decodes; want a's old pointer, b decoded again (V 3), 4 decodes", third, decodes)
	}
	if x, ok := d.get(s, store.Key{Kind: "Thing", Namespace: "ns", Name: "a"}); !ok || x != first[0] || decodes != 4 {
		t.Errorf("get(a) = %v, %v after %d decodes; want the cached pointer", x, ok, decodes)
	}
	if _, ok := d.get(s, store.Key{Kind: "Thing", Namespace: "ns", Name: "c"}); ok {
		t.Error("get(c) found the deleted entry")
	}
}
