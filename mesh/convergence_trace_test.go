package mesh_test

// Tracing for BenchmarkConvergence (-conv.trace): per member, when its
// store first holds each other member's lease, by which path it came
// (gossip broadcast, push/pull, the join's push/pull), when its resolved
// table first counts it, and what the tables miss while they disagree.

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/mesh"
	"github.com/netloom/netloom/mesh/store"
)

var convTrace = flag.Bool("conv.trace", false, "BenchmarkConvergence: trace when each member's store and table first hold each lease, and what is missing while tables disagree")

// Arrival paths of a lease into a member's store.
const (
	pathBcast    = "bcast"    // NotifyMsg: a gossip broadcast, a mail or a greeting
	pathPushPull = "pushpull" // MergeRemoteState, periodic push/pull
	pathJoin     = "join"     // MergeRemoteState of a join
	pathLocal    = "local"    // the member's own write
)

// tracedRepl is the mesh.Replicator of a member in the benchmark: it notes
// when a message changed the member's lease set and, when tracing, which
// lease versions each message added to the store.
type tracedRepl struct {
	r    *store.Replicator
	st   *store.Store
	c    *convMember
	tr   *convTracer // nil: not tracing
	who  int
	self string

	mu   sync.Mutex
	seen map[string]store.Version
}

// after attributes the lease versions the store holds and seen does not
// to path; the generation tells cheaply whether anything changed. The
// caller holds r.mu across the delivery and after, so that a concurrent
// delivery on another path is not credited.
func (r *tracedRepl) after(gen uint64, path string) {
	if r.st.Generation(ipam.LeaseKind) == gen {
		return
	}
	if r.seen == nil {
		r.seen = map[string]store.Version{}
	}
	for _, e := range r.st.List(ipam.LeaseKind, "") {
		if v, ok := r.seen[e.Key.Name]; !ok || v != e.Version {
			r.seen[e.Key.Name] = e.Version
			if e.Key.Name != r.self {
				r.tr.arrived(r.who, e.Key.Name, path)
			}
		}
	}
}

// delivered notes a change of the lease set after a delivery (gen: the
// lease generation before it), and traces it.
func (r *tracedRepl) delivered(gen uint64, path string) {
	if r.st.Generation(ipam.LeaseKind) == gen {
		return
	}
	r.c.leaseChanged.Store(time.Now().UnixNano())
	if r.tr != nil {
		r.after(gen, path)
	}
}

func (r *tracedRepl) NotifyMsg(b []byte) {
	if r.tr != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
	}
	gen := r.st.Generation(ipam.LeaseKind)
	r.r.NotifyMsg(b)
	r.delivered(gen, pathBcast)
}

func (r *tracedRepl) GetBroadcasts(overhead, limit int) [][]byte {
	return r.r.GetBroadcasts(overhead, limit)
}

func (r *tracedRepl) LocalState(join bool) []byte { return r.r.LocalState(join) }

func (r *tracedRepl) MergeRemoteState(buf []byte, join bool) {
	if r.tr != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
	}
	gen := r.st.Generation(ipam.LeaseKind)
	r.r.MergeRemoteState(buf, join)
	p := pathPushPull
	if join {
		p = pathJoin
	}
	r.delivered(gen, p)
}

// traceLog counts memberlist's warnings that it dropped messages, and
// failed sends of mail and greetings.
type traceLog struct{ drops, failed *atomic.Int64 }

func (h traceLog) Enabled(context.Context, slog.Level) bool { return true }
func (h traceLog) Handle(_ context.Context, r slog.Record) error {
	switch {
	case strings.Contains(r.Message, "dropping") || strings.Contains(r.Message, "queue full"):
		h.drops.Add(1)
	case strings.Contains(r.Message, "failed") || strings.Contains(r.Message, "Failed"):
		if h.failed.Add(1) <= 5 {
			var attrs []string
			r.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a.String()); return true })
			fmt.Fprintf(os.Stderr, "trace: failed: %s %s\n", r.Message, strings.Join(attrs, " "))
		}
	}
	return nil
}
func (h traceLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h traceLog) WithGroup(string) slog.Handler      { return h }

// tracedGreeter is a tracedRepl that greets members it learns of
// (mesh.Greeter), as the store.Replicator does.
type tracedGreeter struct{ *tracedRepl }

func (g tracedGreeter) Greeting() [][]byte {
	msgs := g.r.Greeting()
	if g.tr != nil {
		g.tr.greetings.Add(int64(len(msgs)))
	}
	return msgs
}

