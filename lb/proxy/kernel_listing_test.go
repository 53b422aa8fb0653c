package proxy

import (
	"testing"

	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/nft"
	"github.com/netloom/netloom/nft/nfttest"
)

// The expressions decode to the text the model claims: nft's listing of
// the applied table equals Model.String, for every fixture together with
// the base ruleset (which also checks that the names do not collide).
func TestKernelListing(t *testing.T) {
	nfttest.NeedRoot(t)
	ns := nfttest.NewNS(t)
	a := nsApplier(t, ns)
	in := inputOf(fixtures()...)
	m := nft.Merge(firewall.Ruleset(firewall.Config{
		ClusterCIDR: in.ClusterCIDR, PodSubnet: in.PodSubnet, Bridge: "nlbr0", WGIface: in.WGIface,
	}), Compile(in))
	if err := a.Apply(m); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	checkListing(t, ns, m)
}
