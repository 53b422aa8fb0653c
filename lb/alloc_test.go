package lb

import (
	"math/rand/v2"
	"net/netip"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var cfg = Config{ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16")}

// lbSvc is a LoadBalancer service created at wall ms by node n1.
func lbSvc(name string, wall int64) Service {
	return Service{Namespace: "default", Name: name, Type: TypeLoadBalancer, Created: Version{Wall: wall, Node: "n1"}}
}

func key(name string) ServiceKey { return ServiceKey{"default", name} }

var alive = map[string]bool{"n1": true, "n2": true, "n3": true}

// settle records a plan's writes into the services, as the store would.
func settle(svcs []Service, p Plan) []Service {
	out := make([]Service, len(svcs))
	for i, s := range svcs {
		for _, w := range p.Writes {
			if w.Service == s.Key() {
				s.Assigned = w.Assignment
			}
		}
		out[i] = s
	}
	return out
}

func TestAllocateBasic(t *testing.T) {
	pools := []Pool{mustPool("a", true, "10.77.0.10-10.77.0.12"), mustPool("b", true, "10.77.0.20-10.77.0.29")}
	cip := lbSvc("plain", 5)
	cip.Type = TypeClusterIP
	svcs := []Service{lbSvc("web", 10), lbSvc("db", 20), cip, lbSvc("api", 30), lbSvc("mq", 40)}
	p := Allocate(cfg, svcs, pools, alive)
	want := map[ServiceKey]Result{
		key("plain"): {ClusterIP: ip("10.96.0.2")},
		key("web"):   {VIP: ip("10.77.0.10"), Pool: "a", ClusterIP: ip("10.96.0.3")},
		key("db"):    {VIP: ip("10.77.0.11"), Pool: "a", ClusterIP: ip("10.96.0.4")},
		key("api"):   {VIP: ip("10.77.0.12"), Pool: "a", ClusterIP: ip("10.96.0.5")},
		key("mq"):    {VIP: ip("10.77.0.20"), Pool: "b", ClusterIP: ip("10.96.0.6")},
	}
	if diff := cmp.Diff(want, p.Results, cmpOpts...); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if len(p.Writes) != 5 {
		t.Fatalf("writes = %+v, want 5", p.Writes)
	}
	for _, w := range p.Writes {
		r := p.Results[w.Service]
		if w.Writer != "n1" || !w.Assignment.Equal(Assignment{VIP: r.VIP, Pool: r.Pool, ClusterIP: r.ClusterIP}) {
			t.Errorf("write %+v does not match result %+v", w, r)
		}
	}
	// Recorded: nothing more to write, nothing moves.
	svcs = settle(svcs, p)
	p2 := Allocate(cfg, svcs, pools, alive)
	if len(p2.Writes) != 0 {
		t.Errorf("second pass writes %+v, want none", p2.Writes)
	}
	if diff := cmp.Diff(p.Results, p2.Results, cmpOpts...); diff != "" {
		t.Errorf("second pass moved (-first +second):\n%s", diff)
	}
}

// Deleting a service never moves another's addresses, at any position.
func TestAllocateStableOnDelete(t *testing.T) {
	pools := []Pool{mustPool("a", true, "10.77.0.10-10.77.0.14"), mustPool("b", true, "10.77.0.20-10.77.0.29")}
	var svcs []Service
	for i, n := range []string{"s1", "s2", "s3", "s4", "s5", "s6", "s7"} {
		svcs = append(svcs, lbSvc(n, int64(10*i)))
	}
	p := Allocate(cfg, svcs, pools, alive)
	svcs = settle(svcs, p)
	for del := range svcs {
		rest := append(append([]Service{}, svcs[:del]...), svcs[del+1:]...)
		q := Allocate(cfg, rest, pools, alive)
		if len(q.Writes) != 0 {
			t.Errorf("delete %s: writes %+v, want none", svcs[del].Name, q.Writes)
		}
		for _, s := range rest {
			if diff := cmp.Diff(p.Results[s.Key()], q.Results[s.Key()], cmpOpts...); diff != "" {
				t.Errorf("delete %s moved %s (-before +after):\n%s", svcs[del].Name, s.Name, diff)
			}
		}
		// A new service takes the freed address, others stay.
		rest = append(rest, lbSvc("new", 1000))
		q = Allocate(cfg, rest, pools, alive)
		if got, want := q.Results[key("new")].VIP, p.Results[svcs[del].Key()].VIP; got != want {
			t.Errorf("delete %s: new service got %s, want the freed %s", svcs[del].Name, got, want)
		}
		if len(q.Writes) != 1 || q.Writes[0].Service != key("new") {
			t.Errorf("delete %s: writes %+v, want only the new service", svcs[del].Name, q.Writes)
		}
	}
}

func TestAllocateOrderIndependent(t *testing.T) {
	pools := []Pool{mustPool("a", true, "10.77.0.10-10.77.0.13"), mustPool("z", false, "10.77.9.0/29")}
	var svcs []Service
	for i := range 12 {
		s := lbSvc(string(rune('a'+i)), int64(i%3)) // equal Created: name decides
		if i%4 == 1 {
			s.Assigned.VIP = ip("10.77.0.12") // everyone claims .12
		}
		if i == 7 {
			s.LoadBalancerIP = ip("10.77.9.3")
		}
		svcs = append(svcs, s)
	}
	want := Allocate(cfg, svcs, pools, alive)
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		r.Shuffle(len(svcs), func(i, j int) { svcs[i], svcs[j] = svcs[j], svcs[i] })
		pools[0], pools[1] = pools[1], pools[0]
		got := Allocate(cfg, svcs, pools, alive)
		if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
			t.Fatalf("order changed the plan (-want +got):\n%s", diff)
		}
	}
	seen := map[netip.Addr]ServiceKey{}
	for k, res := range want.Results {
		for _, a := range []netip.Addr{res.VIP, res.ClusterIP} {
			if !a.IsValid() {
				continue
			}
			if o, dup := seen[a]; dup {
				t.Errorf("%s held by %s and %s", a, o, k)
			}
			seen[a] = k
		}
	}
}

