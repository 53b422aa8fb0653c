package fwctl

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/nft"
	"github.com/netloom/netloom/node/events"
)

// fakeTable is the kernel's table: applied holds what Apply got; drift
// and err simulate a hand edit and a refusing kernel.
type fakeTable struct {
	applied     []nft.Model
	invalidated int
	drift       string
	err         error
}

func (f *fakeTable) Apply(m nft.Model) error {
	if f.err != nil {
		return f.err
	}
	f.applied = append(f.applied, m)
	f.drift = ""
	return nil
}
func (f *fakeTable) Drift() (string, error) { return f.drift, nil }
func (f *fakeTable) Invalidate()            { f.invalidated++ }

var cfg = Config{Name: "n1", ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"), Bridge: "netloom-br0", WGIface: "netloom0"}

func snap(at time.Time, pods ...policy.Pod) *cluster.Snapshot {
	s := &cluster.Snapshot{At: at, Node: cluster.Local{Name: "n1", Joined: true, Subnet: netip.MustParsePrefix("10.244.1.0/24")},
		Policy: &policy.Snapshot{Pods: pods, Namespaces: map[string]map[string]string{}}}
	s.LB = cluster.ComputeLB(lb.Config{}, s, map[string]bool{"n1": true})
	return s
}

// TestPass: a new snapshot is one Apply; the same inputs again are none;
// a repair pass that finds the table changed restores it whole and says
// so; a refused Apply fails the pass and forces a whole replacement.
func TestPass(t *testing.T) {
	tab := &fakeTable{}
	ev := events.NewLog("n1", 10)
	c := New(cfg, tab, ev)
	repairs := 0
	c.Repaired = func(string) { repairs++ }
	ctx := context.Background()
	t0 := time.Unix(1000, 0)

	noSubnet := snap(t0)
	noSubnet.Node.Subnet = netip.Prefix{}
	if worked, err := c.Pass(ctx, noSubnet, true); worked || err != nil || len(tab.applied) != 0 {
		t.Fatalf("pass without a subnet: worked %v err %v applies %d; want nothing", worked, err, len(tab.applied))
	}
	s := snap(t0, policy.Pod{Namespace: "x", Name: "a", IP: netip.MustParseAddr("10.244.1.5"), Node: "n1"})
	if worked, err := c.Pass(ctx, s, true); !worked || err != nil || len(tab.applied) != 1 {
		t.Fatalf("first pass: worked %v err %v applies %d; want one apply", worked, err, len(tab.applied))
	}
	if m := tab.applied[0].String(); !strings.Contains(m, "table inet netloom") || !strings.Contains(m, "masquerade") {
		t.Errorf("applied model lacks the table or masquerade:\n%s", m)
	}
	if c.Status().ProgrammedAt != t0 || c.Status().Policy == nil {
		t.Errorf("status %+v, want programmed at %v with a policy", c.Status(), t0)
	}
	// A newer snapshot with the same inputs: no apply, but programmed.
	s2 := *s
	s2.At = t0.Add(time.Second)
	if worked, err := c.Pass(ctx, &s2, false); worked || err != nil || len(tab.applied) != 1 || c.Status().ProgrammedAt != s2.At {
		t.Fatalf("same inputs: worked %v err %v applies %d programmed %v; want no apply, programmed at %v", worked, err, len(tab.applied), c.Status().ProgrammedAt, s2.At)
	}
	// Someone deleted the table: a repair pass restores it.
	tab.drift = "table missing"
	if _, err := c.Pass(ctx, &s2, true); err != nil {
		t.Fatal(err)
	}
	if len(tab.applied) != 2 || tab.invalidated != 1 || repairs != 1 || len(ev.List()) != 1 || ev.List()[0].Kind != events.Repaired {
		t.Fatalf("after drift: applies %d, invalidated %d, repairs %d, events %+v; want a whole reapply and one repair event", len(tab.applied), tab.invalidated, repairs, ev.List())
	}
	// Drift is only looked at in repair passes.
	tab.drift = "set x missing"
	if _, err := c.Pass(ctx, &s2, false); err != nil || len(tab.applied) != 2 {
		t.Fatalf("plain pass with drift: applies %d, err %v; want no look", len(tab.applied), err)
	}
	tab.drift = ""
	// The kernel refuses: the pass fails, and the next apply is whole.
	tab.err = errors.New("netlink: no buffer space")
	s3 := snap(t0.Add(2*time.Second), policy.Pod{Namespace: "x", Name: "b", IP: netip.MustParseAddr("10.244.1.6"), Node: "n1"})
	if _, err := c.Pass(ctx, s3, false); err == nil || tab.invalidated != 2 {
		t.Fatalf("refused apply: err %v invalidated %d; want an error and an invalidation", err, tab.invalidated)
	}
	tab.err = nil
	if _, err := c.Pass(ctx, s3, true); err != nil || len(tab.applied) != 3 {
		t.Fatalf("retry: err %v applies %d; want the apply", err, len(tab.applied))
	}
}

// TestWaitProgrammed: a waiter for a pod registered at some time returns
// once a snapshot taken after it is applied, and not before.
func TestWaitProgrammed(t *testing.T) {
	c := New(cfg, &fakeTable{}, events.NewLog("n1", 10))
	t0 := time.Unix(1000, 0)
	if _, err := c.Pass(context.Background(), snap(t0), false); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.WaitProgrammed(context.Background(), t0) }()
	select {
	case err := <-done:
		t.Fatalf("WaitProgrammed returned %v before a newer snapshot was applied", err)
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := c.Pass(context.Background(), snap(t0.Add(time.Millisecond), policy.Pod{Namespace: "x", Name: "a", IP: netip.MustParseAddr("10.244.1.5"), Node: "n1"}), false); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.WaitProgrammed(ctx, t0.Add(time.Hour)); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitProgrammed with a cancelled context = %v", err)
	}
}
