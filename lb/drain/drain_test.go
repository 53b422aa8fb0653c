package drain

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/netloom/netloom/mesh"
)

var cmpOpts = []cmp.Option{cmpopts.EquateComparable(netip.Addr{}), cmpopts.EquateEmpty()}

var (
	v1 = netip.MustParseAddr("10.77.0.200")
	v2 = netip.MustParseAddr("10.77.0.201")
	v6 = netip.MustParseAddr("fd00::200")
	t0 = time.Unix(1000, 0)
)

func addr(n string) netip.Addr {
	return map[string]netip.Addr{"a": netip.MustParseAddr("10.77.0.11"), "b": netip.MustParseAddr("10.77.0.12"), "c": netip.MustParseAddr("10.77.0.13")}[n]
}

// members: name -> state (every node has its address).
func members(states map[string]string) map[string]Member {
	out := map[string]Member{}
	for n, s := range states {
		out[n] = Member{Addr: addr(n), State: s}
	}
	return out
}

var allAlive = map[string]string{"a": mesh.StateAlive, "b": mesh.StateAlive, "c": mesh.StateAlive}

func drain(vip netip.Addr, from string, since time.Time, cfg Config) Drain {
	cfg = cfg.withDefaults()
	return Drain{VIP: vip, From: from, Via: addr(from), Since: since, Until: since.Add(cfg.Timeout)}
}

func returned(d Drain) Drain {
	d.Returned = true
	return d
}

