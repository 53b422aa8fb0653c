// Package clustertest has fakes of what a cluster.Hub reads, for the tests
// of the rooms and of the agent's wiring.
package clustertest

import (
	"sync"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/mesh"
)

// Members is a membership list (a cluster.Membership); Set replaces it and
// signals a change.
type Members struct {
	mu sync.Mutex
	ms []mesh.Member
	ch chan struct{}
}

// NewMembers returns a membership of ms.
func NewMembers(ms ...mesh.Member) *Members {
	return &Members{ms: ms, ch: make(chan struct{}, 1)}
}

// Members implements cluster.Membership.
func (f *Members) Members() []mesh.Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]mesh.Member(nil), f.ms...)
}

// Changes implements cluster.Membership.
func (f *Members) Changes() <-chan struct{} { return f.ch }

// Set replaces the members and signals the change.
func (f *Members) Set(ms ...mesh.Member) {
	f.mu.Lock()
	f.ms = ms
	f.mu.Unlock()
	select {
	case f.ch <- struct{}{}:
	default:
	}
}

// Alive are members called names, all alive; "n1" is this node.
func Alive(names ...string) []mesh.Member {
	var out []mesh.Member
	for _, n := range names {
		out = append(out, mesh.Member{Name: n, State: mesh.StateAlive, Self: n == "n1"})
	}
	return out
}

var _ cluster.Membership = (*Members)(nil)
