package store

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// fakeClock is an injectable wall clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(ms int64) *fakeClock { return &fakeClock{t: time.UnixMilli(ms)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(ms int64) {
	c.mu.Lock()
	c.t = time.UnixMilli(ms)
	c.mu.Unlock()
}

func openTest(t testing.TB, node string, clk *fakeClock) *Store {
	t.Helper()
	return openAt(t, t.TempDir(), node, clk)
}

func openAt(t testing.TB, dir, node string, clk *fakeClock) *Store {
	t.Helper()
	opt := Options{}
	if clk != nil {
		opt.Now = clk.Now
	}
	s, err := Open(dir, node, opt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func key(name string) Key { return Key{Kind: "Pod", Namespace: "default", Name: name} }

func live(k Key, v string, wall int64, logical uint32, node string) Entry {
	return Entry{Key: k, Value: json.RawMessage(v), Version: Version{Wall: wall, Logical: logical, Node: node}}
}

func tomb(k Key, wall int64, logical uint32, node string) Entry {
	return Entry{Key: k, Version: Version{Wall: wall, Logical: logical, Node: node}, Deleted: true}
}

// entryCmp makes nil and empty Values equal (a decoded tombstone has nil).
var entryCmp = cmpopts.EquateEmpty()

func TestVersionLess(t *testing.T) {
	tests := []struct {
		name string
		a, b Version
		want bool
	}{
		{"older wall", Version{1, 9, "z"}, Version{2, 0, "a"}, true},
		{"newer wall", Version{2, 0, "a"}, Version{1, 9, "z"}, false},
		{"lower logical", Version{5, 1, "z"}, Version{5, 2, "a"}, true},
		{"node tie-break", Version{5, 1, "a"}, Version{5, 1, "b"}, true},
		{"node tie-break reversed", Version{5, 1, "b"}, Version{5, 1, "a"}, false},
		{"equal", Version{5, 1, "a"}, Version{5, 1, "a"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.Less(tt.b); got != tt.want {
				t.Errorf("%v.Less(%v) = %v, want %v", tt.a, tt.b, got, tt.want)
			}
		})
	}
}

func TestKeyString(t *testing.T) {
	if got, want := (Key{Kind: "Namespace", Name: "a"}).String(), "Namespace//a"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	if got, want := key("web").String(), "Pod/default/web"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}

func TestMergeLWW(t *testing.T) {
	k := key("web")
	// Tombstones at wall 100 and later are within the TTL, at 10 beyond it.
	now := DefaultTombstoneTTL.Milliseconds() + 50
	old := int64(10)
	tests := []struct {
		name        string
		local       []Entry // merged first
		remote      []Entry
		wantAll     []Entry
		wantChanged []Entry
	}{
		{
			name:        "new key",
			remote:      []Entry{live(k, `1`, 100, 0, "b")},
			wantAll:     []Entry{live(k, `1`, 100, 0, "b")},
			wantChanged: []Entry{live(k, `1`, 100, 0, "b")},
		},
		{
			name:        "concurrent writes: higher node wins",
			local:       []Entry{live(k, `"a"`, 100, 0, "a")},
			remote:      []Entry{live(k, `"b"`, 100, 0, "b")},
			wantAll:     []Entry{live(k, `"b"`, 100, 0, "b")},
			wantChanged: []Entry{live(k, `"b"`, 100, 0, "b")},
		},
		{
			name:    "concurrent writes: lower node loses",
			local:   []Entry{live(k, `"b"`, 100, 0, "b")},
			remote:  []Entry{live(k, `"a"`, 100, 0, "a")},
			wantAll: []Entry{live(k, `"b"`, 100, 0, "b")},
		},
		{
			name:        "newer wall wins over higher logical and node",
			local:       []Entry{live(k, `1`, 100, 50, "z")},
			remote:      []Entry{live(k, `2`, 101, 0, "a")},
			wantAll:     []Entry{live(k, `2`, 101, 0, "a")},
			wantChanged: []Entry{live(k, `2`, 101, 0, "a")},
		},
		{
			name:        "higher logical wins",
			local:       []Entry{live(k, `1`, 100, 1, "z")},
			remote:      []Entry{live(k, `2`, 100, 2, "a")},
			wantAll:     []Entry{live(k, `2`, 100, 2, "a")},
			wantChanged: []Entry{live(k, `2`, 100, 2, "a")},
		},
		{
			name:        "tombstone beats older write",
			local:       []Entry{live(k, `1`, 100, 0, "a")},
			remote:      []Entry{tomb(k, 101, 0, "b")},
			wantAll:     []Entry{tomb(k, 101, 0, "b")},
			wantChanged: []Entry{tomb(k, 101, 0, "b")},
		},
		{
			name:    "older write loses to tombstone",
			local:   []Entry{tomb(k, 101, 0, "b")},
			remote:  []Entry{live(k, `1`, 100, 0, "a")},
			wantAll: []Entry{tomb(k, 101, 0, "b")},
		},
		{
			name:        "newer write beats tombstone",
			local:       []Entry{tomb(k, 101, 0, "b")},
			remote:      []Entry{live(k, `2`, 102, 0, "a")},
			wantAll:     []Entry{live(k, `2`, 102, 0, "a")},
			wantChanged: []Entry{live(k, `2`, 102, 0, "a")},
		},
		{
			name:        "tombstone of unknown key is kept",
			remote:      []Entry{tomb(k, 101, 0, "b")},
			wantAll:     []Entry{tomb(k, 101, 0, "b")},
			wantChanged: []Entry{tomb(k, 101, 0, "b")},
		},
		{
			name:   "expired tombstone of unknown key is ignored",
			remote: []Entry{tomb(k, old, 0, "b")},
		},
		{
			name:        "expired tombstone still beats an older value",
			local:       []Entry{live(k, `1`, old-1, 0, "a")},
			remote:      []Entry{tomb(k, old, 0, "b")},
			wantAll:     []Entry{tomb(k, old, 0, "b")},
			wantChanged: []Entry{tomb(k, old, 0, "b")},
		},
		{
			name:    "idempotent",
			local:   []Entry{live(k, `1`, 100, 0, "a")},
			remote:  []Entry{live(k, `1`, 100, 0, "a")},
			wantAll: []Entry{live(k, `1`, 100, 0, "a")},
		},
		{
			name:        "same key twice in one batch: newest wins, reported once",
			remote:      []Entry{live(k, `1`, 100, 0, "a"), live(k, `3`, 102, 0, "a"), live(k, `2`, 101, 0, "a")},
			wantAll:     []Entry{live(k, `3`, 102, 0, "a")},
			wantChanged: []Entry{live(k, `3`, 102, 0, "a")},
		},
		{
			name:        "equal versions: tombstone wins",
			local:       []Entry{live(k, `1`, 100, 0, "a")},
			remote:      []Entry{tomb(k, 100, 0, "a")},
			wantAll:     []Entry{tomb(k, 100, 0, "a")},
			wantChanged: []Entry{tomb(k, 100, 0, "a")},
		},
		{
			name:        "tombstone value is dropped",
			remote:      []Entry{{Key: k, Value: json.RawMessage(`1`), Version: Version{100, 0, "a"}, Deleted: true}},
			wantAll:     []Entry{tomb(k, 100, 0, "a")},
			wantChanged: []Entry{tomb(k, 100, 0, "a")},
		},
		{
			name: "invalid entries are skipped",
			remote: []Entry{
				live(Key{Namespace: "x", Name: "n"}, `1`, 100, 0, "a"),
				live(Key{Kind: "Pod"}, `1`, 100, 0, "a"),
				live(k, `1`, 100, 0, ""),
				live(k, `{`, 100, 0, "a"),
				live(k, ``, 100, 0, "a"),
				live(Key{Kind: "Pod", Name: "\xff"}, `1`, 100, 0, "a"),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, "local", newClock(now))
			s.Merge(tt.local)
			changed := s.Merge(tt.remote)
			if d := cmp.Diff(tt.wantChanged, changed, entryCmp); d != "" {
				t.Errorf("Merge changed (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.wantAll, s.All(), entryCmp); d != "" {
				t.Errorf("All (-want +got):\n%s", d)
			}
		})
	}
}

// TestMergeOrderIndependent merges random sets of entries in random orders
// and batchings: every order must give the same state, the per-key maximum.
func TestMergeOrderIndependent(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := []Key{key("a"), key("b"), {Kind: "Namespace", Name: "a"}, {Kind: "SubnetLease", Name: "n1"}}
	nodes := []string{"n1", "n2", "n3"}
	const now = 1_000_000
	for trial := range 25 {
		var in []Entry
		for range 3 + rng.IntN(12) {
			v := Version{Wall: now + rng.Int64N(4), Logical: rng.Uint32N(3), Node: nodes[rng.IntN(len(nodes))]}
			k := keys[rng.IntN(len(keys))]
			if rng.IntN(3) == 0 {
				in = append(in, Entry{Key: k, Version: v, Deleted: true})
			} else {
				in = append(in, Entry{Key: k, Value: json.RawMessage(`"` + v.String() + `"`), Version: v})
			}
		}
		// The expected state: per key the entry that wins against all others.
		best := map[Key]Entry{}
		for _, e := range in {
			if cur, ok := best[e.Key]; !ok || wins(e, cur) {
				best[e.Key] = e
			}
		}
		var want []Entry
		for _, e := range best {
			want = append(want, e)
		}
		sortEntries(want)

		for order := range 4 {
			perm := append([]Entry(nil), in...)
			rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
			s := openTest(t, "local", newClock(now))
			for len(perm) > 0 { // random batches
				n := 1 + rng.IntN(len(perm))
				s.Merge(perm[:n])
				perm = perm[n:]
			}
			s.Merge(in) // idempotent on top
			if d := cmp.Diff(want, s.All(), entryCmp); d != "" {
				t.Fatalf("trial %d order %d (-want +got):\n%s", trial, order, d)
			}
		}
	}
}

func TestMergeCommutativeAB(t *testing.T) {
	k := key("web")
	a := []Entry{live(k, `"a"`, 100, 3, "a"), tomb(key("gone"), 90, 0, "a")}
	b := []Entry{live(k, `"b"`, 100, 3, "b"), live(key("gone"), `1`, 80, 0, "b")}
	s1 := openTest(t, "x", newClock(100))
	s1.Merge(a)
	s1.Merge(b)
	s2 := openTest(t, "y", newClock(100))
	s2.Merge(b)
	s2.Merge(a)
	if d := cmp.Diff(s1.All(), s2.All(), entryCmp); d != "" {
		t.Errorf("A then B vs B then A (-ab +ba):\n%s", d)
	}
}

func TestHLCMonotonic(t *testing.T) {
	clk := newClock(1000)
	dir := t.TempDir()
	s := openAt(t, dir, "a", clk)
	write := func(v string) Version {
		t.Helper()
		es, err := s.Apply([]Put{{Key: key("x"), Value: json.RawMessage(v)}}, nil)
		if err != nil || len(es) != 1 {
			t.Fatalf("Apply: %v, %d entries", err, len(es))
		}
		return es[0].Version
	}
	var got []Version
	got = append(got, write(`1`))
	clk.Set(500) // clock goes backwards
	got = append(got, write(`2`))
	got = append(got, write(`3`))
	clk.Set(1000)
	got = append(got, write(`4`))
	clk.Set(2000)
	got = append(got, write(`5`))
	// A remote write from a node whose clock is far ahead.
	s.Merge([]Entry{live(key("y"), `1`, 5000, 7, "b")})
	got = append(got, write(`6`))
	want := []Version{
		{1000, 0, "a"}, {1000, 1, "a"}, {1000, 2, "a"}, {1000, 3, "a"}, {2000, 0, "a"}, {5000, 8, "a"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("versions (-want +got):\n%s", d)
	}

	// After a restart with the clock far behind, writes are still newer.
	s.Close()
	clk.Set(10)
	s2 := openAt(t, dir, "a", clk)
	es, err := s2.Apply([]Put{{Key: key("x"), Value: json.RawMessage(`7`)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w := (Version{5000, 9, "a"}); es[0].Version != w {
		t.Errorf("version after restart = %v, want %v", es[0].Version, w)
	}
}

func TestHLCLogicalOverflow(t *testing.T) {
	c := hlc{wall: 10, logical: math.MaxUint32 - 1}
	w, l := c.tick(5)
	if w != 10 || l != math.MaxUint32 {
		t.Fatalf("tick = %d.%d", w, l)
	}
	w, l = c.tick(5)
	if w != 11 || l != 0 {
		t.Fatalf("tick after overflow = %d.%d, want 11.0", w, l)
	}
}

func TestApply(t *testing.T) {
	k1, k2 := key("a"), key("b")
	const now = 1000
	// Every case starts from a store holding k1=1 written at 1000.0.
	tests := []struct {
		name    string
		puts    []Put
		dels    []Key
		wantErr string
		want    []Entry // returned
		wantAll []Entry // after
	}{
		{
			name:    "put new and overwrite",
			puts:    []Put{{k1, json.RawMessage(`2`)}, {k2, json.RawMessage(`{"x": 1}`)}},
			want:    []Entry{live(k1, `2`, now, 1, "n"), live(k2, `{"x":1}`, now, 2, "n")},
			wantAll: []Entry{live(k1, `2`, now, 1, "n"), live(k2, `{"x":1}`, now, 2, "n")},
		},
		{
			name:    "same bytes produce no entry",
			puts:    []Put{{k1, json.RawMessage(` 1 `)}},
			wantAll: []Entry{live(k1, `1`, now, 0, "n")},
		},
		{
			name:    "delete",
			dels:    []Key{k1},
			want:    []Entry{tomb(k1, now, 1, "n")},
			wantAll: []Entry{tomb(k1, now, 1, "n")},
		},
		{
			name:    "delete of a missing key produces nothing",
			dels:    []Key{k2},
			wantAll: []Entry{live(k1, `1`, now, 0, "n")},
		},
		{
			name:    "empty kind",
			puts:    []Put{{k2, json.RawMessage(`2`)}, {Key{Name: "x"}, json.RawMessage(`1`)}},
			wantErr: "kind is empty",
		},
		{
			name:    "empty name",
			puts:    []Put{{k2, json.RawMessage(`2`)}},
			dels:    []Key{k1, {Kind: "Pod"}},
			wantErr: "name is empty",
		},
		{
			name:    "invalid JSON",
			puts:    []Put{{k2, json.RawMessage(`2`)}, {key("c"), json.RawMessage(`{`)}},
			wantErr: "not valid JSON",
		},
		{
			name:    "empty value",
			puts:    []Put{{k2, nil}},
			wantErr: "value is empty",
		},
		{
			name:    "value too large",
			puts:    []Put{{k2, json.RawMessage(`"` + strings.Repeat("x", MaxValueSize) + `"`)}},
			wantErr: "more than the limit",
		},
		{
			name:    "key twice",
			puts:    []Put{{k2, json.RawMessage(`2`)}},
			dels:    []Key{k2},
			wantErr: "given twice",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, "n", newClock(now))
			if _, err := s.Apply([]Put{{k1, json.RawMessage(`1`)}}, nil); err != nil {
				t.Fatal(err)
			}
			before, err := os.ReadFile(s.Path())
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Apply(tt.puts, tt.dels)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Apply error = %v, want it to contain %q", err, tt.wantErr)
				}
				tt.wantAll = []Entry{live(k1, `1`, now, 0, "n")}
			} else if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if d := cmp.Diff(tt.want, got, entryCmp); d != "" {
				t.Errorf("Apply returned (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.wantAll, s.All(), entryCmp); d != "" {
				t.Errorf("All (-want +got):\n%s", d)
			}
			if tt.wantErr != "" {
				after, _ := os.ReadFile(s.Path())
				if string(after) != string(before) {
					t.Errorf("file changed by a failed Apply")
				}
			}
		})
	}
}

func TestApplyRollsBackWhenPersistFails(t *testing.T) {
	s := openTest(t, "n", newClock(1000))
	if _, err := s.Apply([]Put{{key("a"), json.RawMessage(`1`)}}, nil); err != nil {
		t.Fatal(err)
	}
	before := s.All()
	// A directory where the file should be makes the rename fail.
	if err := os.Remove(s.Path()); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(s.Path(), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := s.Apply([]Put{{key("a"), json.RawMessage(`2`)}, {key("b"), json.RawMessage(`3`)}}, nil)
	if err == nil {
		t.Fatal("Apply succeeded although the file cannot be written")
	}
	if d := cmp.Diff(before, s.All(), entryCmp); d != "" {
		t.Errorf("state after failed Apply (-want +got):\n%s", d)
	}
	if s.Len() != 1 {
		t.Errorf("Len = %d, want 1", s.Len())
	}
	// Merge keeps what it learned and Flush retries once the path is free.
	s.Merge([]Entry{live(key("c"), `1`, 5, 0, "r")})
	if err := s.Flush(); err == nil {
		t.Fatal("Flush succeeded although the file cannot be written")
	}
	os.Remove(s.Path())
	if err := s.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	s.Close()
	s2 := openAt(t, filepath.Dir(s.Path()), "n", nil)
	if d := cmp.Diff(s.All(), s2.All(), entryCmp); d != "" {
		t.Errorf("reloaded (-want +got):\n%s", d)
	}
}

func TestPersistenceRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "store")
	clk := newClock(1000)
	s := openAt(t, dir, "n1", clk)
	if _, err := s.Apply([]Put{
		{key("a"), json.RawMessage(`{"spec":{"x":1}}`)},
		{key("b"), json.RawMessage(`"b"`)},
		{Key{Kind: "Namespace", Name: "kube-system"}, json.RawMessage(`null`)},
	}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(nil, []Key{key("b")}); err != nil {
		t.Fatal(err)
	}
	s.Merge([]Entry{live(key("r"), `[1,2]`, 900, 4, "n2"), tomb(key("t"), 950, 0, "n2")})
	want := s.All()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply([]Put{{key("z"), json.RawMessage(`1`)}}, nil); err == nil {
		t.Error("Apply after Close succeeded")
	}

	for path, mode := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, s.Path(): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("mode of %s = %v, want %v", path, fi.Mode(), mode)
		}
	}

	s2 := openAt(t, dir, "n1", clk)
	if d := cmp.Diff(want, s2.All(), entryCmp); d != "" {
		t.Errorf("reloaded (-want +got):\n%s", d)
	}
	if s2.Len() != 3 || s2.Tombstones() != 2 {
		t.Errorf("Len, Tombstones = %d, %d; want 3, 2", s2.Len(), s2.Tombstones())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("dir holds %d files, want only %s", len(ents), FileName)
	}
}

func TestOpenCorrupt(t *testing.T) {
	for name, content := range map[string]string{
		"garbage":    "not json\n",
		"empty":      "",
		"truncated":  `{"format":1,"node":"n","entries":[{"key":{"kind":"Pod","name":"a"},"value":1,"version":{"wall":1,"node":"n"}}`,
		"bad entry":  `{"format":1,"node":"n","entries":[{"key":{"kind":"","name":"a"},"value":1,"version":{"wall":1,"node":"n"}}]}`,
		"bad format": `{"format":7,"node":"n","entries":[]}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(dir, "n", Options{})
			if err == nil {
				t.Fatal("Open succeeded on a corrupt file")
			}
			msg := err.Error()
			if !strings.Contains(msg, path) || !strings.Contains(msg, "move it aside") || strings.Contains(msg, "\n") {
				t.Errorf("error %q should be one line naming %s and what to do", msg, path)
			}
		})
	}
}

func TestOpenRemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, tempPrefix+"123")
	if err := os.WriteFile(stale, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	openAt(t, dir, "n", nil)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale temp file still there: %v", err)
	}
}

func TestExpire(t *testing.T) {
	now := int64(1_000_000_000_000)
	clk := newClock(now)
	dir := t.TempDir()
	s := openAt(t, dir, "n", clk)
	ttl := DefaultTombstoneTTL.Milliseconds()
	s.Merge([]Entry{
		tomb(key("old"), now-ttl+1, 0, "r"),
		tomb(key("fresh"), now-1, 0, "r"),
		live(key("ancient"), `1`, now-10*ttl, 0, "r"),
	})
	if n := s.Expire(); n != 0 {
		t.Fatalf("Expire = %d before the TTL passed", n)
	}
	clk.Set(now + 2)
	if n := s.Expire(); n != 1 {
		t.Fatalf("Expire = %d, want 1", n)
	}
	want := []Entry{live(key("ancient"), `1`, now-10*ttl, 0, "r"), tomb(key("fresh"), now-1, 0, "r")}
	if d := cmp.Diff(want, s.All(), entryCmp); d != "" {
		t.Errorf("All after Expire (-want +got):\n%s", d)
	}
	s.Close()
	s2 := openAt(t, dir, "n", clk)
	if d := cmp.Diff(want, s2.All(), entryCmp); d != "" {
		t.Errorf("reloaded after Expire (-want +got):\n%s", d)
	}
}

func TestExpireCustomTTL(t *testing.T) {
	clk := newClock(10_000)
	s, err := Open(t.TempDir(), "n", Options{TombstoneTTL: time.Second, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Merge([]Entry{live(key("a"), `1`, 9_500, 0, "r")})
	if _, err := s.Apply(nil, []Key{key("a")}); err != nil {
		t.Fatal(err)
	}
	clk.Set(11_001)
	if n := s.Expire(); n != 1 || s.Tombstones() != 0 {
		t.Errorf("Expire = %d, tombstones left %d; want 1, 0", n, s.Tombstones())
	}
}

func TestSubscribe(t *testing.T) {
	s := openTest(t, "n", newClock(1000))
	ch1, cancel1 := s.Subscribe()
	ch2, cancel2 := s.Subscribe()
	defer cancel2()
	kicked := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	put := func(v string) {
		t.Helper()
		if _, err := s.Apply([]Put{{key("a"), json.RawMessage(v)}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	put(`1`)
	put(`2`) // a second change does not block: the channel holds one kick
	if !kicked(ch1) || !kicked(ch2) {
		t.Fatal("subscribers not kicked by Apply")
	}
	if kicked(ch1) || kicked(ch2) {
		t.Fatal("more than one kick pending")
	}
	put(`2`) // no change
	if kicked(ch1) {
		t.Fatal("kicked without a change")
	}
	s.Merge([]Entry{live(key("b"), `1`, 1, 0, "r")})
	if !kicked(ch1) || !kicked(ch2) {
		t.Fatal("subscribers not kicked by Merge")
	}
	s.Merge([]Entry{live(key("b"), `1`, 1, 0, "r")}) // no change
	if kicked(ch1) {
		t.Fatal("kicked by a no-op Merge")
	}
	cancel1()
	cancel1()
	put(`3`)
	if kicked(ch1) {
		t.Fatal("cancelled subscriber kicked")
	}
	if !kicked(ch2) {
		t.Fatal("remaining subscriber not kicked")
	}
}

func TestGetList(t *testing.T) {
	s := openTest(t, "n", newClock(1000))
	if _, err := s.Apply([]Put{
		{Key{"Pod", "kube-system", "dns"}, json.RawMessage(`1`)},
		{Key{"Pod", "default", "web"}, json.RawMessage(`2`)},
		{Key{"Pod", "default", "api"}, json.RawMessage(`3`)},
		{Key{"Namespace", "", "default"}, json.RawMessage(`4`)},
		{Key{"Pod", "default", "gone"}, json.RawMessage(`5`)},
	}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(nil, []Key{{"Pod", "default", "gone"}}); err != nil {
		t.Fatal(err)
	}
	names := func(es []Entry) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.Key.String())
		}
		return out
	}
	tests := []struct {
		kind, ns string
		want     []string
	}{
		{"Pod", "", []string{"Pod/default/api", "Pod/default/web", "Pod/kube-system/dns"}},
		{"Pod", "default", []string{"Pod/default/api", "Pod/default/web"}},
		{"Namespace", "", []string{"Namespace//default"}},
		{"Service", "", nil},
		{"", "", []string{"Namespace//default", "Pod/default/api", "Pod/default/web", "Pod/kube-system/dns"}},
	}
	for _, tt := range tests {
		if d := cmp.Diff(tt.want, names(s.List(tt.kind, tt.ns))); d != "" {
			t.Errorf("List(%q, %q) (-want +got):\n%s", tt.kind, tt.ns, d)
		}
	}
	if _, ok := s.Get(Key{"Pod", "default", "gone"}); ok {
		t.Error("Get returned a tombstone")
	}
	if e, ok := s.Get(Key{"Pod", "default", "web"}); !ok || string(e.Value) != `2` {
		t.Errorf("Get = %v, %v", e, ok)
	}
	if s.Len() != 4 || len(s.All()) != 5 {
		t.Errorf("Len = %d, len(All) = %d; want 4, 5", s.Len(), len(s.All()))
	}
}

func TestMergedEntriesPersistAfterDelay(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, "a", Options{MergeFlushDelay: 20 * time.Millisecond, Now: func() time.Time { return time.UnixMilli(1000) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.Merge([]Entry{live(key("x"), `1`, 900, 0, "b"), live(key("y"), `2`, 901, 0, "b")})
	path := filepath.Join(dir, FileName)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), `"x"`) && strings.Contains(string(b), `"y"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("merged entries not written to %s within 5 s; file: %s", path, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMergedEntriesPersistOnClose(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, "a", Options{MergeFlushDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s.Merge([]Entry{live(key("x"), `1`, 900, 0, "b")})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := Open(dir, "a", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, ok := r.Get(key("x")); !ok {
		t.Error("entry merged before Close is missing after reopening")
	}
}

// TestGeneration: a kind's generation moves exactly when one of its entries
// changes (local write, winning merge, delete), and not for other kinds or
// losing merges.
func TestGeneration(t *testing.T) {
	clk := newClock(1000)
	s := openTest(t, "a", clk)
	svc := Key{Kind: "Service", Namespace: "default", Name: "web"}
	g0, s0, all0 := s.Generation("Pod"), s.Generation("Service"), s.Generation("")
	if _, err := s.Apply([]Put{{Key: key("p1"), Value: json.RawMessage(`{"a":1}`)}}, nil); err != nil {
		t.Fatal(err)
	}
	g1 := s.Generation("Pod")
	if g1 == g0 || s.Generation("Service") != s0 || s.Generation("") == all0 {
		t.Fatalf("after a Pod write: Pod %d->%d, Service %d->%d, all %d->%d; want Pod and all to move, Service not",
			g0, g1, s0, s.Generation("Service"), all0, s.Generation(""))
	}
	// A losing merge (older version) changes nothing.
	s.Merge([]Entry{live(key("p1"), `{"a":0}`, 1, 0, "b")})
	if g := s.Generation("Pod"); g != g1 {
		t.Errorf("a losing merge moved the Pod generation %d -> %d", g1, g)
	}
	// A winning merge of another kind moves only that kind.
	s.Merge([]Entry{live(svc, `{}`, 5000, 0, "b")})
	if s.Generation("Pod") != g1 || s.Generation("Service") == s0 {
		t.Errorf("a Service merge: Pod %d->%d, Service %d->%d", g1, s.Generation("Pod"), s0, s.Generation("Service"))
	}
	// A delete moves it.
	if _, err := s.Apply(nil, []Key{key("p1")}); err != nil {
		t.Fatal(err)
	}
	if s.Generation("Pod") == g1 {
		t.Error("deleting a Pod did not move the Pod generation")
	}
}

// TestApplyReassert: Apply skips an unchanged put, ApplyReassert writes a
// newer version of the same value.
func TestApplyReassert(t *testing.T) {
	s := openTest(t, "a", nil)
	put := func(reassert bool) []Entry {
		t.Helper()
		apply := s.Apply
		if reassert {
			apply = s.ApplyReassert
		}
		es, err := apply([]Put{{Key: key("x"), Value: json.RawMessage(`{"v":1}`)}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return es
	}
	first := put(false)
	if got := put(false); len(got) != 0 {
		t.Errorf("an unchanged put wrote %d entries, want 0", len(got))
	}
	again := put(true)
	if len(again) != 1 || !first[0].Version.Less(again[0].Version) {
		t.Fatalf("a reasserted put wrote %+v, want one entry newer than %s", again, first[0].Version)
	}
}
