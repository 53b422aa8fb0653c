package store

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
	"unicode/utf8"
)

// DefaultTombstoneTTL is how long a deletion is remembered when
// Options.TombstoneTTL is zero.
const DefaultTombstoneTTL = 48 * time.Hour

// FileName is the name of the store's file inside its directory.
const FileName = "store.json"

// MaxValueSize is the largest value Apply accepts. Values travel whole in
// gossip and push/pull messages (memberlist caps those at 20 MiB in all).
const MaxValueSize = 1 << 20

// ErrClosed is returned by Apply and Flush after Close.
var ErrClosed = errors.New("store is closed")

// Key names an object. Kind and Name are required; Namespace may be empty
// for cluster-scoped objects. All three must be valid UTF-8.
type Key struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// String returns "Kind/namespace/name" (the namespace may be empty).
func (k Key) String() string { return k.Kind + "/" + k.Namespace + "/" + k.Name }

// Compare orders keys by Kind, then Namespace, then Name.
func (k Key) Compare(o Key) int {
	if c := cmp.Compare(k.Kind, o.Kind); c != 0 {
		return c
	}
	if c := cmp.Compare(k.Namespace, o.Namespace); c != 0 {
		return c
	}
	return cmp.Compare(k.Name, o.Name)
}

// Validate reports why the key cannot be stored, or nil.
func (k Key) Validate() error {
	switch {
	case k.Kind == "":
		return fmt.Errorf("key %q: kind is empty", k.String())
	case k.Name == "":
		return fmt.Errorf("key %q: name is empty", k.String())
	case !utf8.ValidString(k.Kind) || !utf8.ValidString(k.Namespace) || !utf8.ValidString(k.Name):
		return fmt.Errorf("key %q: not valid UTF-8", k.String())
	}
	return nil
}

// Version is a hybrid logical clock timestamp: Wall is unix milliseconds,
// Logical orders events within one millisecond, Node breaks ties between
// nodes.
type Version struct {
	Wall    int64  `json:"wall"`
	Logical uint32 `json:"logical,omitempty"`
	Node    string `json:"node"`
}

// Less reports whether v is older than o: compared by Wall, then Logical,
// then Node.
func (v Version) Less(o Version) bool { return v.Compare(o) < 0 }

// Compare returns -1, 0 or +1 as v is older than, equal to or newer than o.
func (v Version) Compare(o Version) int {
	if c := cmp.Compare(v.Wall, o.Wall); c != 0 {
		return c
	}
	if c := cmp.Compare(v.Logical, o.Logical); c != 0 {
		return c
	}
	return cmp.Compare(v.Node, o.Node)
}

// String returns "wall.logical@node".
func (v Version) String() string { return fmt.Sprintf("%d.%d@%s", v.Wall, v.Logical, v.Node) }

// Entry is one object, or the tombstone of a deleted one, at a version.
// Value is nil when Deleted. Entries handed out by the store share their
// Value with it: treat it as read-only.
type Entry struct {
	Key     Key             `json:"key"`
	Value   json.RawMessage `json:"value,omitempty"`
	Version Version         `json:"version"`
	Deleted bool            `json:"deleted,omitempty"`
}

// Put writes Value (JSON) under Key.
type Put struct {
	Key   Key
	Value json.RawMessage
}

// Options tune a Store. The zero value is usable.
type Options struct {
	// TombstoneTTL is how long deletions are remembered (by their
	// Version.Wall) before Expire drops them. Default DefaultTombstoneTTL.
	TombstoneTTL time.Duration
	// Now is the wall clock; default time.Now. Tests inject it.
	Now func() time.Time
	// Logger receives warnings (failed persistence, dropped remote entries).
	// Default: discard.
	Logger *slog.Logger
	// MergeFlushDelay is how long merged remote entries may wait in memory
	// before the file is written; a burst of gossip is one write. Local
	// writes (Apply) are persisted at once. Default DefaultMergeFlushDelay;
	// a crash loses at most this much of what peers sent, and they send it
	// again at the next push/pull.
	MergeFlushDelay time.Duration
}

// DefaultMergeFlushDelay is the default Options.MergeFlushDelay.
const DefaultMergeFlushDelay = time.Second

