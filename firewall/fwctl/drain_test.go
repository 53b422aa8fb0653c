package fwctl

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/lb/drain"
	"github.com/netloom/netloom/mesh"
	"github.com/netloom/netloom/nft"
	"github.com/netloom/netloom/node/events"
)

// orderTable and fakeDrains write what happens, in order, to one log.
type orderTable struct {
	fakeTable
	log *[]string
}

func (o *orderTable) Apply(m nft.Model) error {
	*o.log = append(*o.log, fmt.Sprintf("apply drain-vips=%v", strings.Contains(m.String(), "map drain-vips")))
	return o.fakeTable.Apply(m)
}

type fakeDrains struct{ log *[]string }

func (f fakeDrains) Set(routes []drain.Route, prune bool) error {
	var vias []string
	for _, r := range routes {
		vias = append(vias, fmt.Sprintf("%d:%s", r.Slot, r.Via))
	}
	*f.log = append(*f.log, fmt.Sprintf("routes %v prune=%v", vias, prune))
	return nil
}

func (f fakeDrains) Flush(slots []uint32) (uint, error) {
	*f.log = append(*f.log, fmt.Sprintf("flush %v", slots))
	return 1, nil
}

// TestDrains: when this node takes a VIP over from n2, the drain's routes
// are added before the table that marks packets for them, the pass that
// ends the drain is asked for, the programmed snapshot is reported; when
// n2 has left, the drain goes, its routes after the table, and its
// conntrack entries are deleted.
func TestDrains(t *testing.T) {
	vip := netip.MustParseAddr("10.77.0.200")
	now := time.Unix(1000, 0)
	c1 := cfg
	c1.Now = func() time.Time { return now }
	var log []string
	c := New(c1, &orderTable{log: &log}, events.NewLog("n1", 10))
	c.Drains = fakeDrains{log: &log}
	var after []time.Duration
	c.After = func(d time.Duration) { after = append(after, d) }
	var programmed []uint64
	c.Programmed = func(s *cluster.Snapshot) { programmed = append(programmed, s.Seq) }

	seq := uint64(0)
	owned := func(owner, n2State string) *cluster.Snapshot {
		seq++
		s := snap(now)
		s.Seq = seq
		s.Members = []mesh.Member{
			{Name: "n1", State: mesh.StateAlive, Self: true, Meta: mesh.Meta{Addr: "10.77.0.11"}},
			{Name: "n2", State: n2State, Meta: mesh.Meta{Addr: "10.77.0.12"}},
		}
		lbs := *s.LB
		lbs.Owners = map[netip.Addr]string{vip: owner}
		s.LB = &lbs
		return s
	}
	pass := func(s *cluster.Snapshot) {
		t.Helper()
		if _, err := c.Pass(context.Background(), s, false); err != nil {
			t.Fatal(err)
		}
	}
	pass(owned("n2", mesh.StateAlive))
	log = nil
	now = now.Add(time.Second)
	pass(owned("n1", mesh.StateAlive))
	want := []string{"routes [1:10.77.0.12] prune=false", "apply drain-vips=true", "routes [1:10.77.0.12] prune=true"}
	if !slices.Equal(log, want) {
		t.Errorf("taking the VIP over:\n got %q\nwant %q", log, want)
	}
	if len(after) != 1 || after[0] < drain.DefaultTimeout || after[0] > drain.DefaultTimeout+time.Second {
		t.Errorf("passes asked for: %v, want one in about %v", after, drain.DefaultTimeout)
	}
	if !slices.Equal(programmed, []uint64{1, 2}) {
		t.Errorf("programmed snapshots %v, want [1 2]", programmed)
	}
	log = nil
	now = now.Add(time.Second)
	pass(owned("n1", mesh.StateLeft))
	want = []string{"routes [] prune=false", "apply drain-vips=false", "routes [] prune=true", "flush [1]"}
	if !slices.Equal(log, want) {
		t.Errorf("n2 left:\n got %q\nwant %q", log, want)
	}
}
