package store

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRemember(t *testing.T) {
	p := func(name string, wall int64) published {
		return published{key: key(name), version: Version{Wall: wall, Node: "a"}, msg: []byte(fmt.Sprintf("%s@%d", name, wall))}
	}
	names := func(ps []published) []string {
		var out []string
		for _, x := range ps {
			out = append(out, string(x.msg))
		}
		return out
	}
	tests := []struct {
		name   string
		recent []published
		add    published
		limit  int
		want   []string
	}{
		{"first", nil, p("x", 1), 3, []string{"x@1"}},
		{"appended newest last", []published{p("x", 1)}, p("y", 2), 3, []string{"x@1", "y@2"}},
		{"newer write of a key replaces the older", []published{p("x", 1), p("y", 2)}, p("x", 3), 3, []string{"y@2", "x@3"}},
		{"oldest dropped beyond max", []published{p("x", 1), p("y", 2), p("z", 3)}, p("w", 4), 3, []string{"y@2", "z@3", "w@4"}},
		{"max 1", []published{p("x", 1)}, p("y", 2), 1, []string{"y@2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := names(remember(tt.recent, tt.add, tt.limit))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("remember (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGreeting(t *testing.T) {
	t0 := time.UnixMilli(1_000_000)
	p := func(name string, wall int64, at time.Duration) published {
		return published{key: key(name), version: Version{Wall: wall, Node: "a"}, msg: []byte(name), at: t0.Add(at)}
	}
	// The store's versions: y was overwritten by another node since, z
	// is gone from the store (cannot happen, but must not be sent), d is
	// a tombstone (current: deletes spread too).
	store := map[Key]Version{
		key("x"): {Wall: 1, Node: "a"},
		key("y"): {Wall: 9, Node: "b"},
		key("d"): {Wall: 4, Node: "a"},
		key("w"): {Wall: 5, Node: "a"},
	}
	current := func(k Key) (Version, bool) { v, ok := store[k]; return v, ok }
	recent := []published{p("x", 1, 0), p("y", 2, time.Second), p("z", 3, 2*time.Second), p("d", 4, 3*time.Second), p("w", 5, 4*time.Second)}
	tests := []struct {
		name   string
		now    time.Duration
		window time.Duration
		want   []string
	}{
		{"all within the window, newest first, superseded and missing left out", 5 * time.Second, time.Minute, []string{"w", "d", "x"}},
		{"older than the window left out", 5 * time.Second, 2 * time.Second, []string{"w", "d"}},
		{"the edge of the window is in", 5 * time.Second, 5 * time.Second, []string{"w", "d", "x"}},
		{"everything too old", time.Hour, time.Minute, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, m := range greeting(recent, t0.Add(tt.now), tt.window, current) {
				got = append(got, string(m))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("greeting (-want +got):\n%s", diff)
			}
		})
	}
	if got := greeting(nil, t0, time.Minute, current); got != nil {
		t.Errorf("greeting of nothing = %q, want nil", got)
	}
}

// mailNode is a fakeNode that is also a Mailer, delivering at once.
type mailNode struct {
	*fakeNode
	mu     sync.Mutex
	mailed int
}

func (n *mailNode) SendBestEffortToAll(msg []byte) {
	n.mu.Lock()
	n.mailed++
	n.mu.Unlock()
	for _, p := range n.net.nodes {
		if p != n.fakeNode {
			p.r.NotifyMsg(append([]byte(nil), msg...))
		}
	}
}

func addMail(t *testing.T, fn *fakeNet, name string, clk *fakeClock) *mailNode {
	n := &mailNode{fakeNode: &fakeNode{net: fn, s: openTest(t, name, clk)}}
	n.r = NewReplicator(n.s, n)
	fn.mu.Lock()
	fn.nodes = append(fn.nodes, n.fakeNode)
	fn.mu.Unlock()
	return n
}

// A small write reaches every member at once by mail, before any gossip
// round; its broadcast is queued as well. A write of more than MailMax
// entries, or too large for a packet, is not mailed.
func TestReplicatorMailsSmallWrites(t *testing.T) {
	fn := &fakeNet{}
	a := addMail(t, fn, "a", nil)
	b := fn.add(t, "b")
	c := fn.add(t, "c")

	mustApply(t, a.r, []Put{{key("x"), json.RawMessage(`1`)}}, nil)
	if a.mailed != 1 {
		t.Fatalf("mailed %d messages, want 1", a.mailed)
	}
	for _, n := range []*fakeNode{b, c} {
		if _, ok := n.s.Get(key("x")); !ok {
			t.Errorf("%s: mailed entry not received", n.s.Node())
		}
	}
	if a.r.NumQueued() != 1 {
		t.Errorf("%d broadcasts queued, want 1 (mail does not replace gossip)", a.r.NumQueued())
	}
	// Deletes are mailed too.
	mustApply(t, a.r, nil, []Key{key("x")})
	if _, ok := b.s.Get(key("x")); ok {
		t.Errorf("mailed delete not received")
	}

	var puts []Put
	for i := range MailMax + 1 {
		puts = append(puts, Put{Key: key(fmt.Sprintf("many%d", i)), Value: json.RawMessage(`1`)})
	}
	before := a.mailed
	mustApply(t, a.r, puts, nil)
	if a.mailed != before {
		t.Errorf("a write of %d entries mailed %d messages, want none (gossip carries it)", len(puts), a.mailed-before)
	}
	big := json.RawMessage(`"` + strings.Repeat("x", 3000) + `"`)
	mustApply(t, a.r, []Put{{key("big"), big}}, nil)
	if a.mailed != before {
		t.Errorf("a large entry was mailed; it goes by SendToAll")
	}
	if fn.sent != 1 {
		t.Errorf("SendToAll called %d times, want 1 (the large entry)", fn.sent)
	}
}

// A member learned of after a write gets it from Greeting: the latest
// current writes within GreetWindow, not those another node overwrote
// since, nor bulk writes.
func TestReplicatorGreeting(t *testing.T) {
	clk := newClock(1_000_000)
	fn := &fakeNet{}
	a := addMail(t, fn, "a", clk)
	mustApply(t, a.r, []Put{{key("lease"), json.RawMessage(`{"subnet":"10.244.3.0/24"}`)}}, nil)
	mustApply(t, a.r, []Put{{key("other"), json.RawMessage(`1`)}}, nil)
	// Another node overwrites "other": a's write of it is not current.
	a.r.NotifyMsg(mustEncode(t, live(key("other"), `2`, 2_000_000, 0, "z")))
	var bulk []Put
	for i := range bulkThreshold + 1 {
		bulk = append(bulk, Put{Key: key(fmt.Sprintf("bulk%03d", i)), Value: json.RawMessage(`1`)})
	}
	mustApply(t, a.r, bulk, nil)

	// b was not a member when a wrote: it is greeted.
	b := fn.add(t, "b")
	msgs := a.r.Greeting()
	if len(msgs) != 1 {
		t.Fatalf("Greeting has %d messages, want 1 (the lease)", len(msgs))
	}
	for _, m := range msgs {
		b.r.NotifyMsg(m)
	}
	got, ok := b.s.Get(key("lease"))
	want, _ := a.s.Get(key("lease"))
	if !ok || !cmp.Equal(want, got, entryCmp) {
		t.Errorf("greeted member holds %+v, want %+v", got, want)
	}

	clk.Set(1_000_000 + GreetWindow.Milliseconds() + 1)
	if msgs := a.r.Greeting(); len(msgs) != 0 {
		t.Errorf("Greeting after GreetWindow has %d messages, want none", len(msgs))
	}
}

func mustEncode(t *testing.T, es ...Entry) []byte {
	t.Helper()
	msg, err := encodeEntries(es)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}
