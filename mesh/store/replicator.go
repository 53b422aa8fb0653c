package store

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Message tags: the first byte of every message the Replicator sends. The
// rest is the JSON array of entries; for TagState it is gzip-compressed.
const (
	TagEntries byte = 'E' // gossip broadcast or reliable send
	TagState   byte = 'S' // push/pull state (LocalState / MergeRemoteState)
)

const (
	// MaxBroadcast is the largest message queued for UDP gossip. Larger
	// entries go through Transport.SendToAll. memberlist's default UDP
	// buffer is 1400 bytes, shared with its own messages and headers.
	MaxBroadcast = 1200
	// RetransmitMult scales how often each broadcast is gossiped
	// (RetransmitMult * ceil(log10(members+1)) times).
	RetransmitMult = 3
	// maxQueued bounds the broadcast queue; push/pull repairs what a
	// pruned broadcast would have carried.
	maxQueued = 4096
	// maxStateBytes bounds a decompressed push/pull state.
	maxStateBytes = 256 << 20
	// MailMax: the entries of a local write of at most MailMax entries
	// are also mailed, each in its own packet, to every member (when the
	// Transport is a Mailer).
	MailMax = 8
	// GreetMax and GreetWindow bound Greeting: at most the GreetMax
	// latest local writes, none older than GreetWindow.
	GreetMax    = 8
	GreetWindow = 30 * time.Second
)

// Transport is the part of memberlist the Replicator needs.
type Transport interface {
	// NumMembers returns the number of alive members, this node included.
	NumMembers() int
	// SendToAll sends msg reliably (TCP) to every other alive member.
	SendToAll(msg []byte)
}

// Mailer is an optional part of a Transport.
type Mailer interface {
	// SendBestEffortToAll sends msg to every other alive member in one
	// packet each (UDP), without retries.
	SendBestEffortToAll(msg []byte)
}

// Replicator spreads store entries over memberlist: small entries by
// gossip broadcast (memberlist.TransmitLimitedQueue), large ones by a
// reliable send to every member, and the whole store by push/pull
// anti-entropy. Its methods other than Publish, Apply and Greeting are
// meant to be called from a memberlist.Delegate.
//
// A broadcast has a transmit budget, spent in the first second or so; a
// member it misses (one not yet known to the members gossiping it while
// many join at once, or just not picked) would wait for push/pull, every
// 15 s or more. So a small local write is also mailed directly to every
// member this node knows (Mailer), and a member it learns of later is
// greeted with its latest writes (Greeting).
type Replicator struct {
	s   *Store
	t   Transport
	q   *memberlist.TransmitLimitedQueue
	log *slog.Logger

	mu sync.Mutex // orders "check version, queue" against other queuers
	// recent are the latest local writes that fit a broadcast, for
	// Greeting (at most GreetMax, oldest first).
	recent []published

	// OnRemote, when set before memberlist starts, is called with the
	// entries a broadcast from another node changed here (for the sync lag
	// metric). It must not block.
	OnRemote func(changed []Entry)
}

// NewReplicator returns a Replicator for s over t.
func NewReplicator(s *Store, t Transport) *Replicator {
	return &Replicator{
		s: s,
		t: t,
		q: &memberlist.TransmitLimitedQueue{
			NumNodes:       t.NumMembers,
			RetransmitMult: RetransmitMult,
		},
		log: s.log.With("component", "replicator"),
	}
}

// Apply applies puts and dels to the store and publishes the result.
func (r *Replicator) Apply(puts []Put, dels []Key) ([]Entry, error) {
	es, err := r.s.Apply(puts, dels)
	if err != nil {
		return nil, err
	}
	r.Publish(es)
	return es, nil
}

