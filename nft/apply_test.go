package nft

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/netloom/netloom/nft/nfttest"
)

// Kernel tests: every one works in network namespaces it creates and
// deletes (see nfttest); nothing is ever added to the test process's own
// namespace.

// The table of the tests' models: any name will do, the Applier takes it
// from the model.
const (
	testFamily = "inet"
	testTable  = "nfttest"
)

// Chains of baseModel.
const (
	chainForward     = "forward"
	chainPostrouting = "postrouting"
)

// baseModel is a table shaped like netloom's masquerade ruleset
// (firewall.Ruleset): a nat postrouting chain masquerading traffic from
// cidr to outside it (no rule for an invalid cidr), and a filter forward
// chain accepting established connections and forwarding in and out of
// ifaces.
func baseModel(cidr netip.Prefix, ifaces ...string) Model {
	post := Chain{
		Name: chainPostrouting, Type: "nat", Hook: "postrouting",
		Priority: PrioritySrcNAT, Policy: "accept",
	}
	if cidr.IsValid() {
		cidr = cidr.Masked()
		post.Rules = []Rule{NewRule(IPFamily(cidr.Addr()),
			PrefixMatch(Saddr, cidr, false), PrefixMatch(Daddr, cidr, true), Masquerade())}
	}
	fwd := Chain{
		Name: chainForward, Type: "filter", Hook: "forward",
		Priority: PriorityFilter, Policy: "accept",
		Rules: []Rule{NewRule(CtState(CtEstablished|CtRelated), Accept())},
	}
	for _, name := range ifaces {
		fwd.Rules = append(fwd.Rules, NewRule(Iifname(name), Accept()), NewRule(Oifname(name), Accept()))
	}
	return Model{Family: testFamily, Table: testTable, Chains: []Chain{fwd, post}}
}

// nsApplier returns an Applier whose connection (given with WithConn)
// works inside ns.
func nsApplier(t *testing.T, ns string) *Applier {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(nfttest.NSHandle(t, ns)), nftables.AsLasting(), nftables.WithSockOptions(LargeBuffers))
	if err != nil {
		t.Fatalf("nftables conn in %s: %v", ns, err)
	}
	t.Cleanup(func() { c.CloseLasting() })
	return NewApplier(WithConn(c))
}

// listTable is `nft list table inet nfttest` inside ns.
func listTable(ns string) (string, error) {
	return nfttest.ListTable(ns, testFamily, testTable)
}

// checkKernelMatches asserts that nft's own listing of the table is the
// model's String: the expressions we send decode to the text we claim.
func checkKernelMatches(t *testing.T, ns string, m Model) {
	t.Helper()
	nfttest.CheckListing(t, ns, testFamily, testTable, m.String())
}

func TestApplyInNetns(t *testing.T) {
	nfttest.NeedRoot(t)
	ns := nfttest.NewNS(t)
	a := nsApplier(t, ns)

	m := baseModel(netip.MustParsePrefix("10.244.0.0/16"), "netloom-br", "netloom0")
	if err := a.Apply(m); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	checkKernelMatches(t, ns, m)
	got, _ := listTable(ns)
	if !strings.Contains(got, "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade") {
		t.Errorf("masquerade rule missing:\n%s", got)
	}

	// Idempotent: same listing, still one table.
	if err := a.Apply(m); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	checkKernelMatches(t, ns, m)
	tables := nfttest.Run(t, "ip", "netns", "exec", ns, "nft", "list", "tables")
	if n := strings.Count(tables, "table "+testFamily+" "+testTable); n != 1 {
		t.Errorf("nft list tables has %d %s tables:\n%s", n, testTable, tables)
	}

	// Anything added by hand is gone after the next Apply; a changed
	// model replaces the old content.
	nfttest.Run(t, "ip", "netns", "exec", ns, "nft", "add", "rule", testFamily, testTable, chainForward, "iifname", "stray0", "drop")
	m2 := baseModel(netip.MustParsePrefix("10.250.0.0/16"), "other-br")
	if err := a.Apply(m2); err != nil {
		t.Fatalf("Apply changed model: %v", err)
	}
	checkKernelMatches(t, ns, m2)
	if got, _ := listTable(ns); strings.Contains(got, "10.244.0.0/16") {
		t.Errorf("listing still shows the first model after applying another")
	}

	// IPv6 cluster CIDR: ip6 payload offsets decode as ip6 saddr/daddr.
	m6 := baseModel(netip.MustParsePrefix("fd00:10:244::/56"), "netloom0")
	if err := a.Apply(m6); err != nil {
		t.Fatalf("Apply ipv6 model: %v", err)
	}
	checkKernelMatches(t, ns, m6)

	// Remove, and Remove again.
	if err := a.Remove(testFamily, testTable); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if out, err := listTable(ns); err == nil {
		t.Errorf("table still there after Remove:\n%s", out)
	}
	if err := a.Remove(testFamily, testTable); err != nil {
		t.Errorf("Remove of a missing table: %v", err)
	}
	// The next Apply replaces the table.
	if err := a.Apply(m); err != nil {
		t.Fatalf("Apply after Remove: %v", err)
	}
	if st := a.LastApply(); st.Incremental {
		t.Errorf("Apply after Remove: %+v, want a replacement", st)
	}
	checkKernelMatches(t, ns, m)
}