// Store is a replicated object store: a map from Key to the newest Entry
// under last-writer-wins, persisted to one JSON file. It is safe for
// concurrent use.
type Store struct {
	node string
	path string
	opt  Options
	log  *slog.Logger

	mu      sync.RWMutex
	entries map[Key]Entry
	live    int
	gens    map[string]uint64 // kind -> changes so far
	gen     uint64            // changes so far, every kind
	clock   hlc
	subs    map[int]chan struct{}
	nextSub int
	dirty   bool // memory holds changes the file does not
	closed  bool
	flush   *time.Timer // pending write of merged entries
}

// Open loads dir/store.json or starts an empty store. dir is created with
// mode 0700 when missing. node is this node's name, stamped on the versions
// of local writes.
func Open(dir, node string, opt Options) (*Store, error) {
	if node == "" {
		return nil, errors.New("open store: node name is empty")
	}
	if opt.MergeFlushDelay <= 0 {
		opt.MergeFlushDelay = DefaultMergeFlushDelay
	}
	if opt.TombstoneTTL <= 0 {
		opt.TombstoneTTL = DefaultTombstoneTTL
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{
		node:    node,
		path:    filepath.Join(dir, FileName),
		opt:     opt,
		log:     opt.Logger.With("component", "store"),
		entries: make(map[Key]Entry),
		subs:    make(map[int]chan struct{}),
	}
	removeStaleTemps(dir)
	loaded, err := load(s.path)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	for _, e := range loaded {
		s.entries[e.Key] = e
		if !e.Deleted {
			s.live++
		}
		// Never issue a version at or below one already on disk, even when
		// the wall clock went backwards across a restart.
		s.clock.observe(e.Version)
	}
	return s, nil
}

// Node returns the name this store stamps on local writes.
func (s *Store) Node() string { return s.node }

// Path returns the file the store persists to.
func (s *Store) Path() string { return s.path }

// Apply writes puts and deletes dels atomically: either all of them take
// effect (and are persisted) or none does. Each changed key gets its own HLC
// tick. It returns the entries to replicate; a put whose value has the same
// bytes (after JSON compaction) as the live value, or a delete of a key that
// is missing or already deleted, produces no entry. Values are stored
// compacted (json.Compact). A key may appear only once in puts and dels
// together.
func (s *Store) Apply(puts []Put, dels []Key) ([]Entry, error) {
	return s.apply(puts, dels, false)
}

// ApplyReassert is Apply, except that every put gets a new version, also
// one whose value is unchanged: an operator's apply must win over older
// writes of other nodes still on their way, which would otherwise replace
// what was just applied.
func (s *Store) ApplyReassert(puts []Put, dels []Key) ([]Entry, error) {
	return s.apply(puts, dels, true)
}

func (s *Store) apply(puts []Put, dels []Key, reassert bool) ([]Entry, error) {
	seen := make(map[Key]bool, len(puts)+len(dels))
	values := make([]json.RawMessage, len(puts))
	for i, p := range puts {
		if err := p.Key.Validate(); err != nil {
			return nil, fmt.Errorf("apply: %w", err)
		}
		if seen[p.Key] {
			return nil, fmt.Errorf("apply: key %q given twice", p.Key.String())
		}
		seen[p.Key] = true
		if len(p.Value) == 0 {
			return nil, fmt.Errorf("apply: key %q: value is empty (delete it instead)", p.Key.String())
		}
		if len(p.Value) > MaxValueSize {
			return nil, fmt.Errorf("apply: key %q: value is %d bytes, more than the limit of %d", p.Key.String(), len(p.Value), MaxValueSize)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, p.Value); err != nil {
			return nil, fmt.Errorf("apply: key %q: value is not valid JSON: %w", p.Key.String(), err)
		}
		values[i] = buf.Bytes()
	}
	for _, k := range dels {
		if err := k.Validate(); err != nil {
			return nil, fmt.Errorf("apply: %w", err)
		}
		if seen[k] {
			return nil, fmt.Errorf("apply: key %q given twice", k.String())
		}
		seen[k] = true
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("apply: %w", ErrClosed)
	}
	var out []Entry
	for i, p := range puts {
		cur, ok := s.entries[p.Key]
		if ok && !cur.Deleted && !reassert && bytes.Equal(cur.Value, values[i]) {
			continue
		}
		out = append(out, Entry{Key: p.Key, Value: values[i], Version: s.tick()})
	}
	for _, k := range dels {
		cur, ok := s.entries[k]
		if !ok || cur.Deleted {
			continue
		}
		out = append(out, Entry{Key: k, Version: s.tick(), Deleted: true})
	}
	if len(out) == 0 {
		return nil, nil
	}

	type prev struct {
		e  Entry
		ok bool
	}
	undo := make([]prev, len(out))
	for i, e := range out {
		undo[i].e, undo[i].ok = s.entries[e.Key]
		s.set(e)
	}
	if err := s.persistLocked(); err != nil {
		for i := len(out) - 1; i >= 0; i-- {
			if undo[i].ok {
				s.set(undo[i].e)
			} else {
				s.remove(out[i].Key)
			}
		}
		return nil, fmt.Errorf("apply: %w", err)
	}
	s.kickLocked()
	return out, nil
}

// Merge folds remote entries in under last-writer-wins: an entry replaces
// the local one when its Version is newer (a tombstone is just an entry, so
// it beats older values and loses to newer ones). Equal versions with
// different content, which only a misbehaving node produces, are resolved
// deterministically (tombstone first, then the greater value bytes) so that
// merging stays commutative. Every valid remote version advances the local
// HLC, so later local writes are newer than anything seen. Invalid entries
// are skipped, as are tombstones already older than the TTL. Merge returns
// the entries that changed local state, sorted by key.
func (s *Store) Merge(remote []Entry) []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	horizon := s.opt.Now().Add(-s.opt.TombstoneTTL).UnixMilli()
	var changed map[Key]Entry
	for _, e := range remote {
		if e.Deleted {
			e.Value = nil
		}
		cur, ok := s.entries[e.Key]
		if ok && !wins(e, cur) {
			// Not newer than what we hold (the common case on push/pull):
			// the clock has seen a version at least as new already.
			continue
		}
		// Validate only what would be stored: json.Valid is the costly part.
		if err := validRemote(e); err != nil {
			s.log.Warn("dropping remote entry", "key", e.Key.String(), "version", e.Version.String(), "err", err)
			continue
		}
		s.clock.observe(e.Version)
		if !ok && e.Deleted && e.Version.Wall < horizon {
			continue // would be expired at once
		}
		s.set(e)
		if changed == nil {
			changed = make(map[Key]Entry)
		}
		changed[e.Key] = e
	}
	if len(changed) == 0 {
		return nil
	}
	s.dirty = true
	s.scheduleFlushLocked()
	s.kickLocked()
	out := make([]Entry, 0, len(changed))
	for _, e := range changed {
		out = append(out, e)
	}
	sortEntries(out)
	return out
}

