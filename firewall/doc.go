// Package firewall is what the host's own firewall says in netloom's
// nftables table, `inet netloom` (TableFamily, TableName): masquerading for
// pod traffic leaving the cluster CIDR, and explicit accepts for forwarding
// through the pod bridge and the WireGuard interface.
//
// Ruleset is a pure function from a Config (cluster CIDR, interfaces) to an
// nft.Model of two base chains. The service proxy (lb/proxy) and the
// NetworkPolicy compiler (firewall/policy) compute their own fragments of
// the same table; the agent joins them with nft.Merge and installs the
// result with an nft.Applier in one transaction per change. Package nft
// holds the table's representation and transport; this package names the
// table and holds only the ruleset.
//
// The table is owned by netloom: nothing else should add to it; what is
// added by hand goes at the next full replacement. Other tables (a host
// firewall, Docker, kube-proxy) are left alone. Note that an accept verdict
// in our forward chain does not override a drop in another table's forward
// chain: each base chain on a hook is evaluated and any drop wins.
package firewall
