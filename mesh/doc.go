// Package mesh is netloom's view of the cluster: membership by gossip
// (hashicorp/memberlist, encrypted with the cluster key), the node metadata
// each member carries, and the pure topology (WireGuard peers and routes)
// derived from members and the agreed subnet table. The replicated object
// store lives in mesh/store and rides on the same gossip; the WireGuard
// device is in mesh/wg.
package mesh
