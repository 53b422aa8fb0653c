package store

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeNet connects Replicators in memory. SendToAll delivers at once;
// gossip is driven by the test through GetBroadcasts.
type fakeNet struct {
	mu    sync.Mutex
	nodes []*fakeNode
	sent  int // SendToAll calls
}

type fakeNode struct {
	net *fakeNet
	s   *Store
	r   *Replicator
}

func (n *fakeNode) NumMembers() int {
	n.net.mu.Lock()
	defer n.net.mu.Unlock()
	return len(n.net.nodes)
}

func (n *fakeNode) SendToAll(msg []byte) {
	n.net.mu.Lock()
	n.net.sent++
	peers := append([]*fakeNode(nil), n.net.nodes...)
	n.net.mu.Unlock()
	for _, p := range peers {
		if p != n {
			p.r.NotifyMsg(bytes.Clone(msg))
		}
	}
}

func (fn *fakeNet) add(t *testing.T, name string) *fakeNode {
	n := &fakeNode{net: fn, s: openTest(t, name, nil)}
	n.r = NewReplicator(n.s, n)
	fn.mu.Lock()
	fn.nodes = append(fn.nodes, n)
	fn.mu.Unlock()
	return n
}

// gossipRound lets every node send its broadcasts to one random peer, the
// least helpful fan-out, so that spreading relies on re-broadcasts.
func (fn *fakeNet) gossipRound(rng *rand.Rand) (sent int) {
	for i, n := range fn.nodes {
		for _, msg := range n.r.GetBroadcasts(3, 1400) {
			j := rng.IntN(len(fn.nodes) - 1)
			if j >= i {
				j++
			}
			fn.nodes[j].r.NotifyMsg(bytes.Clone(msg))
			sent++
		}
	}
	return sent
}

func (fn *fakeNet) converged() bool {
	want := fn.nodes[0].s.All()
	for _, n := range fn.nodes[1:] {
		if !cmp.Equal(want, n.s.All(), entryCmp) {
			return false
		}
	}
	return true
}

func mustApply(t *testing.T, r *Replicator, puts []Put, dels []Key) []Entry {
	t.Helper()
	es, err := r.Apply(puts, dels)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return es
}

func TestReplicatorConverges(t *testing.T) {
	fn := &fakeNet{}
	a, b, c := fn.add(t, "a"), fn.add(t, "b"), fn.add(t, "c")
	rng := rand.New(rand.NewPCG(3, 4))

	big := json.RawMessage(`"` + strings.Repeat("x", 3000) + `"`)
	mustApply(t, a.r, []Put{{key("a1"), json.RawMessage(`1`)}, {key("shared"), json.RawMessage(`"a"`)}, {key("big"), big}}, nil)
	mustApply(t, b.r, []Put{{key("b1"), json.RawMessage(`1`)}, {key("shared"), json.RawMessage(`"b"`)}}, nil)
	mustApply(t, c.r, []Put{{key("c1"), json.RawMessage(`1`)}}, nil)
	if fn.sent != 1 {
		t.Errorf("SendToAll called %d times, want 1 (the big entry)", fn.sent)
	}
	if e, ok := c.s.Get(key("big")); !ok || !bytes.Equal(e.Value, big) {
		t.Errorf("big entry not delivered by SendToAll")
	}

	round := 0
	for ; round < 100 && !fn.converged(); round++ {
		fn.gossipRound(rng)
	}
	if !fn.converged() {
		t.Fatalf("not converged after %d rounds", round)
	}
	// Deletes and updates spread the same way.
	mustApply(t, c.r, []Put{{key("a1"), json.RawMessage(`2`)}}, []Key{key("b1")})
	for round = 0; round < 100 && !fn.converged(); round++ {
		fn.gossipRound(rng)
	}
	if !fn.converged() {
		t.Fatalf("update not converged after %d rounds", round)
	}
	for _, n := range fn.nodes {
		got := map[string]string{}
		for _, e := range n.s.List("Pod", "") {
			if e.Key.Name != "big" {
				got[e.Key.Name] = string(e.Value)
			}
		}
		want := map[string]string{"a1": "2", "c1": "1", "shared": `"b"`}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("node %s (-want +got):\n%s", n.s.Node(), d)
		}
	}
	// The queues drain: every broadcast has a transmit limit.
	for round = 0; round < 100; round++ {
		if fn.gossipRound(rng) == 0 {
			break
		}
	}
	for _, n := range fn.nodes {
		if q := n.r.NumQueued(); q != 0 {
			t.Errorf("node %s still has %d queued broadcasts", n.s.Node(), q)
		}
	}
}