func TestStep(t *testing.T) {
	cfg := Config{Timeout: 30 * time.Second, DeadTimeout: 15 * time.Second}
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	type step struct {
		owners   map[netip.Addr]string
		fallback map[netip.Addr]string
		states   map[string]string
		now      time.Time
		want     map[netip.Addr]Drain
		slots    map[string]uint32
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"a VIP taken over from an alive node drains from it", []step{
			{owners: map[netip.Addr]string{v1: "a"}, states: allAlive, now: t0},
			{owners: map[netip.Addr]string{v1: "b"}, states: allAlive, now: at(time.Second),
				want: map[netip.Addr]Drain{v1: drain(v1, "a", at(time.Second), cfg)}, slots: map[string]uint32{"a": 1}},
			// Later snapshots keep it, unchanged.
			{owners: map[netip.Addr]string{v1: "b"}, states: allAlive, now: at(10 * time.Second),
				want: map[netip.Addr]Drain{v1: drain(v1, "a", at(time.Second), cfg)}, slots: map[string]uint32{"a": 1}},
			// Until the timeout.
			{owners: map[netip.Addr]string{v1: "b"}, states: allAlive, now: at(31 * time.Second)},
		}},
		{"a leaving node's VIP: the drain ends when it has left", []step{
			{owners: map[netip.Addr]string{v1: "a", v2: "a"}, states: allAlive, now: t0},
			{owners: map[netip.Addr]string{v1: "b", v2: "c"}, states: allAlive, now: at(time.Second),
				want: map[netip.Addr]Drain{v1: drain(v1, "a", at(time.Second), cfg)}, slots: map[string]uint32{"a": 1}},
			{owners: map[netip.Addr]string{v1: "b", v2: "c"}, states: map[string]string{"a": mesh.StateLeft, "b": mesh.StateAlive, "c": mesh.StateAlive}, now: at(5 * time.Second)},
		}},
		{"a VIP this node gives away starts nothing", []step{
			{owners: map[netip.Addr]string{v1: "b"}, states: allAlive, now: t0},
			{owners: map[netip.Addr]string{v1: "c"}, states: allAlive, now: at(time.Second)},
		}},
		{"VIPs with no owner before start nothing", []step{
			{owners: map[netip.Addr]string{}, states: allAlive, now: t0},
			{owners: map[netip.Addr]string{v1: "b"}, states: allAlive, now: at(time.Second)},
		}},
		{"a failed old owner is drained from for DeadTimeout", []step{
			{owners: map[netip.Addr]string{v1: "a"}, states: allAlive, now: t0},
			{owners: map[netip.Addr]string{v1: "b"}, states: map[string]string{"a": mesh.StateDead, "b": mesh.StateAlive}, now: at(time.Second),
				want: map[netip.Addr]Drain{v1: drain(v1, "a", at(time.Second), cfg)}, slots: map[string]uint32{"a": 1}},
			{owners: map[netip.Addr]string{v1: "b"}, states: map[string]string{"a": mesh.StateDead, "b": mesh.StateAlive}, now: at(16 * time.Second)},
		}},
		{"an agent restart: away and back", []step{
			{owners: map[netip.Addr]string{v1: "a"}, states: allAlive, now: t0},
			{owners: map[netip.Addr]string{v1: "b"}, states: map[string]string{"a": mesh.StateDead, "b": mesh.StateAlive}, now: at(time.Second),
				want: map[netip.Addr]Drain{v1: drain(v1, "a", at(time.Second), cfg)}, slots: map[string]uint32{"a": 1}},
			// a is back and owns the VIP again: the flows marked already
			// still go to it, no new ones are taken up.
			{owners: map[netip.Addr]string{v1: "a"}, states: allAlive, now: at(5 * time.Second),
				want: map[netip.Addr]Drain{v1: returned(drain(v1, "a", at(time.Second), cfg))}, slots: map[string]uint32{"a": 1}},
			// b takes it over again: a fresh drain.
			{owners: map[netip.Addr]string{v1: "b"}, states: map[string]string{"a": mesh.StateDead, "b": mesh.StateAlive}, now: at(6 * time.Second),
				want: map[netip.Addr]Drain{v1: drain(v1, "a", at(6*time.Second), cfg)}, slots: map[string]uint32{"a": 1}},
		}},
		{"first step after a start: the fallback owner is drained from", []step{
			{owners: map[netip.Addr]string{v1: "b", v2: "c"}, fallback: map[netip.Addr]string{v1: "a", v2: "a"}, states: allAlive, now: t0,
				want: map[netip.Addr]Drain{v1: drain(v1, "a", t0, cfg)}, slots: map[string]uint32{"a": 1}},
		}},
		{"later steps ignore the fallback", []step{
			{owners: map[netip.Addr]string{v1: "c"}, states: allAlive, now: t0},
			{owners: map[netip.Addr]string{v1: "b"}, fallback: map[netip.Addr]string{v1: "a"}, states: allAlive, now: at(time.Second),
				want: map[netip.Addr]Drain{v1: drain(v1, "c", at(time.Second), cfg)}, slots: map[string]uint32{"c": 1}},
		}},
		{"the drain survives the VIP moving on (chained forwarding)", []step{
			{owners: map[netip.Addr]string{v1: "a"}, states: allAlive, now: t0},
			{owners: map[netip.Addr]string{v1: "b"}, states: allAlive, now: at(time.Second),
				want: map[netip.Addr]Drain{v1: drain(v1, "a", at(time.Second), cfg)}, slots: map[string]uint32{"a": 1}},
			{owners: map[netip.Addr]string{v1: "c"}, states: allAlive, now: at(2 * time.Second),
				want: map[netip.Addr]Drain{v1: drain(v1, "a", at(time.Second), cfg)}, slots: map[string]uint32{"a": 1}},
		}},
		{"a second takeover of the same VIP drains from the newer owner", []step{
			{owners: map[netip.Addr]string{v1: "a"}, states: allAlive, now: t0},
			{owners: map[netip.Addr]string{v1: "b"}, states: allAlive, now: at(time.Second),
				want: map[netip.Addr]Drain{v1: drain(v1, "a", at(time.Second), cfg)}, slots: map[string]uint32{"a": 1}},
			{owners: map[netip.Addr]string{v1: "c"}, states: allAlive, now: at(2 * time.Second),
				want: map[netip.Addr]Drain{v1: drain(v1, "a", at(time.Second), cfg)}, slots: map[string]uint32{"a": 1}},
			{owners: map[netip.Addr]string{v1: "b"}, states: allAlive, now: at(3 * time.Second),
				want: map[netip.Addr]Drain{v1: drain(v1, "c", at(3*time.Second), cfg)}, slots: map[string]uint32{"c": 1}},
		}},
		{"slots are kept while used, and the lowest free one is given", []step{
			{owners: map[netip.Addr]string{v1: "a", v2: "c"}, states: allAlive, now: t0},
			{owners: map[netip.Addr]string{v1: "b", v2: "c"}, states: allAlive, now: at(time.Second),
				want: map[netip.Addr]Drain{v1: drain(v1, "a", at(time.Second), cfg)}, slots: map[string]uint32{"a": 1}},
			{owners: map[netip.Addr]string{v1: "b", v2: "b"}, states: allAlive, now: at(2 * time.Second),
				want:  map[netip.Addr]Drain{v1: drain(v1, "a", at(time.Second), cfg), v2: drain(v2, "c", at(2*time.Second), cfg)},
				slots: map[string]uint32{"a": 1, "c": 2}},
			// a's drain ends (it left): c keeps slot 2.
			{owners: map[netip.Addr]string{v1: "b", v2: "b"}, states: map[string]string{"a": mesh.StateLeft, "b": mesh.StateAlive, "c": mesh.StateAlive}, now: at(3 * time.Second),
				want: map[netip.Addr]Drain{v2: drain(v2, "c", at(2*time.Second), cfg)}, slots: map[string]uint32{"c": 2}},
		}},
		{"an old owner without a known address, or left, or an IPv6 VIP: nothing", []step{
			{owners: map[netip.Addr]string{v1: "x", v2: "a", v6: "a"}, states: map[string]string{"a": mesh.StateLeft, "b": mesh.StateAlive}, now: t0},
			{owners: map[netip.Addr]string{v1: "b", v2: "b", v6: "b"}, states: map[string]string{"a": mesh.StateLeft, "b": mesh.StateAlive}, now: at(time.Second)},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var st State
			for i, s := range tt.steps {
				in := Input{Self: "b", Owners: s.owners, Fallback: s.fallback, Members: members(s.states), Now: s.now}
				st = Step(cfg, st, in)
				if diff := cmp.Diff(s.want, st.Drains, cmpOpts...); diff != "" {
					t.Errorf("step %d: drains (-want +got):\n%s", i, diff)
				}
				if diff := cmp.Diff(s.slots, st.Slots, cmpOpts...); diff != "" {
					t.Errorf("step %d: slots (-want +got):\n%s", i, diff)
				}
			}
		})
	}
}

