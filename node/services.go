package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/mesh"
	"github.com/netloom/netloom/mesh/objects"
	"github.com/netloom/netloom/mesh/store"
)

// CreatedAnnotation records when and where a Service was first applied; it
// orders services in address conflicts (older wins) and is kept on updates.
const CreatedAnnotation = "netloom.io/created"

// lbState is every load-balancing decision for one snapshot of the store:
// addresses, endpoints and announcers. Every node computes the same one.
type lbState struct {
	Services  []lb.Service
	Pools     []lb.Pool
	Plan      lb.Plan
	Endpoints map[lb.ServiceKey][]lb.Endpoint
	Owners    map[netip.Addr]string // VIP -> announcing node
	// Gen identifies the computation: equal Gens are the same state.
	Gen uint64
}

// lbConfig is the cluster-wide allocation configuration.
func (a *Agent) lbConfig() lb.Config {
	return lb.Config{ServiceCIDR: a.cfg.serviceCIDR, ClusterCIDR: a.cfg.cidr}
}

// lbCandidates are the members that may announce VIPs: alive, and not on
// their way out (a leaving node hands its VIPs over before it goes).
func (a *Agent) lbCandidates() map[string]bool {
	out := map[string]bool{}
	a.mu.Lock()
	leaving := a.leaving
	a.mu.Unlock()
	for _, m := range a.members.Members() {
		if m.State != mesh.StateAlive && m.State != mesh.StateSuspect {
			continue
		}
		if m.Meta.Leaving || (m.Self && leaving) {
			continue
		}
		out[m.Name] = true
	}
	return out
}

// lbKey is what lbState depends on: the generations of the kinds it reads,
// and the membership. joined is there for writeAssignments: the pass records
// assignments only for a state it has not seen, and records none before the
// node has joined, so joining must make a new state.
type lbKey struct {
	assigned, services, pools, podAddrs, pods uint64
	candidates                                string
	joined                                    bool
}

// computeLB returns the load-balancing state of the store as it is. While
// its inputs stay, it returns the state it computed last (Gen unchanged).
func (a *Agent) computeLB() (st lbState) {
	o := a.objs
	assignedList, gAs := o.assigned.list(a.store)
	services, gSvc := o.services.list(a.store)
	pools, gPool := o.pools.list(a.store)
	_, gAddr := o.podAddrs.list(a.store)
	_, gPod := o.pods.list(a.store)
	alive := a.lbCandidates()
	a.mu.Lock()
	joined := a.joined
	a.mu.Unlock()
	key := lbKey{assigned: gAs, services: gSvc, pools: gPool, podAddrs: gAddr, pods: gPod,
		candidates: setKey(alive), joined: joined}
	o.mu.Lock()
	if o.lbOK && o.lbKey == key {
		st = o.lb
		o.mu.Unlock()
		return st
	}
	o.mu.Unlock()

	assigned := make(map[lb.ServiceKey]lb.Assignment, len(assignedList))
	for _, ka := range assignedList {
		assigned[ka.key] = ka.as
	}
	st.Services = make([]lb.Service, len(services))
	for i, s := range services {
		s.Assigned = assigned[s.Key()]
		st.Services[i] = s
	}
	st.Pools = pools
	st.Plan = lb.Allocate(a.lbConfig(), st.Services, st.Pools, alive)
	// Pods of nodes that are gone cannot serve: their routes are gone. Nor
	// do new connections go to the pods of a node that is leaving: its
	// routes go when it gives its subnet back, possibly before its pods'
	// addresses are gone from every store (a new connection to them would
	// then meet the cluster CIDR's unreachable route).
	var pods []lb.Pod
	for _, p := range a.lbPods() {
		if alive[p.Node] {
			pods = append(pods, p)
		}
	}
	st.Endpoints = lb.AllEndpoints(st.Services, pods)
	st.Owners = lb.Owners(st.Services, st.Plan.Results, alive, st.Endpoints)
	o.mu.Lock()
	o.lbGen++
	st.Gen = o.lbGen
	o.lb, o.lbKey, o.lbOK = st, key, true
	o.mu.Unlock()
	return st
}

// forgetLB makes the next computeLB compute afresh.
func (a *Agent) forgetLB() {
	a.objs.mu.Lock()
	a.objs.lbOK = false
	a.objs.mu.Unlock()
}

// setKey is a canonical string of a set of names.
func setKey(m map[string]bool) string {
	names := make([]string, 0, len(m))
	for n, ok := range m {
		if ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return strings.Join(names, "\x00")
}

// lbPods are the pods with an address, as endpoints see them.
func (a *Agent) lbPods() []lb.Pod {
	snap := a.policySnapshot()
	out := make([]lb.Pod, 0, len(snap.Pods))
	for _, p := range snap.Pods {
		lp := lb.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, IP: p.IP, Node: p.Node, Ports: map[string]uint16{}}
		for _, np := range p.Ports {
			lp.Ports[np.Name] = np.Port
		}
		out = append(out, lp)
	}
	return out
}

