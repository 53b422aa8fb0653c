package cluster

import (
	"context"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/mesh"
)

// Membership is what the Hub reads of the gossip membership.
type Membership interface {
	Members() []mesh.Member
	// Changes receives (without blocking) after each membership change.
	Changes() <-chan struct{}
}

// HubConfig configures a Hub.
type HubConfig struct {
	// Name is this node's name.
	Name string
	// LB is the cluster-wide address allocation configuration.
	LB lb.Config
	// SubnetGrace is how long a node that is not alive keeps its subnet.
	SubnetGrace time.Duration
	// MinInterval is the least time between two snapshots: a burst of
	// changes becomes one (default 100ms).
	MinInterval time.Duration
	// Refresh rebuilds the snapshot at least this often, for what depends
	// on time (subnet grace) (default 5s).
	Refresh time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Hub builds snapshots from a Source, the membership and this node's own
// state, publishes the newest one and wakes its subscribers. Reading the
// newest snapshot takes no lock.
type Hub struct {
	cfg     HubConfig
	src     Source
	members Membership
	cur     atomic.Pointer[Snapshot]
	kick    chan struct{}

	mu    sync.Mutex
	local Local
	subs  []chan struct{}
	seq   uint64
	// lb is the last load-balancing state and what it was computed from.
	lb    *LB
	lbKey lbKey
	// build serializes builds, so that Seq and the LB cache follow one
	// order.
	build sync.Mutex
}

// NewHub returns a Hub; Run keeps it up to date.
func NewHub(cfg HubConfig, src Source, members Membership) *Hub {
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = 100 * time.Millisecond
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Hub{cfg: cfg, src: src, members: members, kick: make(chan struct{}, 1), local: Local{Name: cfg.Name}}
}

// Latest is the newest snapshot; Build makes one if there is none yet.
func (h *Hub) Latest() *Snapshot {
	if s := h.cur.Load(); s != nil {
		return s
	}
	return h.Build()
}

// Subscribe returns a channel that receives (without blocking the Hub)
// after each new snapshot.
func (h *Hub) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	h.subs = append(h.subs, ch)
	h.mu.Unlock()
	return ch
}

// Local is this node's own state as the next snapshot will have it.
func (h *Hub) Local() Local {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.local
}

// SetLocal changes this node's own state and asks for a new snapshot.
func (h *Hub) SetLocal(f func(*Local)) {
	h.mu.Lock()
	before := h.local
	f(&h.local)
	changed := h.local != before
	h.mu.Unlock()
	if changed {
		h.Kick()
	}
}

// Kick asks for a new snapshot.
func (h *Hub) Kick() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// Run rebuilds the snapshot after every change of the source, the
// membership or the local state, at most once per MinInterval, and at
// least once per Refresh, until ctx ends. A change that comes after a
// quiet spell is built at once (a failed member moves its VIPs without
// waiting); changes that come within MinInterval of a build wait for the
// rest of it and become one build.
func (h *Hub) Run(ctx context.Context) error {
	srcCh, unsub := h.src.Subscribe()
	defer unsub()
	refresh := time.NewTicker(h.cfg.Refresh)
	defer refresh.Stop()
	for {
		start := h.cfg.Now()
		h.Build()
		select {
		case <-ctx.Done():
			return nil
		case <-srcCh:
		case <-h.members.Changes():
		case <-h.kick:
		case <-refresh.C:
		}
		if wait := h.cfg.MinInterval - h.cfg.Now().Sub(start); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
	}
}

// Build makes a snapshot of the current state, publishes it and wakes the
// subscribers.
func (h *Hub) Build() *Snapshot {
	h.build.Lock()
	defer h.build.Unlock()
	now := h.cfg.Now()
	h.mu.Lock()
	local := h.local
	h.mu.Unlock()
	objs := h.src.Objects()
	s := &Snapshot{
		At:         now,
		Node:       local,
		Members:    h.members.Members(),
		Leases:     objs.Leases,
		NodeSubnet: objs.NodeSubnet,
		Policy:     objs.Policy,
		Services:   objs.Services,
		Pools:      objs.Pools,
		Endpoints:  objs.Endpoints,
		Gen:        objs.Gen,
	}
	s.Subnets = ipam.Resolve(s.Leases, s.Alive(), now, h.cfg.SubnetGrace)
	if s.Policy != nil {
		s.LB = h.lbState(s)
	}
	h.mu.Lock()
	h.seq++
	s.Seq = h.seq
	subs := h.subs
	h.mu.Unlock()
	h.cur.Store(s)
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return s
}