func TestApplySetsAndJumps(t *testing.T) {
	nfttest.NeedRoot(t)
	ns := nfttest.NewNS(t)
	a := nsApplier(t, ns)
	m := testSetModel()
	// Twice: set IDs are fresh in each transaction.
	for i := 0; i < 2; i++ {
		if err := a.Apply(m); err != nil {
			t.Fatalf("Apply %d: %v", i, err)
		}
	}
	checkKernelMatches(t, ns, m)
}

// A model the kernel refuses leaves the previous table untouched (the
// transaction is all or nothing), the error is one line, and the Applier
// recovers: on a connection given with WithConn and on its own socket.
func TestApplyFailureKeepsOldTable(t *testing.T) {
	nfttest.NeedRoot(t)
	for _, mode := range []string{"withconn", "own"} {
		t.Run(mode, func(t *testing.T) {
			ns := nfttest.NewNS(t)
			a := applierModes(t, ns)[mode]
			m := baseModel(netip.MustParsePrefix("10.244.0.0/16"), "br0")
			if err := a.Apply(m); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			err := a.Apply(masqueradeInForward())
			if err == nil {
				t.Fatal("Apply of masquerade in a filter chain succeeded, want an error")
			}
			t.Logf("error: %v", err)
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			checkKernelMatches(t, ns, m)
			// The connection is still usable after a refused transaction.
			if err := a.Apply(m); err != nil {
				t.Fatalf("Apply after a refused one: %v", err)
			}
			checkKernelMatches(t, ns, m)
			if _, err := a.Counters(testFamily, testTable); err != nil {
				t.Errorf("Counters: %v", err)
			}
			if err := a.Remove(testFamily, testTable); err != nil {
				t.Errorf("Remove: %v", err)
			}
		})
	}
}

// Without WithConn the Applier opens its connection in the namespace of the
// calling thread at first use.
func TestApplyDefaultConnUsesCurrentNetns(t *testing.T) {
	nfttest.NeedRoot(t)
	ns := nfttest.NewNS(t)
	m := baseModel(netip.MustParsePrefix("10.244.0.0/16"))
	err := nfttest.InNS(ns, func() error {
		a := NewApplier()
		defer a.Close()
		return a.Apply(m)
	})
	if err != nil {
		t.Fatalf("Apply in %s: %v", ns, err)
	}
	checkKernelMatches(t, ns, m)
}

// masqueradeInForward is a model the kernel refuses (masquerade is only
// valid in nat chains) that Validate lets through.
func masqueradeInForward() Model {
	bad := baseModel(netip.MustParsePrefix("10.99.0.0/16"))
	post, _ := bad.Chain(chainPostrouting)
	for i := range bad.Chains {
		if bad.Chains[i].Name == chainForward {
			bad.Chains[i].Rules = append(bad.Chains[i].Rules, post.Rules...)
		}
	}
	return bad
}
