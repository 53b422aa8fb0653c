package cluster

import (
	"sync"

	"github.com/netloom/netloom/mesh/store"
)

// decoded keeps the decoded objects of one store kind from call to call:
// while the kind's generation stays, list returns the same slice without
// reading the store; when it moves, only entries whose version changed are
// decoded again, and unchanged ones keep their value (the same pointer for
// pointer types, which the compilers use to skip work). Safe for
// concurrent use.
type decoded[T any] struct {
	kind   string
	decode func(store.Entry) (T, bool)

	mu    sync.Mutex
	gen   uint64
	valid bool
	items []T
	by    map[store.Key]decodedEntry[T]
}

type decodedEntry[T any] struct {
	ver store.Version
	v   T
	ok  bool
}

func newDecoded[T any](kind string, decode func(store.Entry) (T, bool)) *decoded[T] {
	return &decoded[T]{kind: kind, decode: decode, by: map[store.Key]decodedEntry[T]{}}
}

// list returns the live objects of the kind that decode, in key order, and
// the generation they are of. The slice is shared: read only.
func (d *decoded[T]) list(s *store.Store) ([]T, uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	// The generation is read before the entries: a change in between
	// makes the next call read again, it is never missed.
	gen := s.Generation(d.kind)
	if d.valid && gen == d.gen {
		return d.items, gen
	}
	entries := s.List(d.kind, "")
	by := make(map[store.Key]decodedEntry[T], len(entries))
	items := make([]T, 0, len(entries))
	for _, e := range entries {
		de, ok := d.by[e.Key]
		if !ok || de.ver != e.Version {
			de.ver = e.Version
			de.v, de.ok = d.decode(e)
		}
		by[e.Key] = de
		if de.ok {
			items = append(items, de.v)
		}
	}
	d.by, d.items, d.gen, d.valid = by, items, gen, true
	return items, gen
}

// get returns the decoded live object under k (decoding it if the cache
// does not hold its current version).
func (d *decoded[T]) get(s *store.Store, k store.Key) (T, bool) {
	var zero T
	e, ok := s.Get(k)
	if !ok {
		return zero, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if de, ok := d.by[k]; ok && de.ver == e.Version {
		return de.v, de.ok
	}
	return d.decode(e)
}