// lbKey is what the load-balancing state depends on.
type lbKey struct {
	pods, services, pools uint64
	candidates            string
}

// lbState computes the load-balancing state of s, or returns the previous
// one when its inputs did not change.
func (h *Hub) lbState(s *Snapshot) *LB {
	cand := Candidates(s)
	key := lbKey{pods: s.Gen.Pods, services: s.Gen.Services, pools: s.Gen.Pools, candidates: setKey(cand)}
	if h.lb != nil && h.lbKey == key {
		return h.lb
	}
	st := ComputeLB(h.cfg.LB, s, cand)
	if h.lb != nil {
		st.Gen = h.lb.Gen + 1
	} else {
		st.Gen = 1
	}
	h.lb, h.lbKey = st, key
	return st
}

// Candidates are the members that may announce VIPs and serve endpoints:
// alive, and not on their way out (a leaving node hands its VIPs over
// before it goes).
func Candidates(s *Snapshot) map[string]bool {
	out := map[string]bool{}
	for _, m := range s.Members {
		if m.State != mesh.StateAlive && m.State != mesh.StateSuspect {
			continue
		}
		if m.Meta.Leaving || (m.Self && s.Node.Leaving) {
			continue
		}
		out[m.Name] = true
	}
	return out
}

// ComputeLB is the load-balancing state of the snapshot's services, pools
// and pods, for the candidate nodes: pure.
func ComputeLB(cfg lb.Config, s *Snapshot, cand map[string]bool) *LB {
	st := &LB{Candidates: cand}
	st.Plan = lb.Allocate(cfg, s.Services, s.Pools, cand)
	// Pods of nodes that are gone cannot serve: their routes are gone. Nor
	// do new connections go to the pods of a node that is leaving: its
	// routes go when it gives its subnet back, possibly before its pods'
	// addresses are gone from every store (a new connection to them would
	// then meet the cluster CIDR's unreachable route).
	if s.Endpoints != nil {
		st.Endpoints = liveEndpoints(s.Endpoints, cand)
		st.Owners = lb.Owners(s.Services, st.Plan.Results, cand, st.Endpoints)
		return st
	}
	var pods []lb.Pod
	if s.Policy != nil {
		for _, p := range s.Policy.Pods {
			if !cand[p.Node] {
				continue
			}
			lp := lb.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, IP: p.IP, Node: p.Node, Ports: make(map[string]uint16, len(p.Ports)),
				Unready: p.Unready, Terminating: p.Terminating}
			for _, np := range p.Ports {
				lp.Ports[np.Name] = np.Port
			}
			pods = append(pods, lp)
		}
	}
	st.Endpoints = lb.AllEndpoints(s.Services, pods)
	st.Owners = lb.Owners(s.Services, st.Plan.Results, cand, st.Endpoints)
	return st
}

// liveEndpoints are the endpoints that can serve: on a candidate node, or
// on no node (an address outside the cluster). The slices of services
// whose endpoints all can are shared; when every endpoint can (the usual
// case) the map itself is: with 10,000 services a copy of it was 2 MB
// kept with every snapshot.
func liveEndpoints(all map[lb.ServiceKey][]lb.Endpoint, cand map[string]bool) map[lb.ServiceKey][]lb.Endpoint {
	dead := func(ep lb.Endpoint) bool { return ep.Node != "" && !cand[ep.Node] }
	shared := true
	for _, eps := range all {
		if len(eps) == 0 || slices.ContainsFunc(eps, dead) {
			shared = false
			break
		}
	}
	if shared {
		return all
	}
	out := make(map[lb.ServiceKey][]lb.Endpoint, len(all))
	for k, eps := range all {
		if slices.ContainsFunc(eps, dead) {
			eps = slices.DeleteFunc(slices.Clone(eps), dead)
		}
		if len(eps) > 0 {
			out[k] = eps
		}
	}
	return out
}

// setKey is a canonical string of a set of names.
func setKey(m map[string]bool) string {
	names := make([]string, 0, len(m))
	for n, ok := range m {
		if ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return strings.Join(names, "\x00")
}
