// Package events keeps the agent's recent events (joins, leaves, deaths,
// subnet conflicts, rejected applies, ...) in a bounded ring and fans them
// out to followers: the `netloom events` command and the dashboard.
package events

import (
	"sync"
	"time"
)

// Kinds of events.
const (
	Join           = "join"
	Leave          = "leave"
	Dead           = "dead"
	SubnetClaimed  = "subnet-claimed"
	SubnetConflict = "subnet-conflict"
	// SubnetFull: no subnet could be claimed (the cluster CIDR is full).
	SubnetFull = "subnet-full"
	// SubnetRefused: the subnet the cluster assigned this node
	// (Kubernetes spec.podCIDR) cannot be used.
	SubnetRefused = "subnet-refused"
	ApplyRejected = "apply-rejected"
	Applied       = "applied"
	PodAttached   = "pod-attached"
	PodDetached   = "pod-detached"
	VIPConflict   = "vip-conflict"
	VIPFailover   = "vip-failover"
	// Repaired: kernel state netloom owns (its nftables table, a WireGuard
	// peer, a route, the pod bridge) had been changed by someone else and
	// was restored.
	Repaired = "repaired"
)

// Sink is where the agent's rooms report events (a *Log).
type Sink interface {
	Add(kind, subject, message string) Event
}

// Event is one thing that happened, seen by Node.
type Event struct {
	Time    time.Time `json:"time"`
	Node    string    `json:"node"`
	Kind    string    `json:"kind"`
	Subject string    `json:"subject,omitempty"`
	Message string    `json:"message"`
}

// Log is a bounded, concurrency-safe list of the newest events.
type Log struct {
	node string
	now  func() time.Time

	mu   sync.Mutex
	ring []Event
	next int
	full bool
	subs map[chan Event]struct{}
}

// NewLog keeps the newest capacity events seen by node.
func NewLog(node string, capacity int) *Log {
	if capacity <= 0 {
		capacity = 500
	}
	return &Log{node: node, now: time.Now, ring: make([]Event, capacity), subs: map[chan Event]struct{}{}}
}

// Add records an event and hands it to every follower; a follower that does
// not keep up loses events rather than slowing the agent down.
func (l *Log) Add(kind, subject, message string) Event {
	e := Event{Time: l.now().UTC(), Node: l.node, Kind: kind, Subject: subject, Message: message}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ring[l.next] = e
	l.next = (l.next + 1) % len(l.ring)
	if l.next == 0 {
		l.full = true
	}
	for ch := range l.subs {
		select {
		case ch <- e:
		default:
		}
	}
	return e
}

// List returns the kept events, oldest first.
func (l *Log) List() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.listLocked()
}

func (l *Log) listLocked() []Event {
	var out []Event
	if l.full {
		out = append(out, l.ring[l.next:]...)
	}
	return append(out, l.ring[:l.next]...)
}

// Follow returns the kept events and a channel of the ones that come after,
// atomically, so nothing is missed or seen twice. Call cancel when done.
func (l *Log) Follow(buffer int) (past []Event, ch <-chan Event, cancel func()) {
	c := make(chan Event, buffer)
	l.mu.Lock()
	past = l.listLocked()
	l.subs[c] = struct{}{}
	l.mu.Unlock()
	var once sync.Once
	return past, c, func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.subs, c)
			l.mu.Unlock()
		})
	}
}
