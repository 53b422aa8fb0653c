package nft

import (
	"strings"
	"testing"

	"github.com/netloom/netloom/nft/nfttest"
)

// TestDrift: Drift finds nothing in a table as applied (also after an
// incremental Apply), and names what someone changed by hand: a set
// element deleted, a rule added, a chain flushed, the table deleted; after
// Invalidate and Apply the table is whole again.
func TestDrift(t *testing.T) {
	nfttest.NeedRoot(t)
	ns := nfttest.NewNS(t)
	// An Applier with a connection of its own, as the agent's: it reads
	// the ruleset generation on that socket.
	a := NewApplier(WithNetNS(nfttest.NSHandle(t, ns)))
	t.Cleanup(func() { a.Close() })
	if d, err := a.Drift(); d != "" || err != nil {
		t.Fatalf("Drift before any Apply = %q, %v; want nothing", d, err)
	}
	m := testSetModel()
	if err := a.Apply(m); err != nil {
		t.Fatal(err)
	}
	clean := func(when string) {
		t.Helper()
		if d, err := a.Drift(); d != "" || err != nil {
			t.Fatalf("Drift %s = %q, %v; want nothing", when, d, err)
		}
	}
	clean("after Apply")
	// Nothing committed since: the ruleset generation says so, and Drift
	// lists nothing; an Apply of the same model changes nothing either.
	listed := a.driftListed
	clean("again")
	if err := a.Apply(testSetModel()); err != nil {
		t.Fatal(err)
	}
	clean("after an Apply of the same model")
	if a.driftListed != listed {
		t.Errorf("Drift listed the table %d more times with no transaction in between; want none", a.driftListed-listed)
	}
	m2 := testSetModel()
	m2.Sets[0].Elements = m2.Sets[0].Elements[:1]
	m2.Chains[0].Rules = append(m2.Chains[0].Rules, m2.Chains[0].Rules[0])
	if err := a.Apply(m2); err != nil {
		t.Fatal(err)
	}
	if !a.LastApply().Incremental {
		t.Fatalf("second Apply was not incremental: %+v", a.LastApply())
	}
	clean("after an incremental Apply")

	nft := func(args ...string) {
		t.Helper()
		nfttest.Run(t, append([]string{"ip", "netns", "exec", ns, "nft"}, args...)...)
	}
	cases := []struct {
		name string
		edit []string
		want string
	}{
		{"element deleted", []string{"delete", "element", testFamily, testTable, "blocked", "{ 192.0.2.7 }"}, "set blocked has 0 elements, want 1"},
		{"rule added", []string{"add", "rule", testFamily, testTable, chainForward, "iifname", "stray0", "drop"}, "chain " + chainForward},
		{"chain flushed", []string{"flush", "chain", testFamily, testTable, chainPostrouting}, "chain " + chainPostrouting + " has other rules (0, want 1)"},
		{"table deleted", []string{"delete", "table", testFamily, testTable}, "table missing"},
	}
	for _, c := range cases {
		nft(c.edit...)
		d, err := a.Drift()
		if err != nil || !strings.Contains(d, c.want) {
			t.Errorf("%s: Drift = %q, %v; want it to say %q", c.name, d, err, c.want)
		}
		a.Invalidate()
		if err := a.Apply(m2); err != nil {
			t.Fatal(err)
		}
		checkKernelMatches(t, ns, m2)
		clean("after restoring (" + c.name + ")")
	}
}