// wins reports whether remote entry a replaces local entry b.
func wins(a, b Entry) bool {
	if c := a.Version.Compare(b.Version); c != 0 {
		return c > 0
	}
	if a.Deleted != b.Deleted {
		return a.Deleted
	}
	return bytes.Compare(a.Value, b.Value) > 0
}

func validRemote(e Entry) error {
	if err := e.Key.Validate(); err != nil {
		return err
	}
	if e.Version.Node == "" {
		return errors.New("version has no node")
	}
	if !e.Deleted && (len(e.Value) == 0 || !json.Valid(e.Value)) {
		return errors.New("value is not valid JSON")
	}
	return nil
}

// Get returns the live entry under k.
func (s *Store) Get(k Key) (Entry, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.entries[k]
	if !ok || e.Deleted {
		return Entry{}, false
	}
	return e, true
}

// Deleted reports whether the store remembers k as deleted (holds its
// tombstone). A key neither live nor deleted may be one whose write has
// not arrived yet.
func (s *Store) Deleted(k Key) bool {
	e, ok := s.lookup(k)
	return ok && e.Deleted
}

// Forgotten reports whether a write at v is older than every deletion the
// store still remembers: a key deleted after v may have left no
// tombstone.
func (s *Store) Forgotten(v Version) bool {
	return v.Wall < s.opt.Now().Add(-s.opt.TombstoneTTL).UnixMilli()
}

// lookup returns the entry under k, tombstone or not.
func (s *Store) lookup(k Key) (Entry, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.entries[k]
	return e, ok
}

// List returns the live entries of a kind, sorted by key. An empty
// namespace matches all namespaces; an empty kind matches all kinds.
func (s *Store) List(kind, namespace string) []Entry {
	s.mu.RLock()
	var out []Entry
	for k, e := range s.entries {
		if e.Deleted || (kind != "" && k.Kind != kind) || (namespace != "" && k.Namespace != namespace) {
			continue
		}
		out = append(out, e)
	}
	s.mu.RUnlock()
	sortEntries(out)
	return out
}