// parseCreated reads CreatedAnnotation ("<unix ms>@<node>"); without it the
// store version of the object stands in.
func parseCreated(s string, v store.Version) lb.Version {
	if ms, node, ok := strings.Cut(s, "@"); ok {
		if wall, err := strconv.ParseInt(ms, 10, 64); err == nil {
			return lb.Version{Wall: wall, Node: node}
		}
	}
	return lb.Version{Wall: v.Wall, Logical: v.Logical, Node: v.Node}
}

// stampCreated sets CreatedAnnotation on a Service being applied: kept from
// the stored object when there is one, else now at this node.
func stampCreated(obj json.RawMessage, old json.RawMessage, exists bool, node string) (json.RawMessage, error) {
	var m map[string]any
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil, err
	}
	stamp := fmt.Sprintf("%d@%s", time.Now().UnixMilli(), node)
	if exists {
		if svc, err := objects.DecodeService(old); err == nil && svc.Annotations[CreatedAnnotation] != "" {
			stamp = svc.Annotations[CreatedAnnotation]
		}
	}
	meta, _ := m["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		m["metadata"] = meta
	}
	ann, _ := meta["annotations"].(map[string]any)
	if ann == nil {
		ann = map[string]any{}
		meta["annotations"] = ann
	}
	if _, given := ann[CreatedAnnotation]; !given {
		ann[CreatedAnnotation] = stamp
	}
	return json.Marshal(m)
}

// writeAssignments records the assignments this node is the writer of. It
// waits until the node has heard the cluster, so a partial store does not
// record addresses that would then move.
func (a *Agent) writeAssignments(plan lb.Plan) {
	a.mu.Lock()
	joined := a.joined
	a.mu.Unlock()
	if !joined {
		return
	}
	var puts []store.Put
	for _, w := range plan.Writes {
		if w.Writer != a.cfg.Name {
			continue
		}
		b, err := json.Marshal(w.Assignment)
		if err != nil {
			continue
		}
		puts = append(puts, store.Put{Key: store.Key{Kind: lb.AssignmentKind, Namespace: w.Service.Namespace, Name: w.Service.Name}, Value: b})
	}
	// Assignments of deleted services go with them (by the lowest alive node).
	var dels []store.Key
	if a.lowestAlive() {
		have := map[lb.ServiceKey]bool{}
		for k := range plan.Results {
			have[k] = true
		}
		for _, e := range a.store.List(lb.AssignmentKind, "") {
			if !have[lb.ServiceKey{Namespace: e.Key.Namespace, Name: e.Key.Name}] {
				dels = append(dels, e.Key)
			}
		}
	}
	if len(puts) == 0 && len(dels) == 0 {
		return
	}
	entries, err := a.store.Apply(puts, dels)
	if err != nil {
		a.log.Warn("record service addresses", "err", err)
		a.forgetLB() // the next pass tries again
		return
	}
	a.repl.Publish(entries)
}

func (a *Agent) lowestAlive() bool {
	names := []string{}
	for n := range a.lbCandidates() {
		names = append(names, n)
	}
	sort.Strings(names)
	return len(names) > 0 && names[0] == a.cfg.Name
}

// validateServices checks a manifest's services and address pools against
// the store (a requested VIP outside every pool or already in use, pools
// overlapping each other or the cluster CIDR); the error names the
// document.
func (a *Agent) validateServices(objs []objects.Object) error {
	var in lb.Snapshot
	docOf := map[string]int{}
	for i, o := range objs {
		switch o.Kind {
		case "Service":
			svc, err := objects.DecodeService(o.JSON)
			if err != nil {
				return err
			}
			s, err := objects.LBService(svc)
			if err != nil {
				return err
			}
			in.Services = append(in.Services, s)
		case "AddressPool":
			ap, err := objects.DecodeAddressPool(o.JSON)
			if err != nil {
				return err
			}
			p, err := ap.LBPool()
			if err != nil {
				return err
			}
			in.Pools = append(in.Pools, p)
		default:
			continue
		}
		docOf[o.Kind+"/"+o.Namespace+"/"+o.Name] = i + 1
	}
	if len(in.Services) == 0 && len(in.Pools) == 0 {
		return nil
	}
	cur := a.computeLB()
	err := lb.ValidateApply(a.lbConfig(), lb.Snapshot{Services: cur.Services, Pools: cur.Pools}, in)
	if err == nil {
		return nil
	}
	var fe *lb.FieldError
	if errors.As(err, &fe) {
		if n, ok := docOf[fe.Kind+"/"+fe.Namespace+"/"+fe.Name]; ok {
			what := fe.Kind + " " + fe.Name
			if fe.Namespace != "" {
				what = fe.Kind + " " + fe.Namespace + "/" + fe.Name
			}
			return fmt.Errorf("document %d (%s): %s: %s", n, what, fe.Field, fe.Msg)
		}
	}
	return err
}
