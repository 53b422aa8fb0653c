package proxy

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/nft"
	"github.com/netloom/netloom/nft/nfttest"
)

// Helpers of the kernel tests. Every test works in network namespaces it
// creates and deletes (see nfttest); nothing is ever added to the test
// process's own namespace.

// nsApplier returns an nft.Applier working inside ns.
func nsApplier(tb testing.TB, ns string) *nft.Applier {
	tb.Helper()
	a := nft.NewApplier(nft.WithNetNS(nfttest.NSHandle(tb, ns)))
	tb.Cleanup(func() { a.Close() })
	return a
}

// checkListing asserts that nft's listing of table inet netloom in ns has
// the model's content (after nft.Canonical: nft orders objects by
// creation and elements its own way).
func checkListing(t *testing.T, ns string, m nft.Model) {
	t.Helper()
	out, err := nfttest.ListTable(ns, firewall.TableFamily, firewall.TableName)
	if err != nil {
		t.Fatal(err)
	}
	// Model.String does not render a set's size (nft prints "size N" for
	// the affinity sets), and the kernel fills the dynamic affinity sets
	// (elements with "expires"): drop both.
	var lines []string
	for _, l := range strings.Split(nft.Canonical(out), "\n") {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "size ") && !(strings.HasPrefix(l, "elements = ") && strings.Contains(l, " expires ")) {
			lines = append(lines, l)
		}
	}
	got := strings.Join(lines, "\n")
	if diff := cmp.Diff(nft.Canonical(m.String()), got); diff != "" {
		t.Errorf("nft list table differs from the model (-model +nft):\n%s", diff)
	}
}