// Publish queues entries for gossip. An entry whose message fits in
// MaxBroadcast bytes becomes its own broadcast, replacing any queued
// broadcast of the same key; a larger one is sent with Transport.SendToAll
// (before Publish returns). Entries older than the store's current version
// of their key are skipped: the newer one is, or was, published instead.
func (r *Replicator) Publish(entries []Entry) {
	// A bulk write (a large manifest) would overflow the broadcast queue
	// and then spread only at push/pull pace: it goes to every member
	// reliably in messages of up to bulkBatch entries instead.
	if len(entries) > bulkThreshold {
		for i := 0; i < len(entries); i += bulkBatch {
			batch := entries[i:min(i+bulkBatch, len(entries))]
			msg, err := encodeEntries(batch)
			if err != nil {
				r.log.Warn("cannot encode entries", "count", len(batch), "err", err)
				continue
			}
			r.t.SendToAll(msg)
		}
		return
	}
	large, small := r.queue(entries, true)
	for _, msg := range large {
		r.t.SendToAll(msg)
	}
	// Not under r.mu: a Mailer takes memberlist's locks.
	if m, ok := r.t.(Mailer); ok && len(small) <= MailMax {
		for _, msg := range small {
			m.SendBestEffortToAll(msg)
		}
	}
}

// Publish sends writes of more than bulkThreshold entries reliably, in
// messages of bulkBatch entries.
const (
	bulkThreshold = 64
	bulkBatch     = 1000
)

