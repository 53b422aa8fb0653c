package mesh_test

// Gossip convergence of pod-subnet agreement: N members on 127.0.0.1 in one
// process, each with the real pieces of an agent (mesh.Membership, a
// store.Store on disk, store.Replicator) and the agent's claim loop (a copy
// of ipam/ipamctl Decide, formerly node/reconcile.go claimSubnet, and the
// Run loop around it), but no data plane. All members join at once, so
// their first claims race and some collide.
//
// Run (numbers in BENCHMARKS.md):
//
//	go test -run '^$' -bench Convergence -benchtime 1x -timeout 30m ./mesh/
//	go test -run '^$' -bench Convergence -benchtime 1x ./mesh/ -conv.sizes 200 -conv.timers fast
//	# the replication with and without direct mail, alternating, traced:
//	go test -run '^$' -bench Convergence -benchtime 2x -v ./mesh/ -conv.sizes 25,50 -conv.timers fast -conv.direct ab -conv.trace
//
// Timers: "fast" (gossip 50 ms, probe 500 ms, push/pull 2 s) up to 50
// members, "relaxed" (200 ms, 2 s, 5 s) above: 200 memberlists plus 200
// claim loops in one process overload 2 cores with the fast timers (see
// BENCHMARKS.md). -conv.timers fast|relaxed forces one set. Stores live in
// testing's TempDir, so TMPDIR decides whether their fsyncs hit a disk.
//
// -conv.direct off runs the members without the replicator's direct mail
// of local writes and greeting of new members (store.Mailer, mesh.Greeter):
// the replication before them. ab runs both in every iteration, in
// alternating order, and reports the figures without them with "-off".
// -conv.trace logs, per run, when each member's store first held each
// lease and by which path (gossip/mail, push/pull, the join's push/pull),
// when its table first counted it, and what the tables missed meanwhile
// (no lease, a lease not counted as its node is not alive, a loser, another
// subnet).
//
// Figures (b.ReportMetric; with -benchtime Nx, medians of the N runs):
//
//	converged       1 when every run converged within 60 s + 1 s per member
//	members-s       every member sees N alive members (memberlist alone:
//	                the baseline of the same run), dated by the last
//	                member's last join event
//	agree-s         every member's ipam.Resolve table has N distinct subnets,
//	                no losers, and all tables are equal, dated by the last
//	                change of any member's leases before the check that
//	                found it
//	agree-check-s   when the checker found it (later than agree-s by up to
//	                one check, which takes seconds when 2 cores are busy)
//	ready-s         every member also uses the subnet its table gives it
//	                (after the agent's 1 s claim settle), as checked
//	agree/members   agree-s divided by members-s of the same run
//	agree-on/off    with -conv.direct ab: agree-s with direct mail divided
//	                by agree-s without, in the same iteration
//	last-join-s     the last member's Join returned (the seed answered it)
//	last-claim-s    the last member first wrote its lease
//	claims          leases written with a new subnet (N when no conflict)
//	conflicts       lost claims during convergence (a member re-claimed
//	                because an earlier claim won its subnet)
//	conflicts-left  losers + disagreeing tables + subnet changes, summed
//	                over members, 3 s after ready (must be 0)

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/mesh"
	"github.com/netloom/netloom/mesh/store"
)

// What the agent uses (node.Config defaults, node/reconcile.go).
var (
	convCIDR = netip.MustParsePrefix("10.244.0.0/16")
)

const (
	convMask        = 24
	convGrace       = 24 * time.Hour         // --subnet-grace default
	convClaimSettle = time.Second            // node.claimSettle
	convResync      = 5 * time.Second        // Agent.Run resync ticker
	convDebounce    = 100 * time.Millisecond // Agent.Run: a burst of changes becomes one pass
	convCheckEvery  = 50 * time.Millisecond
	convAfterReady  = 3 * time.Second // > PushPullInterval: a late conflict would show
)

// convTimers are the short timers for many members on 2 cores.
var convTimers = mesh.Timers{
	ProbeInterval:    500 * time.Millisecond,
	ProbeTimeout:     250 * time.Millisecond,
	SuspicionMult:    4,
	GossipInterval:   50 * time.Millisecond,
	PushPullInterval: 2 * time.Second,
}

var debugConv = true

