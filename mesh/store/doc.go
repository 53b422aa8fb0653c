// Package store is netloom's replicated object store: every node keeps a
// full copy of the cluster's objects (namespaces, pods, subnet leases, ...)
// and the copies converge by gossip, without a leader or a quorum.
//
// # Model
//
// The store maps a Key (Kind, Namespace, Name) to an Entry: a JSON value, or
// a tombstone when the object was deleted, stamped with a Version. Versions
// come from a hybrid logical clock (HLC): Wall is unix milliseconds,
// Logical orders events inside one millisecond and Node breaks ties, so two
// versions are never equal unless they are the same write. The clock never
// goes backwards: a local write is stamped max(wall clock, newest version
// issued or seen) with the logical counter bumped when the wall clock is not
// ahead, and every remote version a node merges moves its clock forward. A
// write made after seeing another is therefore always newer than it, even
// when the writers' wall clocks disagree.
//
// Conflicts resolve by last-writer-wins on Version: Merge keeps, per key,
// the entry with the greatest Version. Deletes are tombstones that take
// part in the same rule, so a delete beats older writes and loses to newer
// ones; Merge is idempotent and commutative, and all nodes that have seen
// the same entries hold the same state, whatever the order of arrival.
// Tombstones are kept for Options.TombstoneTTL (48h by default) and dropped
// by Expire; a node partitioned for longer can resurrect an object deleted
// meanwhile, which is the price of bounded tombstones.
//
// Apply is the local write: many puts and deletes, validated first and
// applied all or nothing, each changed key with its own HLC tick. It
// returns the entries to replicate; writes that change nothing (same value
// bytes, delete of a missing key) produce none. Values are JSON, stored
// compacted.
//
// # Persistence
//
// The store lives in dir/store.json (mode 0600, dir 0700), one entry per
// line, tombstones included, rewritten atomically (temporary file, fsync,
// rename, fsync of the directory) on every change before Apply returns. A
// failed write makes Apply fail and leave memory unchanged; a failed write
// after Merge or Expire is logged and retried by the next change, Flush or
// Close. Open seeds the HLC from the newest version on disk.
//
// # Replication
//
// A Replicator carries entries over hashicorp/memberlist, hooked in through
// the mesh package's memberlist.Delegate:
//
//   - Publish queues each entry as its own gossip broadcast in a
//     memberlist.TransmitLimitedQueue (a newer broadcast of a key replaces
//     the queued older one); entries too large for one UDP packet
//     (MaxBroadcast) are sent over TCP to every member with
//     Transport.SendToAll.
//   - A local write of at most MailMax entries is also mailed, one entry
//     per UDP packet, to every member this node knows (when the Transport
//     is a Mailer, as mesh.Membership is), and a member learned of later
//     is sent this node's latest writes (Greeting, called by the mesh
//     package when memberlist reports a join). A broadcast's transmit
//     budget is spent within a second or so, on the members its gossipers
//     know then; without these, a member missed (many joining at once, or
//     simply not picked) waited for the next push/pull.
//   - NotifyMsg merges received entries and queues the ones that changed
//     local state for gossip again, so updates spread epidemically even when
//     their origin gossiped them only a few times; the queue's transmit
//     limit bounds the traffic.
//   - LocalState and MergeRemoteState exchange the whole store, tombstones
//     included (gzip-compressed JSON), on memberlist's periodic push/pull
//     and on join: the anti-entropy that repairs lost broadcasts and brings
//     joiners up to date.
//
// Messages start with a one-byte tag (TagEntries, TagState) followed by a
// JSON array of entries.
//
// Subscribers (Subscribe) get a kick on a capacity-1 channel after every
// change, the input of the reconcile loops that derive kernel state from
// the store.
package store