func TestAllocateConflicts(t *testing.T) {
	pools := []Pool{mustPool("a", true, "10.77.0.10-10.77.0.12"), mustPool("fixed", false, "10.77.5.1-10.77.5.3")}
	tests := []struct {
		name   string
		svcs   []Service
		want   map[ServiceKey]Result
		writes []Write
	}{
		{
			name: "partition heal: both hold .10, older keeps it",
			svcs: []Service{
				withAssigned(lbSvc("young", 20), "10.77.0.10", "10.96.0.2"),
				withAssigned(lbSvc("old", 10), "10.77.0.10", "10.96.0.3"),
			},
			want: map[ServiceKey]Result{
				key("old"):   {VIP: ip("10.77.0.10"), Pool: "a", ClusterIP: ip("10.96.0.3")},
				key("young"): {VIP: ip("10.77.0.11"), Pool: "a", ClusterIP: ip("10.96.0.2"), Conflict: "address 10.77.0.10 is held by older service default/old"},
			},
			writes: []Write{{Service: key("young"), Assignment: Assignment{VIP: ip("10.77.0.11"), Pool: "a", ClusterIP: ip("10.96.0.2")}, Writer: "n1"}},
		},
		{
			name: "same Created: lower name wins; ClusterIP too",
			svcs: []Service{
				withAssigned(lbSvc("b", 10), "10.77.0.10", "10.96.0.2"),
				withAssigned(lbSvc("a", 10), "10.77.0.10", "10.96.0.2"),
			},
			want: map[ServiceKey]Result{
				key("a"): {VIP: ip("10.77.0.10"), Pool: "a", ClusterIP: ip("10.96.0.2")},
				key("b"): {VIP: ip("10.77.0.11"), Pool: "a", ClusterIP: ip("10.96.0.3"),
					Conflict: "clusterIP 10.96.0.2 is held by older service default/a; address 10.77.0.10 is held by older service default/a"},
			},
			writes: []Write{{Service: key("b"), Assignment: Assignment{VIP: ip("10.77.0.11"), Pool: "a", ClusterIP: ip("10.96.0.3")}, Writer: "n1"}},
		},
		{
			name: "older request beats younger holder",
			svcs: []Service{
				withAssigned(lbSvc("holder", 20), "10.77.0.10", "10.96.0.2"),
				withRequest(lbSvc("asker", 10), "10.77.0.10"),
			},
			want: map[ServiceKey]Result{
				key("asker"):  {VIP: ip("10.77.0.10"), Pool: "a", ClusterIP: ip("10.96.0.3")},
				key("holder"): {VIP: ip("10.77.0.11"), Pool: "a", ClusterIP: ip("10.96.0.2"), Conflict: "address 10.77.0.10 is held by older service default/asker"},
			},
		},
		{
			name: "younger request loses, gets another address of the requested pool",
			svcs: []Service{
				withRequest(lbSvc("first", 10), "10.77.5.1"),
				withRequest(lbSvc("second", 20), "10.77.5.1"),
			},
			want: map[ServiceKey]Result{
				key("first"):  {VIP: ip("10.77.5.1"), Pool: "fixed", ClusterIP: ip("10.96.0.2")},
				key("second"): {VIP: ip("10.77.5.2"), Pool: "fixed", ClusterIP: ip("10.96.0.3"), Conflict: "requested address 10.77.5.1 is held by older service default/first"},
			},
		},
		{
			name: "loser of a request keeps its recorded fallback",
			svcs: []Service{
				withRequest(lbSvc("first", 10), "10.77.5.1"),
				withAssigned(withRequest(lbSvc("second", 20), "10.77.5.1"), "10.77.5.3", "10.96.0.9"),
			},
			want: map[ServiceKey]Result{
				key("first"):  {VIP: ip("10.77.5.1"), Pool: "fixed", ClusterIP: ip("10.96.0.2")},
				key("second"): {VIP: ip("10.77.5.3"), Pool: "fixed", ClusterIP: ip("10.96.0.9"), Conflict: "requested address 10.77.5.1 is held by older service default/first"},
			},
		},
		{
			name: "a request moves the service once its address is free",
			svcs: []Service{withAssigned(withRequest(lbSvc("second", 20), "10.77.5.1"), "10.77.5.3", "10.96.0.9")},
			want: map[ServiceKey]Result{key("second"): {VIP: ip("10.77.5.1"), Pool: "fixed", ClusterIP: ip("10.96.0.9")}},
		},
		{
			name: "requested clusterIP held by older",
			svcs: []Service{withCIP(lbSvc("x", 10), "10.96.0.50"), withCIP(lbSvc("y", 20), "10.96.0.50")},
			want: map[ServiceKey]Result{
				key("x"): {VIP: ip("10.77.0.10"), Pool: "a", ClusterIP: ip("10.96.0.50")},
				key("y"): {VIP: ip("10.77.0.11"), Pool: "a", ClusterIP: ip("10.96.0.2"), Conflict: "requested clusterIP 10.96.0.50 is held by older service default/x"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Allocate(cfg, tt.svcs, pools, alive)
			if diff := cmp.Diff(tt.want, p.Results, cmpOpts...); diff != "" {
				t.Errorf("results (-want +got):\n%s", diff)
			}
			if tt.writes != nil {
				if diff := cmp.Diff(tt.writes, p.Writes, cmpOpts...); diff != "" {
					t.Errorf("writes (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func withAssigned(s Service, vip, cip string) Service {
	s.Assigned = Assignment{VIP: ip(vip), Pool: "a", ClusterIP: ip(cip)}
	return s
}

func withRequest(s Service, vip string) Service { s.LoadBalancerIP = ip(vip); return s }

func withCIP(s Service, cip string) Service { s.ClusterIP = ip(cip); return s }

func withPool(s Service, pool string) Service { s.Pool = pool; return s }

func TestAllocatePoolsAndPending(t *testing.T) {
	pools := []Pool{mustPool("a", true, "10.77.0.10-10.77.0.11"), mustPool("manual", false, "10.77.5.1-10.77.5.2"), mustPool("v6", true, "fd00::10/127")}
	tests := []struct {
		name string
		svc  Service
		want Result
	}{
		{"annotation picks pool", withPool(lbSvc("x", 50), "manual"), Result{VIP: ip("10.77.5.1"), Pool: "manual", ClusterIP: ip("10.96.0.6")}},
		{"annotation names a missing pool", withPool(lbSvc("x", 50), "nope"), Result{ClusterIP: ip("10.96.0.6"), Pending: `address pool "nope" (annotation netloom.io/address-pool) does not exist`}},
		{"request in autoAssign false pool", withRequest(lbSvc("x", 50), "10.77.5.2"), Result{VIP: ip("10.77.5.2"), Pool: "manual", ClusterIP: ip("10.96.0.6")}},
		{"request in no pool", withRequest(lbSvc("x", 50), "10.1.1.1"), Result{ClusterIP: ip("10.96.0.6"), Pending: "requested address 10.1.1.1 is in no address pool"}},
		{"request outside annotated pool", withPool(withRequest(lbSvc("x", 50), "10.77.0.10"), "manual"), Result{ClusterIP: ip("10.96.0.6"), Pending: `requested address 10.77.0.10 is not in address pool "manual"`}},
		{"autoAssign pools full", lbSvc("x", 50), Result{ClusterIP: ip("10.96.0.6"), Pending: "address pools a, v6 are full"}},
		{"annotated pool full", withPool(lbSvc("x", 50), "v6"), Result{ClusterIP: ip("10.96.0.6"), Pending: `address pool "v6" is full`}},
		{"clusterIP outside CIDR", withCIP(lbSvc("x", 50), "10.97.0.1"), Result{ClusterIP: netip.Addr{}, Pending: "requested clusterIP 10.97.0.1 is not in the service CIDR 10.96.0.0/16; address pools a, v6 are full"}},
		{"clusterIP first address may be requested", withPool(withCIP(lbSvc("x", 50), "10.96.0.1"), "manual"), Result{VIP: ip("10.77.5.1"), Pool: "manual", ClusterIP: ip("10.96.0.1")}},
		{"recorded VIP in autoAssign false pool without annotation is dropped", withAssigned(lbSvc("x", 50), "10.77.5.2", "10.96.0.40"),
			Result{ClusterIP: ip("10.96.0.40"), Pending: "address pools a, v6 are full"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Four older services fill a and v6.
			svcs := []Service{lbSvc("o1", 1), lbSvc("o2", 2), lbSvc("o3", 3), lbSvc("o4", 4), tt.svc}
			p := Allocate(cfg, svcs, pools, alive)
			if diff := cmp.Diff(tt.want, p.Results[key("x")], cmpOpts...); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if got := p.Results[key("o4")].VIP; got != ip("fd00::11") {
				t.Errorf("o4 VIP = %s, want fd00::11", got)
			}
		})
	}
	// No pools at all.
	p := Allocate(cfg, []Service{lbSvc("x", 1)}, nil, alive)
	if got, want := p.Results[key("x")].Pending, "no address pool with autoAssign exists; create an AddressPool or name one with annotation netloom.io/address-pool"; got != want {
		t.Errorf("no pools: pending %q, want %q", got, want)
	}
}

func TestAllocatePendingThenFreed(t *testing.T) {
	pools := []Pool{mustPool("a", true, "10.77.0.10")}
	svcs := []Service{lbSvc("first", 1), lbSvc("second", 2)}
	p := Allocate(cfg, svcs, pools, alive)
	if got := p.Results[key("second")].Pending; got != `address pool "a" is full` {
		t.Errorf("pending = %q", got)
	}
	svcs = settle(svcs, p)
	p = Allocate(cfg, svcs[1:], pools, alive)
	if got := p.Results[key("second")]; got.VIP != ip("10.77.0.10") || got.Pending != "" {
		t.Errorf("after delete: %+v", got)
	}
}

func TestAllocateMoves(t *testing.T) {
	pools := []Pool{mustPool("a", true, "10.77.0.10-10.77.0.11"), mustPool("b", true, "10.77.1.10-10.77.1.11")}
	s := withAssigned(lbSvc("x", 1), "10.77.0.10", "10.96.0.2")
	// Annotation to another pool moves it.
	p := Allocate(cfg, []Service{withPool(s, "b")}, pools, alive)
	if got := p.Results[key("x")].VIP; got != ip("10.77.1.10") {
		t.Errorf("annotation b: VIP %s", got)
	}
	// Type ClusterIP drops the VIP and records that.
	c := s
	c.Type = TypeClusterIP
	p = Allocate(cfg, []Service{c}, pools, alive)
	want := []Write{{Service: key("x"), Assignment: Assignment{ClusterIP: ip("10.96.0.2")}, Writer: "n1"}}
	if diff := cmp.Diff(want, p.Writes, cmpOpts...); diff != "" {
		t.Errorf("type change writes (-want +got):\n%s", diff)
	}
	// Pool deleted: pending, the VIP is dropped from the record.
	p = Allocate(cfg, []Service{s}, pools[1:], alive)
	if got := p.Results[key("x")].VIP; got != ip("10.77.1.10") {
		t.Errorf("pool a gone: VIP %s, want from b", got)
	}
}

func TestAllocateWriter(t *testing.T) {
	pools := []Pool{mustPool("a", true, "10.77.0.10-10.77.0.11")}
	s := lbSvc("x", 1)
	s.Created.Node = "gone"
	for _, tt := range []struct {
		alive map[string]bool
		want  string
	}{
		{map[string]bool{"n3": true, "n2": true, "gone": false}, "n2"},
		{map[string]bool{"n3": true, "gone": true}, "gone"},
		{nil, ""},
	} {
		p := Allocate(cfg, []Service{s}, pools, tt.alive)
		if len(p.Writes) != 1 || p.Writes[0].Writer != tt.want {
			t.Errorf("alive %v: writes %+v, want writer %q", tt.alive, p.Writes, tt.want)
		}
	}
}

func TestAllocateSmallServiceCIDR(t *testing.T) {
	c := Config{ServiceCIDR: netip.MustParsePrefix("10.100.0.0/29")} // .2-.6 auto
	var svcs []Service
	for i := range 6 {
		s := lbSvc(string(rune('a'+i)), int64(i))
		s.Type = TypeClusterIP
		svcs = append(svcs, s)
	}
	p := Allocate(c, svcs, nil, alive)
	for i, s := range svcs[:5] {
		if got, want := p.Results[s.Key()].ClusterIP, netip.AddrFrom4([4]byte{10, 100, 0, byte(2 + i)}); got != want {
			t.Errorf("%s: %s, want %s", s.Name, got, want)
		}
	}
	if got := p.Results[svcs[5].Key()].Pending; got != "service CIDR 10.100.0.0/29 is full" {
		t.Errorf("pending %q", got)
	}
	// IPv6 service CIDR.
	c = Config{ServiceCIDR: netip.MustParsePrefix("fd00:96::/112")}
	p = Allocate(c, svcs[:1], nil, alive)
	if got := p.Results[svcs[0].Key()].ClusterIP; got != ip("fd00:96::2") {
		t.Errorf("v6: %s", got)
	}
}

func TestValidateApply(t *testing.T) {
	cur := Snapshot{
		Pools: []Pool{mustPool("a", true, "10.77.0.10-10.77.0.19"), mustPool("m", false, "10.77.5.0/29")},
		Services: []Service{
			withAssigned(lbSvc("web", 1), "10.77.0.10", "10.96.0.2"),
			withRequest(lbSvc("db", 2), "10.77.5.1"),
			withCIP(lbSvc("dns", 3), "10.96.0.10"),
		},
	}
	tests := []struct {
		name string
		in   Snapshot
		want string
	}{
		{"new service requests a free address", Snapshot{Services: []Service{withRequest(lbSvc("new", 9), "10.77.0.15")}}, ""},
		{"reapply same", Snapshot{Services: []Service{lbSvc("web", 1), withRequest(lbSvc("db", 2), "10.77.5.1")}}, ""},
		{"outside every pool", Snapshot{Services: []Service{withRequest(lbSvc("new", 9), "10.1.2.3")}},
			"Service default/new: spec.loadBalancerIP: 10.1.2.3 is outside every AddressPool; add it to a pool or leave it out"},
		{"in a pool of the same manifest", Snapshot{Pools: []Pool{mustPool("c", true, "10.1.2.0/24")}, Services: []Service{withRequest(lbSvc("new", 9), "10.1.2.3")}}, ""},
		{"held by recorded", Snapshot{Services: []Service{withRequest(lbSvc("new", 9), "10.77.0.10")}},
			"Service default/new: spec.loadBalancerIP: 10.77.0.10 is already in use by Service default/web; choose another or leave it out"},
		{"held by request", Snapshot{Services: []Service{withRequest(lbSvc("new", 9), "10.77.5.1")}},
			"Service default/new: spec.loadBalancerIP: 10.77.5.1 is already in use by Service default/db; choose another or leave it out"},
		{"holder released in same manifest", Snapshot{Services: []Service{withRequest(lbSvc("db", 2), "10.77.5.2"), withRequest(lbSvc("new", 9), "10.77.5.1")}}, ""},
		{"two in one manifest", Snapshot{Services: []Service{withRequest(lbSvc("n1", 9), "10.77.0.18"), withRequest(lbSvc("n2", 9), "10.77.0.18")}},
			"Service default/n2: spec.loadBalancerIP: 10.77.0.18 is already in use by Service default/n1; choose another or leave it out"},
		{"not in annotated pool", Snapshot{Services: []Service{withPool(withRequest(lbSvc("new", 9), "10.77.0.18"), "m")}},
			"Service default/new: spec.loadBalancerIP: 10.77.0.18 is not in AddressPool m named by annotation netloom.io/address-pool"},
		{"clusterIP in use", Snapshot{Services: []Service{withCIP(lbSvc("new", 9), "10.96.0.10")}},
			"Service default/new: spec.clusterIP: 10.96.0.10 is already in use by Service default/dns; leave it out to get a free one"},
		{"clusterIP outside", Snapshot{Services: []Service{withCIP(lbSvc("new", 9), "192.168.0.1")}},
			"Service default/new: spec.clusterIP: 192.168.0.1 is not in the service CIDR 10.96.0.0/16; leave it out to get one"},
		{"pool overlaps existing", Snapshot{Pools: []Pool{mustPool("b", true, "10.77.0.19-10.77.0.30")}},
			"AddressPool b: spec.addresses[0]: 10.77.0.19-10.77.0.30 overlaps AddressPool a (10.77.0.10-10.77.0.19); pools must not share addresses"},
		{"pool replaced by itself", Snapshot{Pools: []Pool{mustPool("a", true, "10.77.0.10-10.77.0.30")}}, ""},
		{"pools overlap within manifest", Snapshot{Pools: []Pool{mustPool("b", true, "10.78.0.0/24"), mustPool("c", true, "10.78.0.7")}},
			"AddressPool c: spec.addresses[0]: 10.78.0.7 overlaps AddressPool b (10.78.0.1-10.78.0.254); pools must not share addresses"},
		{"pool overlaps cluster CIDR", Snapshot{Pools: []Pool{mustPool("b", true, "10.244.1.0/24")}},
			"AddressPool b: spec.addresses[0]: 10.244.1.1-10.244.1.254 overlaps the cluster CIDR 10.244.0.0/16; use addresses of the hosts' network outside it"},
	}
	for _, tt := range tests {
		err := ValidateApply(cfg, cur, tt.in)
		got := ""
		if err != nil {
			got = err.Error()
			if _, ok := err.(*FieldError); !ok {
				t.Errorf("%s: error is %T, want *FieldError", tt.name, err)
			}
		}
		if got != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, got, tt.want)
		}
	}
}

func BenchmarkAllocate10k(b *testing.B) {
	pools := []Pool{mustPool("a", true, "10.80.0.0/16")}
	svcs := make([]Service, 10000)
	for i := range svcs {
		svcs[i] = Service{Namespace: "ns", Name: "s" + strconv.Itoa(i), Type: TypeLoadBalancer, Created: Version{Wall: int64(i)}}
	}
	p := Allocate(cfg, svcs, pools, alive)
	svcs = settle(svcs, p)
	b.ResetTimer()
	for b.Loop() {
		Allocate(cfg, svcs, pools, alive)
	}
}