// relaxedTimers are for N > 50 members in one process on 2 cores: with
// convTimers, 200 memberlists on 2 cores overload (probes time out, a storm
// of suspicions follows) and do not converge within minutes.
var relaxedTimers = mesh.Timers{
	ProbeInterval:    2 * time.Second,
	ProbeTimeout:     time.Second,
	SuspicionMult:    4,
	GossipInterval:   200 * time.Millisecond,
	PushPullInterval: 5 * time.Second,
}

var (
	convSizes  = flag.String("conv.sizes", "10,50,200", "BenchmarkConvergence: member counts, comma separated")
	convTimerF = flag.String("conv.timers", "auto", "BenchmarkConvergence: fast (gossip 50ms, probe 500ms, push/pull 2s), relaxed (200ms, 2s, 5s) or auto (fast up to 50 members)")
	convV      = flag.Bool("conv.v", false, "BenchmarkConvergence: log every check")
	convDirect = flag.String("conv.direct", "on", "BenchmarkConvergence: the replicator's direct mail of local writes and greeting of new members: on (the product), off (the replication before), or ab (both in every iteration, alternating which goes first; the -off figures are without)")
)

func timersFor(n int) (mesh.Timers, string) {
	switch *convTimerF {
	case "fast":
		return convTimers, "fast"
	case "relaxed":
		return relaxedTimers, "relaxed"
	}
	if n <= 50 {
		return convTimers, "fast"
	}
	return relaxedTimers, "relaxed"
}

// convMember is one member: what an Agent holds for subnet agreement.
type convMember struct {
	name  string
	addr  string
	ms    *mesh.Membership
	st    *store.Store
	repl  *store.Replicator
	key   string // a fake WireGuard public key, for a realistic metadata size
	kick  chan struct{}
	join  atomic.Bool
	close func() // unsubscribe from the store

	mu     sync.Mutex
	subnet netip.Prefix

	claims    atomic.Int64 // leases written with a new subnet
	conflicts atomic.Int64 // of those, re-claims after losing a conflict
	withdraws atomic.Int64 // leases withdrawn (ErrFull after a loss)
	changes   atomic.Int64 // times the used subnet changed
	retries   atomic.Int64 // failed joins
	joinedAt  atomic.Int64 // unix ns when its Join returned (the seed: its start)
	claimedAt atomic.Int64 // unix ns of its first lease write
	// leaseChanged and memberJoined: unix ns of the last change of its
	// lease set and of the last member it learned of. A check that finds
	// agreement (or full membership) dates it by these rather than by its
	// own clock: on 2 busy cores one check can take seconds.
	leaseChanged atomic.Int64
	memberJoined atomic.Int64
}

func (c *convMember) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// leases is Agent.leases.
func (c *convMember) leases() []ipam.Lease {
	var out []ipam.Lease
	for _, e := range c.st.List(ipam.LeaseKind, "") {
		var l ipam.Lease
		if err := json.Unmarshal(e.Value, &l); err == nil && l.Node == e.Key.Name {
			out = append(out, l)
		}
	}
	return out
}

// reconcile is the subnet part of Agent.reconcile.
func (c *convMember) reconcile() {
	t := ipam.Resolve(c.leases(), c.ms.Alive(), time.Now(), convGrace)
	if c.join.Load() {
		c.claimSubnet(t)
	}
	c.mu.Lock()
	meta := mesh.Meta{Addr: "127.0.0.1", WGKey: c.key, WGPort: 51820, Version: "bench"}
	if c.subnet.IsValid() {
		meta.Subnet = c.subnet.String()
	}
	c.mu.Unlock()
	_ = c.ms.SetMeta(meta)
}

// claimSubnet is node/reconcile.go claimSubnet without logging.
func (c *convMember) claimSubnet(t ipam.Table) {
	now := time.Now()
	cur := ipam.Lease{Node: c.name}
	for _, l := range c.leases() {
		if l.Node == c.name {
			cur = l
		}
	}
	renew := min(convGrace/4, time.Hour)
	seq := uint32(0)
	if cur.Claimed == now.UnixMilli() {
		seq = cur.ClaimedSeq + 1
	}
	next, err := ipam.Claim(convCIDR, convMask, t, cur, now, seq, renew)
	if err != nil {
		if _, won := t.ByNode[c.name]; !won && cur.Subnet.IsValid() {
			c.withdraws.Add(1)
			c.apply(nil, []store.Key{{Kind: ipam.LeaseKind, Name: c.name}})
		}
		c.setSubnet(netip.Prefix{})
		return
	}
	if next != cur {
		c.claimedAt.CompareAndSwap(0, now.UnixNano())
		if next.Subnet != cur.Subnet {
			c.claims.Add(1)
			if cur.Subnet.IsValid() {
				c.conflicts.Add(1)
			}
		}
		b, _ := json.Marshal(next)
		c.apply([]store.Put{{Key: store.Key{Kind: ipam.LeaseKind, Name: c.name}, Value: b}}, nil)
	}
	if won, ok := t.ByNode[c.name]; ok && won == next.Subnet {
		if age := now.Sub(time.UnixMilli(next.Claimed)); age < convClaimSettle {
			time.AfterFunc(convClaimSettle-age, c.poke)
			return
		}
		c.setSubnet(won)
		return
	}
	c.poke()
}

