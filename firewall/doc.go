// Package firewall owns netloom's nftables table, `inet netloom`.
//
// The package has two halves, kept apart so that the first is testable
// without root:
//
//   - Ruleset is a pure function from a Config (cluster CIDR, interfaces) to
//     a Model: the whole table as chains, sets and rules. Every Rule carries
//     its nft text (what `nft list table` prints, used for golden files and
//     logs) next to the expressions that are sent to the kernel.
//   - Applier installs a Model in ONE nf_tables transaction that replaces the
//     table wholesale (add table, delete table, add table and its content),
//     so packets see either the old table or the new one, never a half.
//
// The table is owned by netloom: nothing else should add to it, and
// everything in it is replaced on every Apply. Other tables (a host
// firewall, Docker, kube-proxy) are left alone. Note that an accept verdict
// in our forward chain does not override a drop in another table's forward
// chain: each base chain on a hook is evaluated and any drop wins.
//
// Today the table holds masquerading for pod traffic leaving the cluster
// CIDR and explicit accepts for forwarding through the pod bridge and the
// WireGuard interface. Service NAT and NetworkPolicy add chains, sets and
// verdict maps to the same Model later.
package firewall
