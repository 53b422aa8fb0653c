// Package cluster is the one picture of the cluster that every room of the
// agent works from, and the machinery that feeds it to them.
//
// A Source yields the objects (the gossip store in standalone mode; the
// Kubernetes API server, kube.Source, in Kubernetes mode). A Hub combines them with the
// membership and this node's own facts into an immutable Snapshot, rebuilt
// once per change, and wakes the controllers. Each controller (ipam, mesh,
// lb, the nftables data plane, the host side of CNI) runs in its own Loop:
// it takes the newest Snapshot, computes its desired state with pure
// functions, hands it to its applier and publishes its status. Nothing
// below the Snapshot knows where an object came from, and a slow room
// never stalls another.
//
// The package also holds the codecs of the kinds the agent writes to the
// store (subnet leases, pod addresses, service assignments), so that each
// has one home.
package cluster
