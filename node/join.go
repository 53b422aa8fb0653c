package node

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/mesh"
)

// joinLoop contacts --join addresses and the members this node knew before
// a restart, retrying until one answers.
func (a *Agent) joinLoop(ctx context.Context) error {
	peersFile := filepath.Join(a.cfg.DataDir, PeersFile)
	var known []string
	if b, err := os.ReadFile(peersFile); err == nil {
		if err := json.Unmarshal(b, &known); err != nil {
			// Only a hint for the next start: rewritten once the node has
			// joined, so a damaged copy costs nothing but this start's hint.
			known = nil
			a.log.Warn("peer list is corrupt; joining through --join and the WireGuard peers instead, and writing it again once joined", "file", peersFile, "err", err)
		}
	}
	addrs := append(append([]string{}, a.cfg.Join...), known...)
	self := a.members.LocalAddr().String()
	var targets []string
	for _, t := range addrs {
		if t != "" && t != self && t != a.cfg.advertise.String() {
			targets = append(targets, t)
		}
	}
	if len(targets) == 0 {
		// A restart that lost its peer list: the WireGuard peers still on
		// the device are the cluster's nodes; their gossip is likely on
		// this node's port.
		targets = a.peerGuesses()
	}
	if len(targets) == 0 {
		a.joinAlone(ctx)
	}
	delay := time.Second
	startedAt := time.Now()
	logged := false
	for len(targets) > 0 {
		n, err := a.members.Join(targets)
		if n > 0 {
			a.log.Info("joined cluster", "contacted", n)
			a.setJoined()
			break
		}
		if !logged || time.Since(startedAt) > time.Minute {
			a.log.Warn("cannot join the cluster yet; retrying", "err", err)
			logged, startedAt = true, time.Now()
		}
		if time.Since(startedAt) > 10*time.Second && !mesh.IsTokenRefused(err) {
			// Nobody answered for a while: go on alone rather than hold the
			// data plane back; joining continues in the background. A
			// member that refused our token is a configuration error, not
			// an outage: this node waits for the right token.
			a.setJoined()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		if delay < 10*time.Second {
			delay *= 2
		}
	}
	// Remember who is in the cluster, for the next start: soon after it
	// changes, so that a restart shortly after the cluster formed finds it.
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	saved := ""
	for {
		saved = a.savePeers(peersFile, saved)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// peerGuesses are join targets from the WireGuard peers on the device: each
// endpoint's address with this node's gossip port.
func (a *Agent) peerGuesses() []string {
	stats, err := a.dev.Stats()
	if err != nil {
		a.log.Warn("no WireGuard peers to guess members from", "err", err)
		return nil
	}
	var out []string
	for _, ps := range stats {
		if ps.Endpoint.IsValid() {
			out = append(out, netip.AddrPortFrom(ps.Endpoint.Addr(), uint16(a.cfg.GossipPort)).String())
		}
	}
	sort.Strings(out)
	return out
}

// joinAlone handles a start without anybody to join. A new cluster's first
// node is joined at once. A node that was in a cluster before (its store
// holds other nodes' subnet leases) but knows no address to call waits
// until the others reach it (their probes and push/pull find it) or 10 s
// pass, keeping the peers and routes it finds meanwhile: before, it
// programmed an empty overlay at once and cut its pods off.
func (a *Agent) joinAlone(ctx context.Context) {
	others := false
	for _, l := range a.hub.Latest().Leases {
		if l.Node != a.cfg.Name {
			others = true
		}
	}
	if others {
		a.log.Info("no member address known; waiting for the cluster to reach this node")
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && len(a.members.Alive()) < 2 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	a.setJoined()
}

// savePeers writes the alive members' gossip addresses when they differ
// from what was saved (saved) and returns what the file now holds.
func (a *Agent) savePeers(path, saved string) string {
	var list []string
	for _, m := range a.members.Members() {
		if !m.Self && m.State == mesh.StateAlive {
			list = append(list, netip.AddrPortFrom(m.Addr, uint16(m.Port)).String())
		}
	}
	if len(list) == 0 {
		return saved
	}
	sort.Strings(list)
	b, _ := json.Marshal(list)
	if string(b) == saved {
		return saved
	}
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return saved
	}
	return string(b)
}

func (a *Agent) setJoined() {
	a.hub.SetLocal(func(l *cluster.Local) { l.Joined = true })
}
