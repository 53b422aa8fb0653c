// Package drain keeps connections alive when a LoadBalancer VIP moves
// gracefully: a node leaving (`netloom leave`), an agent restart, a VIP of
// an externalTrafficPolicy Local service moving because its local
// endpoints went away. A connection to a VIP lives in the conntrack table
// of the node that owned the VIP when it began (the DNAT to the endpoint
// it picked is there); once the client's ARP entry points at the new
// owner, that node sees the connection's next packet without knowing it.
// With nf_conntrack_tcp_loose (the default) it would take the packet for
// a new connection, DNAT it to a random endpoint and the endpoint would
// answer with a reset.
//
// The new owner forwards such packets to the old owner instead, for the
// drain time (--vip-drain-timeout, DefaultTimeout): it marks the flows of
// a draining VIP that it has no conntrack entry for (a TCP packet that is
// `ct state new` but not a SYN: conntrack picked it up mid-stream; or one
// conntrack refused, `ct state invalid`, when loose pickup is off), keeps
// them from the service proxy's DNAT and routes them, by firewall mark and
// an ip rule, to the old owner's address on the LAN. The old owner still
// has the connection's conntrack entry and forwards it as before; its
// replies go to the client directly. New connections (SYNs) are the new
// owner's. The old owner keeps its data plane meanwhile: a leaving node
// waits until its connections to VIPs have ended, or the drain timeout
// passed, before it tears anything down (node.Agent's leave).
//
// What this package decides is pure (Step, Fragment, Routes) and
// table-tested; Router and the conntrack helpers are the kernel side,
// tested in network namespaces.
//
// # The decision
//
// Step is called with every cluster snapshot this node has heard the
// cluster in. For each VIP this node owns now that another node owned in
// the previous step, it starts a drain from that node: forward its flows
// until the drain timeout. A drain ends earlier when the old owner left
// the cluster (its data plane is gone), when it has been failed for
// DeadTimeout (a restarting agent is back by then; a node that died took
// its connections with it). When the old owner owns the VIP again the
// drain lives on, but takes up no new flows: the flows already forwarded
// still are (clients may send here until the old owner's gratuitous ARP
// reaches them), and a flow neither node knows cannot go back and forth
// between two nodes that each drain from the other. Drains do not end when this node stops owning the VIP: when the VIP
// moves on to a third node, that node forwards to this one, which
// forwards on to the first.
//
// An agent that starts has no previous step: for the VIPs it owns at its
// first step it assumes that the node that would own them without it had
// them while it was away (an agent restart that took longer than failure
// detection moved them there), and drains from it.
//
// # The kernel side
//
// Each old owner gets a slot, 1 to 255, kept while any drain from it
// lives; its mark is slot<<16 under MarkMask, in the conntrack entry of
// every flow forwarded to it (so later packets follow without another
// decision) and in the packets themselves, where `ip rule fwmark
// MARK/MarkMask lookup TableBase+slot` (priority RulePriority) finds a
// table whose default route goes via the old owner's address. Fragment
// adds to table inet netloom (only while something drains):
//
//	map drain-vips: VIP -> mark of its old owner
//	chain drain-prerouting (filter, prerouting, mangle):
//	  ct state new, our mark not set, TCP without SYN: ct mark set ip daddr map @drain-vips
//	  TCP, ct state invalid: meta mark set ip daddr map @drain-vips
//	  our ct mark set: meta mark set ct mark
//	chain drain-nat (nat, prerouting, dstnat - 1):
//	  our ct mark set: dnat ip to ip daddr
//
// The identity DNAT binds the flow's NAT before the proxy's nat chain
// (dstnat) runs: the kernel runs the nat chains of a hook only until one
// binds, so the proxy never DNATs a forwarded flow. When a drain ends its
// slot is freed and the conntrack entries carrying its mark are deleted,
// so that a slot given to another node later forwards nothing stale.
//
// The agent also turns ICMP redirects off (send_redirects): a node that
// forwards a packet back out of the interface it came in on would
// otherwise tell the client to send to the old owner directly.
//
// # Limits
//
//   - TCP only. A UDP packet carries no sign of belonging to an older flow;
//     UDP flows to a VIP that moved are DNATed afresh by the new owner.
//   - IPv4 VIPs only, like the service proxy.
//   - The old owner must be reachable on-link from the new one (the VIP's
//     candidates share the L2 segment the VIP is announced on; their
//     advertise addresses are expected there too).
//   - Hard failure of the old owner loses its connections (their state
//     lived there). Its drain lasts DeadTimeout: a node whose agent died
//     but whose kernel still forwards keeps them.
package drain
