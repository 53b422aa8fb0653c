package firewall

import (
	"net/netip"

	"github.com/netloom/netloom/nft"
)

// Family and name of netloom's nftables table, which the masquerade
// ruleset, the service proxy's and the NetworkPolicy fragments share.
const (
	TableFamily = "inet"
	TableName   = "netloom"
)

// Config is what the ruleset is computed from.
type Config struct {
	// ClusterCIDR holds every pod address of the cluster (e.g.
	// 10.244.0.0/16). Pod traffic to addresses outside it is masqueraded.
	// Its family (IPv4 or IPv6) decides the family of the NAT rule. When it
	// is not valid, no masquerade rule is generated.
	ClusterCIDR netip.Prefix
	// PodSubnet is this node's share of ClusterCIDR (e.g. 10.244.3.0/24).
	// Not used by today's rules; service NAT (hairpin) and NetworkPolicy
	// will need it.
	PodSubnet netip.Prefix
	// Bridge is the pod bridge and WGIface the WireGuard interface;
	// forwarding in and out of each is accepted. Empty names are skipped.
	Bridge  string
	WGIface string
}

// Names of the ruleset's chains.
const (
	ChainPostrouting = "postrouting"
	ChainForward     = "forward"
)

// Ruleset computes the host's part of netloom's table for cfg (merge the
// service proxy's and NetworkPolicy's fragments into it with nft.Merge).
// It is pure: the same Config always gives the same Model.
//
//	chain postrouting: type nat hook postrouting priority srcnat
//	  ip saddr CLUSTER ip daddr != CLUSTER masquerade
//	chain forward: type filter hook forward priority filter; policy accept
//	  ct state established,related accept
//	  iifname/oifname BRIDGE accept, iifname/oifname WG accept
//
// The forward accepts make our intent explicit and give later
// NetworkPolicy chains a place to sit; they cannot override a drop in
// another table (every base chain on the hook must accept).
func Ruleset(cfg Config) nft.Model {
	post := nft.Chain{
		Name: ChainPostrouting, Type: "nat", Hook: "postrouting",
		Priority: nft.PrioritySrcNAT, Policy: "accept",
	}
	if cfg.ClusterCIDR.IsValid() {
		cidr := cfg.ClusterCIDR.Masked()
		post.Rules = append(post.Rules, nft.NewRule(
			nft.IPFamily(cidr.Addr()),
			nft.PrefixMatch(nft.Saddr, cidr, false),
			nft.PrefixMatch(nft.Daddr, cidr, true),
			nft.Masquerade(),
		))
	}

	fwd := nft.Chain{
		Name: ChainForward, Type: "filter", Hook: "forward",
		Priority: nft.PriorityFilter, Policy: "accept",
		Rules: []nft.Rule{nft.NewRule(nft.CtState(nft.CtEstablished|nft.CtRelated), nft.Accept())},
	}
	for _, name := range []string{cfg.Bridge, cfg.WGIface} {
		if name == "" {
			continue
		}
		fwd.Rules = append(fwd.Rules,
			nft.NewRule(nft.Iifname(name), nft.Accept()),
			nft.NewRule(nft.Oifname(name), nft.Accept()),
		)
	}

	return nft.Model{
		Family: TableFamily,
		Table:  TableName,
		Chains: []nft.Chain{fwd, post},
	}
}
