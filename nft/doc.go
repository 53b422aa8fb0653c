// Package nft is netloom's nftables layer: a table as a plain value, and
// the transport that installs it in the kernel. It knows nothing of what
// the rules are for; the masquerade ruleset (firewall), the NetworkPolicy
// compiler (firewall/policy) and the service proxy (lb/proxy) each compute
// a fragment with it, and the agent merges them into one table.
//
//   - Model is a whole table: chains, named sets and maps, named counters.
//     Every Rule and set Element carries its text, as `nft list table`
//     prints it, next to what is sent to the kernel (expressions, element
//     keys), and Model.String renders the table as nft lists it: the golden
//     files of the generators are that text, and their kernel tests compare
//     it with nft's own listing (Canonical makes two listings of the same
//     content equal).
//   - Frag and its constructors (PrefixMatch, CtState, Lookup, Goto, ...)
//     build a rule's text and expressions side by side, so that they cannot
//     drift apart; NewRule joins frags into a Rule. Merge joins fragments
//     into one table; Validate reports what the kernel would refuse.
//   - Applier installs a Model in ONE nf_tables transaction, so packets
//     see either the old table or the new one, never a half. The first
//     Apply replaces the table wholesale (add table, delete table, add
//     table and its content); later ones send only the difference to the
//     model applied before: new chains, sets and counters, set and map
//     elements added and deleted, rules of changed chains deleted,
//     replaced and inserted by their kernel handle (or the chain flushed
//     and refilled), what is gone deleted last. A change the difference
//     cannot express (a base chain's hook or priority, a set's type), or a
//     batch the kernel refuses, falls back to the replacement. On a
//     connection of its own the Applier sends batches itself on the
//     netlink socket (see batch.go), which reads the new rules' handles
//     from the kernel's echo.
//
// The table named by a Model belongs to whoever applies it: what is added
// by hand goes at the next full replacement (Applier.Invalidate forces
// one). Other tables are left alone. The Applier takes the table's family
// and name from the Model it is given (Counters and Remove take them as
// arguments); netloom's own table, inet netloom, is named in package
// firewall.
package nft
