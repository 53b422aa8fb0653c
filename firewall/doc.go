// Package firewall owns netloom's nftables table, `inet netloom`.
//
// The package has two halves, kept apart so that the first is testable
// without root:
//
//   - Ruleset is a pure function from a Config (cluster CIDR, interfaces) to
//     a Model: the whole table as chains, sets and rules. Every Rule carries
//     its nft text (what `nft list table` prints, used for golden files and
//     logs) next to the expressions that are sent to the kernel.
//   - Applier installs a Model in ONE nf_tables transaction, so packets see
//     either the old table or the new one, never a half. The first Apply
//     replaces the table wholesale (add table, delete table, add table and
//     its content); later ones send only the difference to the model
//     applied before (new chains, sets and counters; chains whose rules
//     changed flushed and refilled; set and map elements added and deleted;
//     what is gone deleted last), and fall back to the replacement when a
//     base chain or a set definition changes or the kernel refuses.
//
// The table is owned by netloom: nothing else should add to it; what is
// added by hand goes at the next full replacement (Invalidate forces one).
// Other tables (a host
// firewall, Docker, kube-proxy) are left alone. Note that an accept verdict
// in our forward chain does not override a drop in another table's forward
// chain: each base chain on a hook is evaluated and any drop wins.
//
// Today the table holds masquerading for pod traffic leaving the cluster
// CIDR and explicit accepts for forwarding through the pod bridge and the
// WireGuard interface. Service NAT and NetworkPolicy add chains, sets and
// verdict maps to the same Model later.
package firewall
