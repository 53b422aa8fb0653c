// Package ipam decides which pod subnet each node of the cluster owns, and
// hands out pod addresses from the local node's subnet.
//
// # Subnet agreement
//
// There is no leader and no lock. Every node writes one [Lease] for itself
// into the replicated store (Kind [LeaseKind], Namespace "", Name = node
// name) and every node computes the same [Table] from the same leases with
// [Resolve]:
//
//   - a lease of an alive node is active; a lease of a node that is not
//     alive stays active (reserved) until Renewed+grace, then it is ignored;
//   - among active leases whose subnets are equal or overlap, the earliest
//     claim (Claimed, ClaimedSeq, then the lower node name) wins; the others
//     are losers and must pick again;
//   - except that a lease which had lapsed (not renewed for grace) when an
//     overlapping claim was made loses to it: a node that comes back after
//     its subnet was given away picks a new one.
//
// A node takes a subnet with [PickFree] (or [Claim], which also keeps and
// renews a lease that still wins). PickFree starts scanning at an offset
// derived from a hash of the node name, so nodes joining at the same time
// rarely pick the same subnet; when they do, Resolve names one winner and
// the others re-pick in the next round. Since a later claim never beats an
// earlier lease that is kept renewed, every round settles at least one
// contested subnet and the cluster converges. After a partition heals the
// same rule applies: the claim made first keeps the subnet.
//
// A lease keeps its Claimed time for as long as the node holds the subnet;
// renewals only move Renewed forward, and must come more often than grace.
// Claimed should come from the store's hybrid logical clock (wall
// milliseconds and logical counter as ClaimedSeq) so that claims made on
// different nodes order sensibly.
//
// # Pod addresses
//
// [Allocator] hands out addresses of the node subnet to pod interfaces and
// persists them in a JSON file written atomically. It never hands out the
// network address, the gateway (the first address, see [Gateway]) or the
// last address, and it continues after the last address it handed out, so a
// released address is not reused at once.
//
// Everything that decides is a pure function; only the Allocator touches the
// disk.
package ipam