// plainTransport is a store.Transport without the direct mail of
// store.Mailer: the replication before it (-conv.direct off).
type plainTransport struct{ ms *mesh.Membership }

func (t plainTransport) NumMembers() int      { return t.ms.NumMembers() }
func (t plainTransport) SendToAll(msg []byte) { t.ms.SendToAll(msg) }

var (
	_ mesh.Replicator = (*tracedRepl)(nil)
	_ mesh.Greeter    = tracedGreeter{}
	_ store.Mailer    = (*mesh.Membership)(nil)
)

// convTracer collects the trace of one run.
type convTracer struct {
	mu    sync.Mutex
	start time.Time
	names []string
	idx   map[string]int
	// arrival[v][t]: first arrival of t's lease (any version) in v's store.
	arrival [][]time.Duration
	path    [][]string
	// versions[v][t]: lease versions of t that arrived in v's store.
	versions [][]int
	// known[v][t]: when v's memberlist first reported t joined.
	known         [][]time.Duration
	drops, failed atomic.Int64
	// greetings: messages greeted with (mesh.Greeter)
	greetings atomic.Int64
	// counted[v][t]: first check at which v's table had t in ByNode.
	counted [][]time.Duration
	// timeline: what the tables missed, per check while they disagreed.
	timeline []traceLine
	started  bool
}

type traceLine struct {
	at time.Duration
	// pairs (viewer, node) by reason node is not (yet) agreed in viewer's table
	noLease, expired, loser, otherSubnet, extra int
	// viewers whose table is complete and equal to the reference
	good int
	// a sample: the viewer and nodes it misses
	sample string
}

func newConvTracer(names []string) *convTracer {
	n := len(names)
	tr := &convTracer{names: names, idx: map[string]int{}}
	for i, s := range names {
		tr.idx[s] = i
	}
	mk := func() [][]time.Duration {
		out := make([][]time.Duration, n)
		for i := range out {
			out[i] = make([]time.Duration, n)
			for j := range out[i] {
				out[i][j] = -1
			}
		}
		return out
	}
	tr.arrival, tr.counted, tr.known = mk(), mk(), mk()
	tr.path = make([][]string, n)
	tr.versions = make([][]int, n)
	for i := range tr.path {
		tr.path[i] = make([]string, n)
		tr.versions[i] = make([]int, n)
	}
	return tr
}

func (tr *convTracer) begin(start time.Time) {
	tr.mu.Lock()
	tr.start, tr.started = start, true
	tr.mu.Unlock()
}

// event is mesh.Config.OnEvent of member v.
func (tr *convTracer) event(v int, kind, node string) {
	if kind != "join" {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	t, ok := tr.idx[node]
	if !ok || !tr.started || tr.known[v][t] >= 0 {
		return
	}
	tr.known[v][t] = time.Since(tr.start)
}

func (tr *convTracer) arrived(v int, node, path string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	t, ok := tr.idx[node]
	if !ok || !tr.started {
		return
	}
	tr.versions[v][t]++
	if tr.arrival[v][t] < 0 {
		tr.arrival[v][t] = time.Since(tr.start)
		tr.path[v][t] = path
	}
}

// observe records one check: each member's leases and table.
func (tr *convTracer) observe(el time.Duration, leases [][]ipam.Lease, tables []ipam.Table, agreed bool) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := len(tr.names)
	// The reference: for each node, the subnet most tables give it.
	votes := make([]map[netip.Prefix]int, n)
	for i := range votes {
		votes[i] = map[netip.Prefix]int{}
	}
	for v, t := range tables {
		for node, p := range t.ByNode {
			if j, ok := tr.idx[node]; ok {
				votes[j][p]++
				if tr.counted[v][j] < 0 {
					tr.counted[v][j] = el
				}
			}
		}
	}
	ref := make([]netip.Prefix, n)
	for j, vs := range votes {
		best := 0
		for p, c := range vs {
			if c > best || (c == best && p.String() < ref[j].String()) {
				ref[j], best = p, c
			}
		}
	}
	if agreed {
		return
	}
	line := traceLine{at: el}
	for v, t := range tables {
		held := map[string]bool{}
		for _, l := range leases[v] {
			held[l.Node] = true
		}
		lost := map[string]bool{}
		for _, l := range t.Losers {
			lost[l.Node] = true
		}
		var miss []string
		for j, node := range tr.names {
			p, ok := t.ByNode[node]
			switch {
			case ok && p == ref[j]:
				continue
			case ok:
				line.otherSubnet++
			case lost[node]:
				line.loser++
			case held[node]:
				line.expired++
			default:
				line.noLease++
			}
			miss = append(miss, node)
		}
		if len(t.ByNode) > n {
			line.extra++
		}
		if len(miss) == 0 {
			line.good++
		} else if line.sample == "" || len(miss) > strings.Count(line.sample, ",")+1 {
			line.sample = fmt.Sprintf("%s misses %d: %s", tr.names[v], len(miss), strings.Join(miss[:min(len(miss), 6)], ","))
		}
	}
	tr.timeline = append(tr.timeline, line)
}

func quantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(f float64) float64 { return s[min(len(s)-1, int(f*float64(len(s))))].Seconds() }
	return fmt.Sprintf("p50 %.2f p90 %.2f p99 %.2f max %.2f (n=%d)", q(0.5), q(0.9), q(0.99), s[len(s)-1].Seconds(), len(s))
}

// report logs the trace of one run. claimed[j] is node j's first lease
// write from the start.
func (tr *convTracer) report(tb testing.TB, claimed []time.Duration) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := len(tr.names)
	var delay, gap []time.Duration // arrival - claim; counted - arrival
	paths := map[string]int{}
	lastByPath := map[string]time.Duration{}
	type pair struct {
		v, t int
		at   time.Duration
	}
	var last []pair
	multi := 0
	for v := range n {
		for t := range n {
			if v == t {
				continue
			}
			a := tr.arrival[v][t]
			if a < 0 {
				paths["never"]++
				continue
			}
			p := tr.path[v][t]
			paths[p]++
			lastByPath[p] = max(lastByPath[p], a)
			delay = append(delay, a-claimed[t])
			if c := tr.counted[v][t]; c >= 0 {
				gap = append(gap, c-a)
			}
			if tr.versions[v][t] > 1 {
				multi++
			}
			last = append(last, pair{v, t, a})
		}
	}
	slices.SortFunc(last, func(a, b pair) int { return cmp.Compare(b.at, a.at) })
	// The pairs the broadcasts missed: did the origin know the viewer
	// when it claimed?
	missKnown, missUnknown := 0, 0
	for v := range n {
		for t := range n {
			if v == t || tr.path[v][t] == pathBcast {
				continue
			}
			if k := tr.known[t][v]; k >= 0 && k <= claimed[t] {
				missKnown++
			} else {
				missUnknown++
			}
		}
	}
	tb.Logf("trace: pairs not reached by broadcast: %d (origin knew the viewer at its claim: %d, did not: %d); memberlist drop warnings: %d; greeting messages %d; failed sends %d", missKnown+missUnknown, missKnown, missUnknown, tr.drops.Load(), tr.greetings.Load(), tr.failed.Load())
	tb.Logf("trace: lease arrival - its claim: %s", quantiles(delay))
	tb.Logf("trace: first counted in table - arrival (check every >=50ms): %s", quantiles(gap))
	var ps []string
	for _, p := range []string{pathJoin, pathBcast, pathPushPull, "never"} {
		ps = append(ps, fmt.Sprintf("%s %d (last %.2fs)", p, paths[p], lastByPath[p].Seconds()))
	}
	tb.Logf("trace: first arrival by path: %s; pairs with >1 lease version: %d", strings.Join(ps, ", "), multi)
	// When did the arrivals complete: fraction of pairs arrived by time.
	var at []time.Duration
	for _, p := range last {
		at = append(at, p.at)
	}
	tb.Logf("trace: pair arrival time: %s", quantiles(at))
	for _, p := range last[:min(5, len(last))] {
		tb.Logf("trace: late: %s got %s's lease at %.2fs by %s (claimed %.2fs; %s knew %s at %.2fs, %s knew %s at %.2fs)", tr.names[p.v], tr.names[p.t], p.at.Seconds(), tr.path[p.v][p.t], claimed[p.t].Seconds(),
			tr.names[p.t], tr.names[p.v], tr.known[p.t][p.v].Seconds(), tr.names[p.v], tr.names[p.t], tr.known[p.v][p.t].Seconds())
	}
	step := 250 * time.Millisecond
	next := time.Duration(0)
	for _, l := range tr.timeline {
		if l.at < next {
			continue
		}
		next = l.at + step
		tb.Logf("trace: %5.2fs good %d/%d; missing pairs: no-lease %d, expired %d, loser %d, other-subnet %d; %s", l.at.Seconds(), l.good, n, l.noLease, l.expired, l.loser, l.otherSubnet, l.sample)
	}
}