func TestStepOff(t *testing.T) {
	in := Input{Self: "b", Owners: map[netip.Addr]string{v1: "b"}, Members: members(allAlive), Now: t0}
	st := Step(Config{Timeout: -1}, State{Owners: map[netip.Addr]string{v1: "a"}}, in)
	if len(st.Drains) != 0 {
		t.Errorf("drains with a negative timeout: %v", st.Drains)
	}
}

func TestSlotsRunOut(t *testing.T) {
	prev := State{Owners: map[netip.Addr]string{}, Drains: map[netip.Addr]Drain{}, Slots: map[string]uint32{}}
	ms := map[string]Member{"self": {Addr: netip.MustParseAddr("10.0.0.1"), State: mesh.StateAlive}}
	owners := map[netip.Addr]string{}
	for i := range MaxSlots + 1 {
		name := "n" + string(rune('a'+i/26)) + string(rune('a'+i%26))
		vip := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		prev.Owners[vip] = name
		owners[vip] = "self"
		ms[name] = Member{Addr: netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), State: mesh.StateAlive}
	}
	st := Step(Config{}, prev, Input{Self: "self", Owners: owners, Members: ms, Now: t0})
	if len(st.Slots) != MaxSlots || len(st.Drains) != MaxSlots {
		t.Fatalf("%d old owners: %d slots, %d drains; want %d of each", MaxSlots+1, len(st.Slots), len(st.Drains), MaxSlots)
	}
	seen := map[uint32]bool{}
	for _, s := range st.Slots {
		if s < 1 || s > MaxSlots || seen[s] {
			t.Fatalf("slot %d out of range or given twice", s)
		}
		seen[s] = true
	}
}

func TestNextAndFreed(t *testing.T) {
	cfg := Config{Timeout: 30 * time.Second, DeadTimeout: 15 * time.Second}
	st := State{
		Drains: map[netip.Addr]Drain{v1: drain(v1, "a", t0, cfg), v2: drain(v2, "c", t0.Add(time.Second), cfg)},
		Slots:  map[string]uint32{"a": 1, "c": 2},
	}
	if got, want := Next(cfg, st, members(allAlive)), t0.Add(30*time.Second); !got.Equal(want) {
		t.Errorf("Next = %v, want %v", got, want)
	}
	dead := members(allAlive)
	dead["c"] = Member{Addr: addr("c"), State: mesh.StateDead}
	if got, want := Next(cfg, st, dead), t0.Add(16*time.Second); !got.Equal(want) {
		t.Errorf("Next with c dead = %v, want %v", got, want)
	}
	if got := Next(cfg, State{}, dead); !got.IsZero() {
		t.Errorf("Next without drains = %v, want zero", got)
	}
	next := State{Drains: map[netip.Addr]Drain{v2: st.Drains[v2]}, Slots: map[string]uint32{"c": 2}}
	if diff := cmp.Diff([]uint32{1}, Freed(st, next)); diff != "" {
		t.Errorf("Freed (-want +got):\n%s", diff)
	}
}

func TestRoutes(t *testing.T) {
	cfg := Config{}
	st := State{
		Drains: map[netip.Addr]Drain{v1: drain(v1, "a", t0, cfg), v2: drain(v2, "c", t0, cfg)},
		Slots:  map[string]uint32{"a": 3, "c": 1},
	}
	want := []Route{
		{Slot: 1, Mark: 0x00010000, Table: TableBase + 1, Via: addr("c")},
		{Slot: 3, Mark: 0x00030000, Table: TableBase + 3, Via: addr("a")},
	}
	if diff := cmp.Diff(want, Routes(st), cmpOpts...); diff != "" {
		t.Errorf("Routes (-want +got):\n%s", diff)
	}
}