// All returns every entry including tombstones, sorted by key.
func (s *Store) All() []Entry {
	s.mu.RLock()
	out := make([]Entry, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, e)
	}
	s.mu.RUnlock()
	sortEntries(out)
	return out
}

// Len returns the number of live entries (tombstones not counted).
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.live
}

// Tombstones returns the number of remembered deletions.
func (s *Store) Tombstones() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.entries) - s.live
}

// Subscribe returns a channel of capacity 1 that receives a value (without
// blocking the store) after any change by Apply or Merge, and a cancel
// function. The channel is never closed; cancel may be called many times.
func (s *Store) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	id := s.nextSub
	s.nextSub++
	s.subs[id] = ch
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		delete(s.subs, id)
		s.mu.Unlock()
	}
}

func (s *Store) kickLocked() {
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Expire drops tombstones whose Version.Wall is older than the TTL and
// returns how many it dropped. Live entries never expire. It does not kick
// subscribers: the live view does not change.
func (s *Store) Expire() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0
	}
	horizon := s.opt.Now().Add(-s.opt.TombstoneTTL).UnixMilli()
	n := 0
	for k, e := range s.entries {
		if e.Deleted && e.Version.Wall < horizon {
			delete(s.entries, k)
			n++
		}
	}
	if n > 0 {
		if err := s.persistLocked(); err != nil {
			s.log.Warn("persisting expired tombstones failed; will retry on the next change or Flush", "path", s.path, "err", err)
		}
	}
	return n
}

// scheduleFlushLocked arranges for the file to be written after
// MergeFlushDelay, unless a write is pending already. Caller holds s.mu.
func (s *Store) scheduleFlushLocked() {
	if s.flush != nil {
		return
	}
	s.flush = time.AfterFunc(s.opt.MergeFlushDelay, func() {
		s.mu.Lock()
		s.flush = nil
		s.mu.Unlock()
		if err := s.Flush(); err != nil && !errors.Is(err, ErrClosed) {
			s.log.Warn("persisting merged entries failed; will retry on the next change or Flush", "path", s.path, "err", err)
		}
	})
}

// Flush writes the store to disk if memory holds changes the file lacks:
// merged remote entries waiting for their delayed write, or changes whose
// write failed.
func (s *Store) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("flush store: %w", ErrClosed)
	}
	if !s.dirty {
		return nil
	}
	if err := s.persistLocked(); err != nil {
		return fmt.Errorf("flush store: %w", err)
	}
	return nil
}

// Close flushes and closes the store. Later Apply calls fail, Merge and
// Expire do nothing, reads keep working. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.flush != nil {
		s.flush.Stop()
		s.flush = nil
	}
	if s.dirty {
		if err := s.persistLocked(); err != nil {
			return fmt.Errorf("close store: %w", err)
		}
	}
	return nil
}

// tick returns the next local version. Caller holds s.mu.
func (s *Store) tick() Version {
	w, l := s.clock.tick(s.opt.Now().UnixMilli())
	return Version{Wall: w, Logical: l, Node: s.node}
}

// Generation counts the changes to the entries of kind (every kind when
// kind is ""): it is the same in two calls only if no entry of the kind was
// written, merged or deleted in between. Derived state keyed by it can skip
// recomputation.
func (s *Store) Generation(kind string) uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if kind == "" {
		return s.gen
	}
	return s.gens[kind]
}

// changed bumps the generations of kind. Caller holds s.mu.
func (s *Store) changed(kind string) {
	if s.gens == nil {
		s.gens = map[string]uint64{}
	}
	s.gens[kind]++
	s.gen++
}

// set stores e, keeping the live count. Caller holds s.mu.
func (s *Store) set(e Entry) {
	s.changed(e.Key.Kind)
	if cur, ok := s.entries[e.Key]; ok && !cur.Deleted {
		s.live--
	}
	s.entries[e.Key] = e
	if !e.Deleted {
		s.live++
	}
}

// remove drops k, keeping the live count. Caller holds s.mu.
func (s *Store) remove(k Key) {
	if cur, ok := s.entries[k]; ok {
		s.changed(k.Kind)
		if !cur.Deleted {
			s.live--
		}
		delete(s.entries, k)
	}
}

func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int { return a.Key.Compare(b.Key) })
}