// queue queues the broadcastable entries and, when local is set (a local
// write), remembers them for Greeting and returns their messages (small)
// and those of the others (large).
func (r *Replicator) queue(entries []Entry, local bool) (large, small [][]byte) {
	if len(entries) == 0 {
		return nil, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.s.opt.Now()
	for _, e := range entries {
		if cur, ok := r.s.lookup(e.Key); ok && e.Version.Less(cur.Version) {
			continue
		}
		msg, err := encodeEntries([]Entry{e})
		if err != nil {
			r.log.Warn("cannot encode entry", "key", e.Key.String(), "err", err)
			continue
		}
		if len(msg) > MaxBroadcast {
			if local {
				large = append(large, msg)
			}
			continue
		}
		r.q.QueueBroadcast(&broadcast{key: e.Key, msg: msg})
		if local {
			small = append(small, msg)
			r.recent = remember(r.recent, published{key: e.Key, version: e.Version, msg: msg, at: now}, GreetMax)
		}
	}
	if r.q.NumQueued() > maxQueued {
		r.q.Prune(maxQueued)
	}
	return large, small
}

// published is a local write's broadcast message, kept for Greeting.
type published struct {
	key     Key
	version Version
	msg     []byte
	at      time.Time // when it was published
}

// remember appends p to recent (oldest first), dropping an older write of
// the same key and then the oldest beyond limit.
func remember(recent []published, p published, limit int) []published {
	recent = slices.DeleteFunc(recent, func(o published) bool { return o.key == p.key })
	recent = append(recent, p)
	if over := len(recent) - limit; over > 0 {
		recent = slices.Delete(recent, 0, over)
	}
	return recent
}

// greeting returns the messages of the recent writes to greet a member
// with, newest first: those published within window before now and still
// the store's version of their key (current).
func greeting(recent []published, now time.Time, window time.Duration, current func(Key) (Version, bool)) [][]byte {
	var out [][]byte
	for i := len(recent) - 1; i >= 0; i-- {
		p := recent[i]
		if now.Sub(p.at) > window {
			break // older still before it
		}
		if v, ok := current(p.key); !ok || v != p.version {
			continue // superseded: the newer version spreads by itself
		}
		out = append(out, p.msg)
	}
	return out
}

// Greeting returns the messages to send, best effort, to a member this
// node has just learned of: its latest local writes (at most GreetMax, of
// the last GreetWindow, that fit a broadcast and are still current). Their
// broadcasts may have been spent before that member was known to anyone
// gossiping them, and push/pull would bring them only much later. Large
// and bulk writes are not included; push/pull brings those.
func (r *Replicator) Greeting() [][]byte {
	r.mu.Lock()
	recent := slices.Clone(r.recent)
	r.mu.Unlock()
	return greeting(recent, r.s.opt.Now(), GreetWindow, func(k Key) (Version, bool) {
		e, ok := r.s.lookup(k) // tombstones too: a delete must spread
		return e.Version, ok
	})
}

// NumQueued returns the number of queued broadcasts.
func (r *Replicator) NumQueued() int { return r.q.NumQueued() }

// NotifyMsg handles a user message from memberlist. Entries that change the
// local store are queued for gossip again, so an update spreads even when
// its origin gossiped it only a few times. Garbage is logged and dropped.
func (r *Replicator) NotifyMsg(b []byte) {
	if len(b) == 0 {
		return
	}
	if b[0] != TagEntries {
		r.log.Debug("ignoring message with unknown tag", "tag", b[0], "len", len(b))
		return
	}
	var es []Entry
	if err := json.Unmarshal(b[1:], &es); err != nil {
		r.log.Warn("dropping undecodable message", "len", len(b), "err", err)
		return
	}
	changed := r.s.Merge(es)
	if r.OnRemote != nil && len(changed) > 0 {
		r.OnRemote(changed)
	}
	// A broadcast carries one entry. Messages of several (bulk writes) and
	// large entries came reliably from their origin to every member: they
	// are not gossiped again. Re-queued, a bulk write of thousands would
	// hold back this node's own later broadcasts (memberlist sends the
	// least transmitted, then the largest, first) until push/pull.
	if len(es) == 1 {
		r.queue(changed, false)
	}
}

// GetBroadcasts returns queued broadcasts that fit in limit bytes, each
// costing overhead bytes extra.
func (r *Replicator) GetBroadcasts(overhead, limit int) [][]byte {
	return r.q.GetBroadcasts(overhead, limit)
}

// LocalState returns the whole store, tombstones included, for push/pull.
func (r *Replicator) LocalState(join bool) []byte {
	var buf bytes.Buffer
	buf.WriteByte(TagState)
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err := json.NewEncoder(zw).Encode(r.s.All()); err != nil {
		r.log.Warn("cannot encode local state", "err", err)
		return nil
	}
	if err := zw.Close(); err != nil {
		r.log.Warn("cannot compress local state", "err", err)
		return nil
	}
	return buf.Bytes()
}

// MergeRemoteState merges a remote LocalState into the store. What it
// changes is not gossiped again: push/pull is itself the repair path, and a
// joiner learning the whole store must not flood the cluster.
func (r *Replicator) MergeRemoteState(buf []byte, join bool) {
	es, err := decodeState(buf)
	if err != nil {
		r.log.Warn("dropping remote state", "len", len(buf), "join", join, "err", err)
		return
	}
	if changed := r.s.Merge(es); len(changed) > 0 {
		r.log.Debug("merged remote state", "entries", len(es), "changed", len(changed), "join", join)
	}
}

func encodeEntries(es []Entry) ([]byte, error) {
	b, err := json.Marshal(es)
	if err != nil {
		return nil, err
	}
	return append([]byte{TagEntries}, b...), nil
}

func decodeState(buf []byte) ([]Entry, error) {
	if len(buf) == 0 {
		return nil, nil // the remote sent no state (e.g. no delegate)
	}
	if buf[0] != TagState {
		return nil, fmt.Errorf("unknown tag %#x", buf[0])
	}
	zr, err := gzip.NewReader(bytes.NewReader(buf[1:]))
	if err != nil {
		return nil, fmt.Errorf("decompress state: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(zr, maxStateBytes+1))
	if err != nil {
		return nil, fmt.Errorf("decompress state: %w", err)
	}
	if len(data) > maxStateBytes {
		return nil, errors.New("decompress state: larger than the limit")
	}
	var es []Entry
	if err := json.Unmarshal(data, &es); err != nil {
		return nil, fmt.Errorf("decode state: %w", err)
	}
	return es, nil
}

// broadcast is one entry's gossip message. A newer broadcast of the same
// key replaces an older one in the queue.
type broadcast struct {
	key Key
	msg []byte
}

var _ memberlist.NamedBroadcast = (*broadcast)(nil)

func (b *broadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*broadcast)
	return ok && ob.key == b.key
}

// Name identifies the key without ambiguity (parts may contain '/').
func (b *broadcast) Name() string {
	k := b.key
	return fmt.Sprintf("%d:%s%d:%s%s", len(k.Kind), k.Kind, len(k.Namespace), k.Namespace, k.Name)
}

func (b *broadcast) Message() []byte { return b.msg }
func (b *broadcast) Finished()       {}
