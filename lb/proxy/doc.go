// Package proxy compiles netloom's service proxy: the nftables rules that
// send connections for a ClusterIP:port, a LoadBalancer VIP:port, an
// external IP:port or a node port on an address of this node to the
// service's endpoints. Compile is pure: it turns an Input (this node, the
// services with their allocated addresses and node ports, their
// endpoints, the node port addresses) into
// an nft.Model fragment of table inet netloom, to be merged with the
// other fragments (nft.Merge) and installed by nft.Applier. It is
// table-tested and golden-tested without root; the kernel tests apply it in
// network namespaces they create and send real packets through it. A
// Compiler (NewCompiler) gives the same Models for a sequence of Inputs,
// compiling again only the services that changed.
//
// # Shape (kube-proxy's nftables mode, taken one step further)
//
// A few static base chains look the connection up in one verdict map keyed
// by `ip daddr . meta l4proto . th dport` (svc-ips: ClusterIPs, VIPs and
// external IPs alike); everything that depends on the services is
// elements of table-wide maps, and the chains below the maps are shared by
// every service with the same number of endpoints (svc-pick-N,
// svc-local-N-M). A change of services or endpoints is therefore an
// element diff, and the per-packet cost (one map lookup in the nat chains
// for the first packet of a connection, one in the filter chains) does not
// depend on the number of services.
//
// Node ports, as in kube-proxy's nftables mode, are a second rule after
// the address lookup in the same base chains: `ip daddr
// @svc-nodeport-addrs fib daddr type local meta l4proto . th dport vmap
// @svc-nodeports`, one lookup keyed by protocol and port, reached only for
// destinations that are addresses of this node inside
// Input.NodePortAddresses (an interval set; 0.0.0.0/0 is every address;
// loopback is cut out, as a DNAT from 127.0.0.1 would need
// route_localnet). Since the destination is any node address, node ports
// have their own maps and shared chains keyed by `meta l4proto . th dport`
// alone: svc-filter-nodeports, svc-np-eps, svc-np-local-eps,
// svc-np-ep-chains..., svc-np-pick-N, svc-np-local-N-M, svc-np-aff-pick-N.
// A connection to no service costs, besides the address lookup, up to one set
// lookup and one fib lookup in the nat chains (first packet only) and in
// the filter chains (new connections only).
//
// Endpoint choice is `numgen random mod N` concatenated to the destination
// the client used: `dnat ip to ip daddr . meta l4proto . th dport . numgen
// random mod N map @svc-eps`, where svc-eps holds, for every service
// address and port, N elements "addr . proto . port . index : endpoint".
// kube-proxy instead writes a chain per service with an anonymous vmap and
// a chain per endpoint. Both per-service alternatives were measured here
// and scale badly in the kernel:
//
//   - one named map shared by a rule per service: every rule that binds a
//     map walks all of its elements (nf_tables_bind_set), and every element
//     added walks all the rules bound to the map, so 10,000 services x 10
//     endpoints took 64 s to install;
//   - a named or anonymous set per service: sets are found by name, and
//     anonymous names allocated, by walking the table's list of sets.
//
// With shared chains a map is bound by a handful of rules: the full table
// of 10,000 services x 10 endpoints installs in well under a second.
//
// # Policies and endpoints
//
// New connections go to the endpoints that are Ready or, when a service
// port has none, to its serving terminating ones (KEP-1669; lb.Backends).
// The same rule picks the local endpoints apart (lb.LocalBackends): with
// no Ready endpoint on this node its serving terminating ones are used,
// even when other nodes have Ready ones. Connections already open keep
// their endpoint whatever happens to it (conntrack keeps the DNAT; the
// nat chains see only a connection's first packet, and every reject and
// drop of the filter chains is behind `ct state new`).
//
// externalTrafficPolicy applies to the external ways in: the VIP, the
// external IPs (served on every node like a VIP; netloom does not announce
// them, the operator routes them) and the node port. Local sends traffic
// from outside only to this node's endpoints (svc-local-eps,
// svc-np-local-eps) and keeps the client's address; when the node has
// none it drops it (the VIP's owner is always a node with a local
// endpoint; a node port or external IP on a node without one drops, it
// does not forward). The node's own connections and its pods' go to every
// endpoint, as kube-proxy does. With Cluster every endpoint is a
// candidate.
//
// internalTrafficPolicy Local sends ClusterIP connections only to this
// node's endpoints (svc-pick-local-M on svc-local-eps keyed by the
// ClusterIP), from every source, and drops them when the node has none
// (the svc-ips element is `drop`), as kube-proxy does; the external ways in
// are not affected.
//
// Services that are not proxied (lb.Service.Proxied: headless,
// ExternalName) get no rules.
//
// Source translation happens in svc-postrouting, decided by where the
// connection goes rather than by a packet mark: a DNATed connection from
// outside the cluster CIDR (another host, or this node itself) that leaves
// through the mesh interface to an endpoint on another node gets the node's
// pod gateway address as source, so the reply comes back through this node
// (and WireGuard on the other side accepts only this node's pod addresses
// from it). Pods keep their address (pod addresses route over the mesh).
// A pod that reaches itself through a service (hairpin, svc-hairpin) gets
// the gateway address too, or it would answer itself directly. Connections
// from outside to an endpoint on this node keep the client's address.
//
// loadBalancerSourceRanges are elements of one interval set (svc-allow,
// VIP . proto . port . range) checked in filter chains before DNAT; they
// apply to every source, the node's own connections included, and to the
// VIP only (not to external IPs or node ports, as in kube-proxy). Service
// ports without any endpoint are rejected (TCP reset, otherwise ICMP port
// unreachable) on every way in, like kube-proxy.
//
// sessionAffinity ClientIP follows kube-proxy: a dynamic set per endpoint
// remembers clients (the timeout, sessionAffinityConfig's or 3 h, is set by
// the `update` statement, as Model has no per-set timeout), and the
// service port's chain sends a remembered client to its endpoint before
// picking one at random. The sets are the service port's, whatever way in
// the client used; each way in has its chain (svc-sticky-, -local-,
// -internal-, -np-, -np-local-). This costs one set lookup per endpoint for a new
// connection of an affinity service only. jhash over the client address
// would be stateless, but every endpoint change would move clients, and it
// has no timeout.
//
// # Incremental compilation
//
// Compile is a fresh Compiler's Compile. An agent keeps one Compiler and
// calls its Compile on every reconcile pass: it returns the same Model as
// Compile, but compiles again only the service ports whose fragment (their
// elements of each map, their sets and chains, the shared chains they use)
// is made of something that changed, and assembles the Model from the
// fragments in Compile's order. What a fragment is made of is compared
// exactly, not hashed: the Input is walked on every call (sorting the
// services, resolving address and node port conflicts, which are global,
// and each port's backends), which for 10,000 services x 10 endpoints takes a few
// milliseconds, against about 100 ms for a whole Compile. The element
// lists of the maps whose fragments did not change are the last Model's;
// the others are copied anew (a Model, once returned, is never modified).
// The Compiler holds its last Model's elements and about 10% more.
//
// # Requirements and limits
//
//   - IPv4 only: IPv6 service and external addresses, source ranges and
//     node port prefixes are skipped and reported by Skipped; IPv6
//     endpoints are ignored (an IPv6 Ready endpoint does not keep the
//     IPv4 ones from falling back to terminating ones).
//   - Node ports are served when lb.Service.NodePorts is set, for each
//     port with a non-zero ServiceAddrs.NodePorts entry. A node port or an
//     address and port used by two services goes to the first by
//     namespace/name; the other is reported by Skipped. The health-check
//     node port is not the proxy's (the agent's HTTP server answers it).
//   - br_netfilter must not call the IP hooks for the pod bridge
//     (net.bridge.bridge-nf-call-iptables=0 in the node's namespace): with
//     it, a DNAT to a pod behind the same bridge becomes a bridged frame,
//     which the isolated ports of node/cni (and the hairpin case) drop.
//   - The node needs a route for ClusterIPs (the default route does) for
//     its own connections to them.
//   - `nft list` shows the table faithfully, but nft cannot read it back
//     (`nft -f`): numgen keys a map whose index field has type mark, which
//     nft's parser refuses. The table is netloom's and rebuilt by the agent.
//   - Existing connections keep their endpoint when endpoints change (as
//     with kube-proxy, the agent should delete UDP conntrack entries of a
//     removed endpoint). A UDP flow whose server never answered is still
//     `ct state new`: it meets the no-endpoints reject like a new one.
package proxy