func TestReplicatorNewerBroadcastReplacesOlder(t *testing.T) {
	fn := &fakeNet{}
	a := fn.add(t, "a")
	fn.add(t, "b")
	mustApply(t, a.r, []Put{{key("x"), json.RawMessage(`1`)}}, nil)
	old := mustApply(t, a.r, []Put{{key("x"), json.RawMessage(`2`)}}, nil)
	newest := mustApply(t, a.r, []Put{{key("x"), json.RawMessage(`3`)}}, nil)
	// Republishing a stale entry must not replace the queued newer one.
	a.r.Publish(old)
	if q := a.r.NumQueued(); q != 1 {
		t.Fatalf("NumQueued = %d, want 1", q)
	}
	msgs := a.r.GetBroadcasts(3, 1400)
	if len(msgs) != 1 {
		t.Fatalf("got %d broadcasts, want 1", len(msgs))
	}
	var got []Entry
	if err := json.Unmarshal(msgs[0][1:], &got); err != nil || msgs[0][0] != TagEntries {
		t.Fatalf("bad message %q: %v", msgs[0], err)
	}
	if d := cmp.Diff(newest, got, entryCmp); d != "" {
		t.Errorf("broadcast (-want +got):\n%s", d)
	}
}

func TestReplicatorRequeuesOnlyChanges(t *testing.T) {
	fn := &fakeNet{}
	a := fn.add(t, "a")
	msg, err := encodeEntries([]Entry{live(key("x"), `1`, 100, 0, "b")})
	if err != nil {
		t.Fatal(err)
	}
	a.r.NotifyMsg(msg)
	if q := a.r.NumQueued(); q != 1 {
		t.Fatalf("NumQueued after a changing message = %d, want 1", q)
	}
	a.r.GetBroadcasts(3, 1400) // transmit limit with 1 member: 3*ceil(log10(2)) = 3
	a.r.GetBroadcasts(3, 1400)
	a.r.GetBroadcasts(3, 1400)
	if q := a.r.NumQueued(); q != 0 {
		t.Fatalf("NumQueued after transmits = %d, want 0", q)
	}
	a.r.NotifyMsg(msg)
	if q := a.r.NumQueued(); q != 0 {
		t.Errorf("NumQueued after a duplicate = %d, want 0", q)
	}
}

