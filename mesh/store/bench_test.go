package store

import (
	"encoding/json"
	"fmt"
	"testing"
)

// benchEntries returns n remote entries of about 200 bytes each.
func benchEntries(n int) []Entry {
	es := make([]Entry, n)
	for i := range es {
		v := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"pod-%d","namespace":"ns-%d","labels":{"app":"web"}},"spec":{"containers":[{"name":"c","ports":[{"containerPort":8080}]}]}}`, i, i%50)
		es[i] = Entry{
			Key:     Key{Kind: "Pod", Namespace: fmt.Sprint("ns-", i%50), Name: fmt.Sprint("pod-", i)},
			Value:   json.RawMessage(v),
			Version: Version{Wall: 1_700_000_000_000 + int64(i), Node: "remote"},
		}
	}
	return es
}

// BenchmarkMerge merges 10k entries: into an empty store (every entry
// changes state, one synchronous persist of the whole file) and again into a
// store that already holds them (no change, no write).
func BenchmarkMerge(b *testing.B) {
	es := benchEntries(10_000)
	b.Run("new", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			s := openTest(b, "local", nil)
			b.StartTimer()
			if n := len(s.Merge(es)); n != len(es) {
				b.Fatalf("changed %d, want %d", n, len(es))
			}
		}
	})
	b.Run("unchanged", func(b *testing.B) {
		s := openTest(b, "local", nil)
		s.Merge(es)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if n := len(s.Merge(es)); n != 0 {
				b.Fatalf("changed %d, want 0", n)
			}
		}
	})
}

// BenchmarkLocalState encodes a 10k-entry store for push/pull.
func BenchmarkLocalState(b *testing.B) {
	s := openTest(b, "local", nil)
	s.Merge(benchEntries(10_000))
	r := NewReplicator(s, &fakeNode{net: &fakeNet{}})
	b.ReportAllocs()
	var size int
	for i := 0; i < b.N; i++ {
		size = len(r.LocalState(false))
	}
	b.ReportMetric(float64(size), "bytes/state")
}
