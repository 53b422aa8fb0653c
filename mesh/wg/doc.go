// Package wg owns the node's WireGuard device: its key, the link, the peers
// and the routes that point pod subnets of other nodes into the tunnel.
//
// The device runs in one of two modes. In kernel mode the link is a kernel
// "wireguard" link configured over generic netlink. In userspace mode the link
// is a TUN device driven by an embedded wireguard-go, which runs in a separate
// process, the companion (`netloom wg-companion`, see RunCompanion), so that
// the data plane outlives restarts of the agent. The companion serves the
// standard UAPI socket at /var/run/wireguard/<iface>.sock, so wgctrl and
// wg(8) work the same in both modes. Mode "auto" uses the kernel when a
// wireguard link can be created and falls back to userspace otherwise.
//
// Open adopts an existing link without flushing it, which is how an agent
// restart keeps packets flowing. SetPeers and SetRoutes may be called again
// and again with the whole desired state; they compute the difference with
// PeerConfig and RouteDiff, pure functions that are table-tested, and touch
// only what changed, so established handshakes are never disturbed.
//
// Routes installed by this package carry the route protocol RouteProtocol
// (78, "netloom"); routes of other protocols on the link are left alone.
package wg