func (c *convMember) apply(puts []store.Put, dels []store.Key) {
	entries, err := c.st.Apply(puts, dels)
	if err != nil {
		return
	}
	if len(entries) > 0 {
		c.leaseChanged.Store(time.Now().UnixNano())
	}
	c.repl.Publish(entries)
}

func (c *convMember) setSubnet(p netip.Prefix) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subnet != p && c.subnet.IsValid() {
		c.changes.Add(1)
	}
	c.subnet = p
}

func (c *convMember) used() netip.Prefix {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.subnet
}

// run is the loop of Agent.Run: a pass, then wait for a store change, a
// membership change, a poke or the resync, then a short pause.
func (c *convMember) run(ctx context.Context) {
	storeKick, unsub := c.st.Subscribe()
	defer unsub()
	resync := time.NewTicker(convResync)
	defer resync.Stop()
	for {
		c.reconcile()
		select {
		case <-ctx.Done():
			return
		case <-storeKick:
		case <-c.ms.Changes():
		case <-c.kick:
		case <-resync.C:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(convDebounce):
		}
	}
}

// joinLoop is Agent.joinLoop without the peers file: retry until the seed
// answers.
func (c *convMember) joinLoop(ctx context.Context, seed string) {
	if seed == "" {
		c.joinedAt.Store(time.Now().UnixNano())
		c.join.Store(true)
		c.poke()
		return
	}
	delay := time.Second
	for {
		if n, _ := c.ms.Join([]string{seed}); n > 0 {
			c.joinedAt.Store(time.Now().UnixNano())
			c.join.Store(true)
			c.poke()
			return
		}
		c.retries.Add(1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// freeConvPort returns a port free for both TCP and UDP on 127.0.0.1 a
// moment ago.
func freeConvPort() (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port, nil
	}
	return 0, errors.New("no free port on 127.0.0.1")
}

func startConvMember(dir, name string, key []byte, timers mesh.Timers, direct bool, tr *convTracer, who int) (*convMember, error) {
	st, err := store.Open(filepath.Join(dir, name), name, store.Options{})
	if err != nil {
		return nil, err
	}
	var wgKey [32]byte
	_, _ = rand.Read(wgKey[:])
	c := &convMember{name: name, st: st, kick: make(chan struct{}, 1), key: fmt.Sprintf("%x", wgKey[:])[:44]}
	var lastErr error
	for range 5 { // a picked port can be taken before memberlist binds it
		port, err := freeConvPort()
		if err != nil {
			st.Close()
			return nil, err
		}
		cfg := mesh.Config{
			Name: name, AdvertiseAddr: netip.MustParseAddr("127.0.0.1"), Port: port,
			Key: key, Timers: timers, Log: slog.New(slog.DiscardHandler),
		}
		cfg.OnEvent = func(kind, node string) {
			if kind == "join" {
				c.memberJoined.Store(time.Now().UnixNano())
			}
			if tr != nil {
				tr.event(who, kind, node)
			}
		}
		if tr != nil {
			cfg.Log = slog.New(traceLog{&tr.drops, &tr.failed})
		}
		ms := mesh.New(cfg)
		var repl *store.Replicator
		var mrepl mesh.Replicator
		if direct {
			repl = store.NewReplicator(st, ms)
			mrepl = tracedGreeter{&tracedRepl{r: repl, st: st, c: c, tr: tr, who: who, self: name}}
		} else {
			// Without direct mail and greetings: the replication before.
			repl = store.NewReplicator(st, plainTransport{ms})
			mrepl = &tracedRepl{r: repl, st: st, c: c, tr: tr, who: who, self: name}
		}
		if lastErr = ms.Start(mrepl, mesh.Meta{Addr: "127.0.0.1", WGKey: c.key, WGPort: 51820, Version: "bench"}); lastErr == nil {
			c.ms, c.repl = ms, repl
			c.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			return c, nil
		}
	}
	st.Close()
	return nil, lastErr
}

// leaseCache decodes each lease version once for all members' checks.
type leaseCache map[store.Version]ipam.Lease

func (lc leaseCache) leases(st *store.Store) []ipam.Lease {
	es := st.List(ipam.LeaseKind, "")
	out := make([]ipam.Lease, 0, len(es))
	for _, e := range es {
		l, ok := lc[e.Version]
		if !ok {
			if err := json.Unmarshal(e.Value, &l); err != nil || l.Node != e.Key.Name {
				continue
			}
			lc[e.Version] = l
		}
		out = append(out, l)
	}
	return out
}

// convState is what the checker sees at one moment.
type convState struct {
	members  bool // every member sees n alive members
	agree    bool // every table has n distinct subnets, no losers, all equal
	ready    bool // agree, and every member uses its subnet from the table
	problems int  // losers + disagreeing tables + members not using their subnet
	why      string
	// lastLease and lastJoin: the latest leaseChanged and memberJoined of
	// the members (unix ns), read before their state was: when the check
	// finds agreement (full membership), that is when it was reached.
	lastLease, lastJoin int64
}

func checkConv(ms []*convMember, lc leaseCache, all map[string]bool, tr *convTracer, el time.Duration) convState {
	n := len(ms)
	s := convState{members: true}
	now := time.Now()
	var ref map[string]netip.Prefix
	agree, ready := true, true
	var trLeases [][]ipam.Lease
	var trTables []ipam.Table
	for _, c := range ms {
		s.lastLease = max(s.lastLease, c.leaseChanged.Load())
		s.lastJoin = max(s.lastJoin, c.memberJoined.Load())
		// Resolve with the member's own view of who is alive; while it
		// sees everyone, that is the set of all names (cheaper than
		// Membership.Alive, which decodes every member's metadata).
		alive := all
		if seen := c.ms.NumMembers(); seen != n {
			if s.members {
				s.why = fmt.Sprintf("%s sees %d members", c.name, seen)
			}
			s.members = false
			alive = c.ms.Alive()
		}
		ls := lc.leases(c.st)
		t := ipam.Resolve(ls, alive, now, convGrace)
		if tr != nil {
			trLeases = append(trLeases, ls)
			trTables = append(trTables, t)
		}
		bad := len(t.ByNode) != n || len(t.Owner) != n || len(t.Losers) > 0
		s.problems += len(t.Losers)
		if ref == nil && !bad {
			ref = t.ByNode
		} else if !bad && !maps.Equal(ref, t.ByNode) {
			bad = true
			s.problems++
		}
		if bad {
			if agree && s.members {
				s.why = fmt.Sprintf("%s: %d subnets, %d owners, %d losers", c.name, len(t.ByNode), len(t.Owner), len(t.Losers))
			}
			agree = false
		}
		if p := c.used(); !p.IsValid() || p != t.ByNode[c.name] {
			ready = false
			s.problems++
		}
	}
	s.agree = agree && ref != nil
	s.ready = s.agree && ready
	if tr != nil {
		tr.observe(el, trLeases, trTables, s.agree)
	}
	return s
}

// convResult is one convergence run.
type convResult struct {
	// members and agree are dated by the events that completed them;
	// membersCheck and agreeCheck are when the checker saw them.
	members, agree, ready    time.Duration
	membersCheck, agreeCheck time.Duration
	// lastJoin and lastClaim: when the last member's Join returned and
	// when the last member first wrote its lease, from the start.
	lastJoin, lastClaim time.Duration
	claims, conflicts   int64
	withdraws, retries  int64
	converged           bool
	why                 string // when not converged
	left                int
}

func runConvergence(tb testing.TB, n int, timers mesh.Timers, direct bool, timeout time.Duration) convResult {
	tb.Helper()
	dir := tb.TempDir()
	key := make([]byte, 32) // AES-256 gossip, as node.GossipKey gives
	_, _ = rand.Read(key)

	ms := make([]*convMember, n)
	var tr *convTracer
	if *convTrace {
		names := make([]string, n)
		for i := range names {
			names[i] = fmt.Sprintf("node-%03d", i)
		}
		tr = newConvTracer(names)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ms[i], errs[i] = startConvMember(dir, fmt.Sprintf("node-%03d", i), key, timers, direct, tr, i)
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithCancel(context.Background())
	var loops sync.WaitGroup
	defer func() {
		cancel()
		loops.Wait()
		var sd sync.WaitGroup
		for _, c := range ms {
			if c == nil {
				continue
			}
			sd.Add(1)
			go func() {
				defer sd.Done()
				_ = c.ms.Shutdown()
				_ = c.st.Close()
			}()
		}
		sd.Wait()
	}()
	if err := errors.Join(errs...); err != nil {
		tb.Fatalf("start %d members: %v", n, err)
	}

	// All at once: every loop starts, and every member but the seed joins
	// the seed.
	start := time.Now()
	if tr != nil {
		tr.begin(start)
	}
	for i, c := range ms {
		seed := ""
		if i > 0 {
			seed = ms[0].addr
		}
		loops.Add(2)
		go func() { defer loops.Done(); c.run(ctx) }()
		go func() { defer loops.Done(); c.joinLoop(ctx, seed) }()
	}

	var r convResult
	lc := leaseCache{}
	all := make(map[string]bool, n)
	for _, c := range ms {
		all[c.name] = true
	}
	deadline := start.Add(timeout)
	var last convState
	for {
		t := time.Now()
		last = checkConv(ms, lc, all, tr, t.Sub(start))
		el := time.Since(start)
		cost := time.Since(t)
		// Dated by the events that completed them (see convState), not
		// bounded below by the start (the seed alone has no events).
		if last.members && r.members == 0 {
			r.members = max(0, time.Duration(last.lastJoin-start.UnixNano()))
			r.membersCheck = el
		}
		if last.agree && r.agree == 0 {
			r.agree = max(0, time.Duration(last.lastLease-start.UnixNano()))
			r.agreeCheck = el
		}
		if last.ready && last.members {
			r.ready = el
			r.converged = true
			break
		}
		if *convV {
			tb.Logf("%6.2fs (check %4dms) members=%v agree=%v ready=%v problems=%d why=%s", el.Seconds(), cost.Milliseconds(), last.members, last.agree, last.ready, last.problems, last.why)
		}
		if time.Now().After(deadline) {
			r.why = fmt.Sprintf("%d members did not converge within %s: %s", n, timeout, last.why)
			r.left = last.problems
			return r
		}
		// The checker takes at most about half a core.
		time.Sleep(max(convCheckEvery, cost))
	}
	for _, c := range ms {
		r.lastJoin = max(r.lastJoin, time.Duration(c.joinedAt.Load()-start.UnixNano()))
		r.lastClaim = max(r.lastClaim, time.Duration(c.claimedAt.Load()-start.UnixNano()))
		r.claims += c.claims.Load()
		r.conflicts += c.conflicts.Load()
		r.withdraws += c.withdraws.Load()
		r.retries += c.retries.Load()
	}
	if tr != nil {
		claimed := make([]time.Duration, n)
		for i, c := range ms {
			claimed[i] = time.Duration(c.claimedAt.Load() - start.UnixNano())
		}
		tr.report(tb, claimed)
	}
	changes := make([]int64, n)
	for i, c := range ms {
		changes[i] = c.changes.Load()
	}

	// Anything left? Gossip goes on; a late conflict would show as losers,
	// disagreement, or a member changing its subnet.
	time.Sleep(convAfterReady)
	after := checkConv(ms, lc, all, nil, 0)
	r.left = after.problems
	if !after.ready || !after.members {
		r.left++
	}
	for i, c := range ms {
		r.left += int(c.changes.Load() - changes[i])
	}
	return r
}

func median(ds []float64) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// convStats collects the runs of one configuration.
type convStats struct {
	members, agree, ready, ratio, conflicts, claims, left, ok, lastJoin, lastClaim []float64
	agreeCheck                                                                     []float64
}

func (st *convStats) add(r convResult) {
	if !r.converged {
		st.ok = append(st.ok, 0)
		st.left = append(st.left, float64(r.left))
		return
	}
	st.ok = append(st.ok, 1)
	st.members = append(st.members, r.members.Seconds())
	st.agree = append(st.agree, r.agree.Seconds())
	st.agreeCheck = append(st.agreeCheck, r.agreeCheck.Seconds())
	st.ready = append(st.ready, r.ready.Seconds())
	st.lastJoin = append(st.lastJoin, r.lastJoin.Seconds())
	st.lastClaim = append(st.lastClaim, r.lastClaim.Seconds())
	st.ratio = append(st.ratio, r.agree.Seconds()/r.members.Seconds())
	st.conflicts = append(st.conflicts, float64(r.conflicts))
	st.claims = append(st.claims, float64(r.claims))
	st.left = append(st.left, float64(r.left))
}

// report reports the medians, each unit with suffix.
func (st *convStats) report(b *testing.B, suffix string) {
	b.ReportMetric(median(st.ok), "converged"+suffix)
	b.ReportMetric(median(st.members), "members-s"+suffix)
	b.ReportMetric(median(st.agree), "agree-s"+suffix)
	b.ReportMetric(median(st.agreeCheck), "agree-check-s"+suffix)
	b.ReportMetric(median(st.ready), "ready-s"+suffix)
	if suffix == "" {
		b.ReportMetric(median(st.lastJoin), "last-join-s")
		b.ReportMetric(median(st.lastClaim), "last-claim-s")
		b.ReportMetric(median(st.ratio), "agree/members")
		b.ReportMetric(median(st.claims), "claims")
	}
	b.ReportMetric(median(st.conflicts), "conflicts"+suffix)
	b.ReportMetric(slices.Max(st.left), "conflicts-left"+suffix)
}

func BenchmarkConvergence(b *testing.B) {
	var sizes []int
	for _, f := range strings.Split(*convSizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 {
			b.Fatalf("-conv.sizes %q: give member counts of 2 or more, e.g. 10,50,200", *convSizes)
		}
		sizes = append(sizes, n)
	}
	var modes []bool // direct mail and greetings on (the product) or off
	switch *convDirect {
	case "on":
		modes = []bool{true}
	case "off":
		modes = []bool{false}
	case "ab":
		modes = []bool{false, true}
	default:
		b.Fatalf("-conv.direct %q: give on, off or ab", *convDirect)
	}
	for _, n := range sizes {
		timers, tname := timersFor(n)
		// Bounded: a run that has not converged by then is reported as such.
		timeout := 60*time.Second + time.Duration(n)*time.Second
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			stats := map[bool]*convStats{true: {}, false: {}}
			var ratios []float64 // agree-s on / off of the same iteration
			for i := range b.N {
				order := slices.Clone(modes)
				if i%2 == 1 {
					slices.Reverse(order) // alternate which goes first
				}
				agree := map[bool]float64{}
				for _, direct := range order {
					r := runConvergence(b, n, timers, direct, timeout)
					stats[direct].add(r)
					mode := map[bool]string{true: "on", false: "off"}[direct]
					if !r.converged {
						b.Logf("N=%d timers=%s direct=%s: %s", n, tname, mode, r.why)
						continue
					}
					agree[direct] = r.agree.Seconds()
					b.Logf("N=%d timers=%s direct=%s members=%.2fs last-join=%.2fs last-claim=%.2fs agree=%.2fs (checker %.2fs) ready=%.2fs claims=%d conflicts=%d withdrawn=%d conflicts-left=%d join-retries=%d",
						n, tname, mode, r.members.Seconds(), r.lastJoin.Seconds(), r.lastClaim.Seconds(), r.agree.Seconds(), r.agreeCheck.Seconds(), r.ready.Seconds(), r.claims, r.conflicts, r.withdraws, r.left, r.retries)
				}
				if on, off := agree[true], agree[false]; on > 0 && off > 0 {
					ratios = append(ratios, on/off)
				}
			}
			for _, direct := range modes {
				suffix := ""
				if !direct && len(modes) == 2 {
					suffix = "-off"
				}
				stats[direct].report(b, suffix)
			}
			if len(ratios) > 0 {
				b.ReportMetric(median(ratios), "agree-on/off")
			}
		})
	}
}

// TestConvergence keeps the benchmark's harness working: a few members
// that join at once end with distinct subnets, agreed, and nothing left.
func TestConvergence(t *testing.T) {
	if testing.Short() {
		t.Skip("starts memberlist instances")
	}
	r := runConvergence(t, 5, convTimers, true, 30*time.Second)
	if !r.converged {
		t.Fatal(r.why)
	}
	if r.left != 0 {
		t.Errorf("%d conflicts or disagreements left after convergence, want 0", r.left)
	}
	if r.claims < 5 {
		t.Errorf("%d claims, want at least one per member", r.claims)
	}
}
