package mesh

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

func mem(name, addr, state string) Member {
	return Member{Name: name, Addr: netip.MustParseAddr(addr), Port: 7946, State: state, Self: name == "n1", Meta: Meta{Addr: addr}}
}

// TestRejoinerDue: failed members (not left ones) are called, with the
// join list, backing off from Min to Max per target; a member that is
// alive again is not called, and starts over at Min if it fails again.
func TestRejoinerDue(t *testing.T) {
	r := &Rejoiner{Min: time.Second, Max: 4 * time.Second}
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	members := []Member{mem("n1", "10.0.0.1", StateAlive), mem("n2", "10.0.0.2", StateDead), mem("n3", "10.0.0.3", StateLeft), mem("n4", "10.0.0.4", StateAlive)}
	join := []string{"10.0.0.9:7946", "10.0.0.1:7946"}

	steps := []struct {
		at   time.Duration
		ms   []Member
		want []string
	}{
		{0, members, []string{"10.0.0.2:7946", "10.0.0.9:7946"}},
		{500 * time.Millisecond, members, nil},
		{time.Second, members, []string{"10.0.0.2:7946", "10.0.0.9:7946"}}, // after 1s
		{2 * time.Second, members, nil},
		{3 * time.Second, members, []string{"10.0.0.2:7946", "10.0.0.9:7946"}}, // after 2s
		{6 * time.Second, members, nil},
		{7 * time.Second, members, []string{"10.0.0.2:7946", "10.0.0.9:7946"}},  // after 4s
		{11 * time.Second, members, []string{"10.0.0.2:7946", "10.0.0.9:7946"}}, // Max
		// n2 is back: nobody to call, the join list neither.
		{12 * time.Second, []Member{mem("n1", "10.0.0.1", StateAlive), mem("n2", "10.0.0.2", StateAlive)}, nil},
		// n2 fails again: called at once, then after Min.
		{13 * time.Second, members, []string{"10.0.0.2:7946", "10.0.0.9:7946"}},
		{14 * time.Second, members, []string{"10.0.0.2:7946", "10.0.0.9:7946"}},
	}
	for i, s := range steps {
		if got := r.Due(at(s.at), s.ms, join); !slices.Equal(got, s.want) {
			t.Errorf("step %d (+%v): Due = %v, want %v", i, s.at, got, s.want)
		}
	}
}
