package drain

import (
	"flag"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/nft"
	"github.com/netloom/netloom/nft/nfttest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func twoDrains() State {
	cfg := Config{}
	return State{
		Drains: map[netip.Addr]Drain{v1: drain(v1, "a", t0, cfg), v2: drain(v2, "c", t0, cfg)},
		Slots:  map[string]uint32{"a": 1, "c": 2},
	}
}

func TestFragmentGolden(t *testing.T) {
	if m := Fragment(State{}); len(m.Chains)+len(m.Sets) != 0 {
		t.Errorf("nothing drains, yet the fragment is not empty:\n%s", m)
	}
	m := nft.Merge(nft.Model{Family: firewall.TableFamily, Table: firewall.TableName}, Fragment(twoDrains()))
	if err := m.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	nfttest.CheckGolden(t, filepath.Join("testdata", "two-drains.golden"), m.String(), *update)
}

// nsApplier returns an nft.Applier working inside ns.
func nsApplier(tb testing.TB, ns string) *nft.Applier {
	tb.Helper()
	a := nft.NewApplier(nft.WithNetNS(nfttest.NSHandle(tb, ns)))
	tb.Cleanup(func() { a.Close() })
	return a
}

// The expressions decode to the text the model claims, next to the
// agent's own ruleset.
func TestKernelListing(t *testing.T) {
	nfttest.NeedRoot(t)
	ns := nfttest.NewNS(t)
	m := nft.Merge(firewall.Ruleset(firewall.Config{Bridge: "nlbr0", WGIface: "nlwg0"}), Fragment(twoDrains()),
		nft.Model{Chains: []nft.Chain{{Name: "guarded", Type: "filter", Hook: "prerouting", Priority: nft.PriorityDstNAT - 10, Policy: "accept",
			Rules: []nft.Rule{Guard()}}}})
	if err := nsApplier(t, ns).Apply(m); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	got, err := nfttest.ListTable(ns, firewall.TableFamily, firewall.TableName)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(nft.Canonical(m.String()), nft.Canonical(got)); diff != "" {
		t.Errorf("nft list table differs from the model (-model +nft):\n%s", diff)
	}
}

// A drain whose VIP went back to its old owner takes up no new flows: its
// VIP leaves the map, its slot's chain goes when nothing else uses it.
func TestFragmentReturned(t *testing.T) {
	st := twoDrains()
	d := st.Drains[v2]
	d.Returned = true
	st.Drains[v2] = d
	m := Fragment(st)
	if _, ok := m.Chain(slotChain(2)); ok {
		t.Errorf("chain %s of the returned drain is still there", slotChain(2))
	}
	if s := m.String(); strings.Contains(s, v2.String()) || !strings.Contains(s, v1.String()+" : goto drain-to-1") || !strings.Contains(s, "meta mark set ct mark") {
		t.Errorf("fragment with a returned drain:\n%s", s)
	}
	if r := Routes(st); len(r) != 2 {
		t.Errorf("routes of a returned drain are gone: %v", r)
	}
}
