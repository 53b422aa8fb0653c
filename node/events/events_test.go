package events

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func fixedLog(capacity int) *Log {
	l := NewLog("n1", capacity)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	i := 0
	l.now = func() time.Time { i++; return t0.Add(time.Duration(i) * time.Second) }
	return l
}

func kinds(es []Event) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Kind)
	}
	return out
}

func TestRingKeepsNewest(t *testing.T) {
	tests := []struct {
		name string
		add  []string
		want []string
	}{
		{"empty", nil, nil},
		{"under capacity", []string{"a", "b"}, []string{"a", "b"}},
		{"exactly full", []string{"a", "b", "c"}, []string{"a", "b", "c"}},
		{"wrapped", []string{"a", "b", "c", "d", "e"}, []string{"c", "d", "e"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := fixedLog(3)
			for _, k := range tt.add {
				l.Add(k, "", "")
			}
			if diff := cmp.Diff(tt.want, kinds(l.List())); diff != "" {
				t.Errorf("List() kinds (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFollowSeesPastThenNew(t *testing.T) {
	l := fixedLog(10)
	l.Add(Join, "n2", "member joined")
	past, ch, cancel := l.Follow(4)
	defer cancel()
	if diff := cmp.Diff([]string{Join}, kinds(past)); diff != "" {
		t.Fatalf("past (-want +got):\n%s", diff)
	}
	l.Add(Dead, "n2", "member failed")
	select {
	case e := <-ch:
		if e.Kind != Dead || e.Node != "n1" || e.Subject != "n2" {
			t.Errorf("followed event = %+v", e)
		}
	case <-time.After(time.Second):
		t.Fatal("no event delivered to follower")
	}
	cancel()
	l.Add(Leave, "n3", "")
	select {
	case e := <-ch:
		t.Errorf("event after cancel: %+v", e)
	default:
	}
}

func TestSlowFollowerDoesNotBlock(t *testing.T) {
	l := fixedLog(10)
	_, _, cancel := l.Follow(1)
	defer cancel()
	for i := 0; i < 5; i++ {
		l.Add(Join, "", "") // must not block although nobody reads
	}
	if got := len(l.List()); got != 5 {
		t.Errorf("List() has %d events, want 5", got)
	}
}