func TestReplicatorGarbage(t *testing.T) {
	fn := &fakeNet{}
	a := fn.add(t, "a")
	mustApply(t, a.r, []Put{{key("x"), json.RawMessage(`1`)}}, nil)
	want := a.s.All()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"not":"a list"}`))
	zw.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	inputs := [][]byte{
		nil,
		{},
		{TagEntries},
		[]byte("E{"),
		[]byte("Enull"),
		[]byte(`E[{"key":{"kind":"","name":"x"},"value":1,"version":{"wall":1,"node":"b"}}]`),
		[]byte(`E[{"key":{"kind":"Pod","name":"x"},"version":{"wall":1,"node":"b"}}]`),
		[]byte(`E[{"key":5}]`),
		[]byte("Zwhat"),
		{TagState},
		append([]byte{TagState}, gz.Bytes()...),
		append([]byte{TagState}, gz.Bytes()[:10]...),
	}
	for range 200 {
		b := make([]byte, rng.IntN(64))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		inputs = append(inputs, b, append([]byte{TagEntries}, b...), append([]byte{TagState}, b...))
	}
	for _, in := range inputs {
		a.r.NotifyMsg(in)
		a.r.MergeRemoteState(in, false)
	}
	if d := cmp.Diff(want, a.s.All(), entryCmp); d != "" {
		t.Errorf("garbage changed the store (-want +got):\n%s", d)
	}
}

func TestReplicatorPushPull(t *testing.T) {
	fn := &fakeNet{}
	a, b := fn.add(t, "a"), fn.add(t, "b")
	var puts []Put
	for i := range 500 {
		puts = append(puts, Put{Key{Kind: "Pod", Namespace: fmt.Sprint("ns", i%7), Name: fmt.Sprint("pod-", i)}, json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
	}
	mustApply(t, a.r, puts, nil)
	mustApply(t, a.r, nil, []Key{puts[0].Key, puts[1].Key})
	mustApply(t, b.r, []Put{{key("only-b"), json.RawMessage(`1`)}}, nil)

	queuedB := b.r.NumQueued()
	// What memberlist does on push/pull: both sides exchange LocalState.
	sa, sb := a.r.LocalState(false), b.r.LocalState(false)
	a.r.MergeRemoteState(sb, false)
	b.r.MergeRemoteState(sa, true)
	if d := cmp.Diff(a.s.All(), b.s.All(), entryCmp); d != "" {
		t.Errorf("after push/pull (-a +b):\n%s", d)
	}
	if b.s.Tombstones() != 2 || b.s.Len() != 499 {
		t.Errorf("b: Len %d, Tombstones %d; want 499, 2", b.s.Len(), b.s.Tombstones())
	}
	if q := b.r.NumQueued(); q != queuedB {
		t.Errorf("push/pull queued %d broadcasts, want none", q-queuedB)
	}
}

func TestReplicatorOnRemoteSeesOnlyChanges(t *testing.T) {
	fn := &fakeNet{}
	a := fn.add(t, "a")
	var got [][]Entry
	a.r.OnRemote = func(changed []Entry) { got = append(got, changed) }
	msg, err := encodeEntries([]Entry{live(key("x"), `1`, 100, 0, "b")})
	if err != nil {
		t.Fatal(err)
	}
	a.r.NotifyMsg(msg)
	a.r.NotifyMsg(msg) // a duplicate changes nothing and is not reported
	if len(got) != 1 || len(got[0]) != 1 || got[0][0].Key != key("x") || got[0][0].Version.Node != "b" {
		t.Fatalf("OnRemote calls = %+v, want one call with x from b", got)
	}
}

func TestReplicatorBulkPublishGoesReliably(t *testing.T) {
	fn := &fakeNet{}
	a := fn.add(t, "a")
	b := fn.add(t, "b")
	var puts []Put
	for i := 0; i < 2500; i++ {
		puts = append(puts, Put{Key: key(fmt.Sprintf("p%04d", i)), Value: json.RawMessage(`{}`)})
	}
	entries, err := a.s.Apply(puts, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.r.Publish(entries)
	if fn.sent != 3 {
		t.Errorf("SendToAll calls = %d, want 3 batches for 2500 entries", fn.sent)
	}
	if q := a.r.NumQueued(); q != 0 {
		t.Errorf("NumQueued = %d, want 0: a bulk write must not fill the broadcast queue", q)
	}
	if b.s.Len() != 2500 {
		t.Errorf("peer holds %d entries, want 2500", b.s.Len())
	}
	// The receiver does not gossip the bulk again: its own next write must
	// not wait behind 2,500 broadcasts.
	if q := b.r.NumQueued(); q != 0 {
		t.Errorf("receiver's NumQueued = %d after a bulk message, want 0", q)
	}
	mustApply(t, b.r, []Put{{Key: key("small"), Value: json.RawMessage(`{"v":1}`)}}, nil)
	if q := b.r.NumQueued(); q != 1 {
		t.Errorf("receiver's NumQueued after its own write = %d, want 1", q)
	}
}
