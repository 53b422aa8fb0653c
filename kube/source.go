package kube

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/renameio/v2"
	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/kube/manifests"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/mesh/store"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
)

// Config configures a Source.
type Config struct {
	// Node is this node's name (its Node object).
	Node string
	// Proxy says which services netloom proxies.
	Proxy ProxyMode
	// Store is the gossip store: subnet leases and pod addresses come from
	// it in both modes.
	Store *store.Store
	// StateFile keeps the objects of the last synced view, so that an agent
	// that starts while the API server is down programs what it had.
	StateFile string
	// ClusterCIDR is the pod network: AddressPools must not overlap it.
	ClusterCIDR netip.Prefix
	// Server names the API server in messages.
	Server string
	Log    *slog.Logger
}

// Kinds a Source watches, in the order of its generations.
const (
	kPods = iota
	kNamespaces
	kPolicies
	kServices
	kSlices
	kPools
	kNodes
	kServiceCIDRs
	nKinds
)

var kindNames = [nKinds]string{"pods", "namespaces", "networkpolicies", "services", "endpointslices", "addresspools", "nodes", "servicecidrs"}

// Source is the Kubernetes API server as a cluster.Source: pods,
// namespaces, NetworkPolicies, Services, EndpointSlices and AddressPools
// from client-go informers (cluster-wide: policy peers live on other
// nodes), subnet leases and pod addresses from gossip. Until its caches
// have synced it serves the view it saved last (or, with none, no
// objects: then nothing object-driven is programmed).
type Source struct {
	cfg    Config
	gossip *cluster.StoreSource

	inf [nKinds]cache.SharedIndexInformer

	gens   [nKinds]atomic.Uint64
	synced atomic.Bool
	saved  *View

	subMu sync.Mutex
	subs  map[chan struct{}]struct{}

	mu     sync.Mutex
	status Status
	cache  derived
}

// View is the objects a Source works from; it is also the saved state.
type View struct {
	Pods         []*Pod                        `json:"pods"`
	Namespaces   []*corev1.Namespace           `json:"namespaces"`
	Policies     []*networkingv1.NetworkPolicy `json:"networkPolicies"`
	Services     []*CachedService              `json:"services"`
	Slices       []*Slice                      `json:"slices"`
	AddressPools []*unstructured.Unstructured  `json:"addressPools"`
	Nodes        []*corev1.Node                `json:"nodes,omitempty"`
	ServiceCIDRs []*networkingv1.ServiceCIDR   `json:"serviceCIDRs,omitempty"`
}

// Status is how the Source's link to the API server is.
type Status struct {
	Server string
	// Synced: the caches have synced since the start; before, the saved
	// view is served (FromSaved) or nothing.
	Synced    bool
	FromSaved bool
	SyncedAt  time.Time
	// LastContact is the last time the API server answered (a watch event
	// or a probe).
	LastContact time.Time
	// LastError is the last failed watch or probe, with its time; it
	// clears when the server answers again.
	LastError   string
	LastErrorAt time.Time
	// LastUnreachable is when a watch last got no answer at all (refused
	// connection, timeout, a dropped watch): the server was down or
	// restarting.
	LastUnreachable time.Time
}

// derived keeps what Objects built, by the generations it read.
type derived struct {
	epoch      uint64
	polKey     [5]uint64
	pol        *policy.Snapshot
	polGen     uint64
	poolKey    [3]uint64
	pools      []lb.Pool
	poolGen    uint64
	svcKey     [3]uint64
	svcs       []lb.Service
	svcGen     uint64
	epKey      [2]uint64
	eps        map[lb.ServiceKey][]lb.Endpoint
	epCache    EndpointsCache
	podsKey    [4]uint64
	podsGen    uint64
	nodesKey   [2]uint64
	nodeSubnet cluster.NodeSubnet
	problems   map[string]string
}

// kindObjects is an object of each kind's type, for its informer.
var kindObjects = [nKinds]runtime.Object{&corev1.Pod{}, &corev1.Namespace{}, &networkingv1.NetworkPolicy{},
	&corev1.Service{}, &discoveryv1.EndpointSlice{}, &unstructured.Unstructured{}, &corev1.Node{}, &networkingv1.ServiceCIDR{}}

// New makes a Source from an API (a real one from Connect, or a fake);
// Run starts its informers.
func New(cfg Config, api API) (*Source, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Proxy == "" {
		cfg.Proxy = ProxyReplace
	}
	s := &Source{cfg: cfg, gossip: cluster.NewStoreSource(cfg.Store), subs: map[chan struct{}]struct{}{}}
	s.status.Server = cfg.Server
	if cfg.StateFile != "" {
		v, err := LoadView(cfg.StateFile)
		if err != nil {
			return nil, err
		}
		s.saved = v
		s.status.FromSaved = v != nil
	}
	for k := range s.inf {
		// No indexers (the Source reads whole stores and looks up by key)
		// and no resync.
		inf := cache.NewSharedIndexInformerWithOptions(api.ListWatch(kindNames[k]), kindObjects[k], cache.SharedIndexInformerOptions{})
		if err := inf.SetTransform(strip); err != nil {
			return nil, err
		}
		s.inf[k] = inf
		if err := inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) { s.watchError(kindNames[k], err) }); err != nil {
			return nil, err
		}
		_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { s.changed(k) },
			UpdateFunc: func(old, cur any) {
				// Of a Node only its pod subnet counts; its status
				// changes often.
				if k != kNodes || nodeSubnetChanged(old, cur) {
					s.changed(k)
				}
			},
			DeleteFunc: func(any) { s.changed(k) },
		})
		if err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Run runs the informers until ctx ends. Once they have synced, the
// Source serves them, and saves its view after changes (at most every
// saveEvery).
func (s *Source) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	var syncs []cache.InformerSynced
	for _, inf := range s.inf {
		wg.Go(func() { inf.RunWithContext(ctx) })
		syncs = append(syncs, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), syncs...) {
		return nil
	}
	now := time.Now()
	s.mu.Lock()
	s.status.Synced, s.status.FromSaved, s.status.SyncedAt = true, false, now
	s.status.LastContact = now
	s.mu.Unlock()
	s.synced.Store(true)
	s.cfg.Log.Info("Kubernetes API caches synced", "server", s.cfg.Server)
	s.notify()
	return s.saveLoop(ctx)
}

// The view is saved at most every saveEvery, and after a save that took
// d, not before saveCost*d has passed: with thousands of objects one save
// encodes tens of megabytes for seconds, and while objects keep changing
// (a controller writing 10,000 EndpointSlices at its own pace) a save every
// 2 s would keep a CPU busy and the heap full of its garbage. So the saves
// take at most 1/saveCost of a CPU; the view is for a restart without the
// API server, a few seconds to a minute behind is what it can be anyway.
const (
	saveEvery = 2 * time.Second
	saveCost  = 20
)

// saveWait is how long the save loop waits after a save that took d.
func saveWait(d time.Duration) time.Duration { return max(saveEvery, saveCost*d) }

// saveLoop writes the view when it changed, until ctx ends.
func (s *Source) saveLoop(ctx context.Context) error {
	if s.cfg.StateFile == "" {
		<-ctx.Done()
		return nil
	}
	var last [nKinds]uint64
	wait := saveEvery
	for first := true; ; first = false {
		if g := s.generations(); first || g != last {
			start := time.Now()
			if err := SaveView(s.cfg.StateFile, s.live()); err != nil {
				s.cfg.Log.Warn("save the Kubernetes objects for a restart without the API server", "err", err)
			} else {
				last = g
			}
			wait = saveWait(time.Since(start))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func (s *Source) generations() (g [nKinds]uint64) {
	for k := range g {
		g[k] = s.gens[k].Load()
	}
	return g
}

func (s *Source) changed(k int) {
	s.gens[k].Add(1)
	s.mu.Lock()
	s.status.LastContact = time.Now()
	s.status.LastError = ""
	s.mu.Unlock()
	if s.synced.Load() {
		s.notify()
	}
}

func (s *Source) watchError(kind string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	msg := fmt.Sprintf("watch %s on %s: %v", kind, s.cfg.Server, err)
	s.mu.Lock()
	repeat := s.status.LastError == msg
	s.status.LastError, s.status.LastErrorAt = msg, time.Now()
	if Unreachable(err) {
		s.status.LastUnreachable = s.status.LastErrorAt
	}
	s.mu.Unlock()
	if !repeat {
		s.cfg.Log.Warn("Kubernetes API watch failed; the data plane stays as it is while client-go retries", "kind", kind, "server", s.cfg.Server, "err", err)
	}
}

// Contacted records an answer of the API server (from a probe).
func (s *Source) Contacted(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.status.LastError, s.status.LastErrorAt = err.Error(), time.Now()
		return
	}
	s.status.LastContact, s.status.LastError = time.Now(), ""
}

// Status is the Source's link to the API server now.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Synced reports whether the Source serves objects (its caches synced, or
// a saved view).
func (s *Source) Synced() bool { return s.synced.Load() || s.saved != nil }

func (s *Source) notify() {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Subscribe implements cluster.Source: it fires after informer changes
// and after gossip changes (leases, pod addresses).
func (s *Source) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.subMu.Lock()
	s.subs[ch] = struct{}{}
	s.subMu.Unlock()
	stCh, stStop := s.cfg.Store.Subscribe()
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-stCh:
				select {
				case ch <- struct{}{}:
				default:
				}
			}
		}
	}()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			stStop()
			close(done)
			s.subMu.Lock()
			delete(s.subs, ch)
			s.subMu.Unlock()
		})
	}
}

// view is what the Source serves now: the informers' caches once synced,
// else the saved view; ok is false with neither. epoch moves when it
// switches from the saved view to the caches.
func (s *Source) view() (v *View, epoch uint64, ok bool) {
	if s.synced.Load() {
		return s.live(), 2, true
	}
	if s.saved != nil {
		return s.saved, 1, true
	}
	return nil, 0, false
}

// live lists the informers' caches.
func (s *Source) live() *View {
	return &View{
		Pods:         list[*Pod](s.inf[kPods]),
		Namespaces:   list[*corev1.Namespace](s.inf[kNamespaces]),
		Policies:     list[*networkingv1.NetworkPolicy](s.inf[kPolicies]),
		Services:     list[*CachedService](s.inf[kServices]),
		Slices:       list[*Slice](s.inf[kSlices]),
		AddressPools: list[*unstructured.Unstructured](s.inf[kPools]),
		Nodes:        list[*corev1.Node](s.inf[kNodes]),
		ServiceCIDRs: list[*networkingv1.ServiceCIDR](s.inf[kServiceCIDRs]),
	}
}

func list[T any](inf cache.SharedIndexInformer) []T {
	items := inf.GetStore().List()
	out := make([]T, 0, len(items))
	for _, it := range items {
		if v, ok := it.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// Objects implements cluster.Source. Each part is rebuilt only when the
// kinds it reads changed; unchanged parts keep their pointers.
func (s *Source) Objects() cluster.Objects {
	leases, gLease := s.gossip.Leases()
	addrs, gAddr := s.gossip.PodAddresses()
	g := s.generations()
	v, epoch, ok := s.view()
	if !ok {
		// Whether the cluster assigns pod subnets is not known yet.
		wait := cluster.NodeSubnet{Wait: "the Kubernetes API caches have not synced yet (the Node's spec.podCIDR may assign this node's pod subnet)"}
		return cluster.Objects{Leases: leases, NodeSubnet: wait, Gen: cluster.Gens{Leases: gLease}}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &s.cache
	if c.epoch != epoch {
		*c = derived{epoch: epoch, polGen: c.polGen, poolGen: c.poolGen, svcGen: c.svcGen, podsGen: c.podsGen, problems: map[string]string{}}
	}
	if k := [5]uint64{epoch, g[kPods], g[kNamespaces], g[kPolicies], gAddr}; c.pol == nil || k != c.polKey {
		c.pol = &policy.Snapshot{Pods: PolicyPods(v.Pods, addrs), Namespaces: NamespaceLabels(v.Namespaces), Policies: Policies(v.Policies)}
		c.polKey = k
		c.polGen++
	}
	if k := [3]uint64{epoch, g[kPools], g[kServiceCIDRs]}; c.pools == nil || k != c.poolKey {
		c.pools = s.pools(v.AddressPools, ServiceCIDRs(v.ServiceCIDRs))
		c.poolKey = k
		c.poolGen++
	}
	if k := [3]uint64{epoch, g[kServices], c.poolGen}; c.svcs == nil || k != c.svcKey {
		c.svcs = s.services(v.Services, c.pools)
		c.svcKey = k
		c.svcGen++
	}
	if k := [2]uint64{epoch, g[kSlices]}; c.eps == nil || k != c.epKey {
		c.eps = c.epCache.Update(v.Slices)
		c.epKey = k
	}
	if k := [4]uint64{epoch, g[kPods], gAddr, g[kSlices]}; k != c.podsKey {
		c.podsKey = k
		c.podsGen++
	}
	if k := [2]uint64{epoch, g[kNodes]}; k != c.nodesKey {
		c.nodeSubnet = NodeSubnet(v.Nodes, s.cfg.Node)
		c.nodesKey = k
	}
	return cluster.Objects{Leases: leases, NodeSubnet: c.nodeSubnet, Policy: c.pol, Services: c.svcs, Pools: c.pools, Endpoints: c.eps,
		Gen: cluster.Gens{Leases: gLease, Policy: c.polGen, Services: c.svcGen, Pools: c.poolGen, Pods: c.podsGen}}
}

// pools translates the AddressPools, oldest first; one that does not
// parse or overlaps an older pool, the cluster CIDR or a service CIDR is
// logged once and left out (the CRD's schema cannot see overlaps).
func (s *Source) pools(us []*unstructured.Unstructured, serviceCIDRs []netip.Prefix) []lb.Pool {
	sorted := slices.Clone(us)
	slices.SortFunc(sorted, func(a, b *unstructured.Unstructured) int {
		return cmp.Or(a.GetCreationTimestamp().Compare(b.GetCreationTimestamp().Time), cmp.Compare(a.GetName(), b.GetName()))
	})
	out := make([]lb.Pool, 0, len(us))
	for _, u := range sorted {
		p, err := Pool(u)
		if err == nil {
			err = lb.CheckPool(p, out, s.cfg.ClusterCIDR, netip.Prefix{})
		}
		for _, sc := range serviceCIDRs {
			if err == nil {
				err = lb.CheckPool(p, nil, netip.Prefix{}, sc)
			}
		}
		if err != nil {
			s.problem("AddressPool/"+u.GetName(), err)
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b lb.Pool) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// services translates the Services; one netloom cannot serve is logged
// once and left out.
func (s *Source) services(svcs []*CachedService, pools []lb.Pool) []lb.Service {
	out := make([]lb.Service, 0, len(svcs))
	for _, svc := range svcs {
		ls, err := svc.Service(s.cfg.Proxy, pools)
		if err != nil {
			s.problem("Service/"+svc.Namespace+"/"+svc.Name, err)
			continue
		}
		out = append(out, ls)
	}
	return out
}

// problem logs an object netloom leaves out, once per message. s.mu is
// held.
func (s *Source) problem(what string, err error) {
	if s.cache.problems[what] == err.Error() {
		return
	}
	s.cache.problems[what] = err.Error()
	s.cfg.Log.Warn("Kubernetes object left out", "object", what, "err", err)
}

// LoadView reads a saved view; a missing file is no view. A damaged file
// is an error naming it and the fix.
func LoadView(path string) (*View, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var in struct {
		View
		// Saved before the cache kept Slices: the API objects.
		OldSlices []*discoveryv1.EndpointSlice `json:"endpointSlices"`
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("%s is damaged (%v): remove it, and the agent reads the objects from the API server again", path, err)
	}
	for _, sl := range in.OldSlices {
		in.Slices = append(in.Slices, stripSlice(sl))
	}
	return &in.View, nil
}

// SaveView writes v to path atomically. It encodes one object at a time
// into the file: with thousands of objects the whole encoding at once
// would be a buffer of many megabytes every few seconds, which the agent's
// resident memory would keep.
func SaveView(path string, v *View) error {
	f, err := renameio.NewPendingFile(path, renameio.WithPermissions(0o600))
	if err != nil {
		return err
	}
	defer f.Cleanup()
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	w.WriteByte('{')
	err = errors.Join(
		writeList(w, enc, "pods", v.Pods, true),
		writeList(w, enc, "namespaces", v.Namespaces, false),
		writeList(w, enc, "networkPolicies", v.Policies, false),
		writeList(w, enc, "services", v.Services, false),
		writeList(w, enc, "slices", v.Slices, false),
		writeList(w, enc, "addressPools", v.AddressPools, false),
		writeList(w, enc, "nodes", v.Nodes, false),
		writeList(w, enc, "serviceCIDRs", v.ServiceCIDRs, false))
	if err != nil {
		return err
	}
	w.WriteByte('}')
	if err := w.Flush(); err != nil { // the writer keeps its first error
		return err
	}
	return f.CloseAtomicallyReplace()
}

// writeList writes `"name":[item,...]` (after a comma unless first) as
// View's JSON has it.
func writeList[T any](w *bufio.Writer, enc *json.Encoder, name string, items []T, first bool) error {
	if !first {
		w.WriteByte(',')
	}
	w.WriteString(`"` + name + `":[`)
	for i, it := range items {
		if i > 0 {
			w.WriteByte(',')
		}
		if err := enc.Encode(it); err != nil {
			return fmt.Errorf("encode %s: %w", name, err)
		}
	}
	w.WriteByte(']')
	return nil
}

// Service is the cached Service of k, nil when unknown.
func (s *Source) Service(k lb.ServiceKey) *CachedService {
	if !s.synced.Load() {
		return nil
	}
	o, ok, err := s.inf[kServices].GetStore().GetByKey(k.Namespace + "/" + k.Name)
	if err != nil || !ok {
		return nil
	}
	svc, _ := o.(*CachedService)
	return svc
}

// Pod is the pod ns/name as the Source serves it now (caches, or the
// saved view), nil when unknown.
func (s *Source) Pod(ns, name string) *Pod {
	if s.synced.Load() {
		o, ok, err := s.inf[kPods].GetStore().GetByKey(ns + "/" + name)
		if err != nil || !ok {
			return nil
		}
		p, _ := o.(*Pod)
		return p
	}
	if s.saved != nil {
		for _, p := range s.saved.Pods {
			if p.Namespace == ns && p.Name == name {
				return p
			}
		}
	}
	return nil
}

// WaitPod waits until the pod ns/name with uid ("" = any) is known, so
// that its labels are in the next snapshot, for at most wait. The error
// says why it is not: the kubelet retries ADD.
func (s *Source) WaitPod(ctx context.Context, ns, name, uid string, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		if p := s.Pod(ns, name); p != nil && (uid == "" || string(p.UID) == uid) {
			return nil
		}
		select {
		case <-ctx.Done():
			st := s.Status()
			switch {
			case !s.Synced():
				return fmt.Errorf("pod %s/%s: netloom has not read the Kubernetes API yet (%s), so its labels and policies are unknown; the kubelet will retry", ns, name, cmp.Or(st.LastError, "caches not synced"))
			case st.LastError != "":
				return fmt.Errorf("pod %s/%s is not known to netloom (%s); the kubelet will retry", ns, name, st.LastError)
			}
			return fmt.Errorf("pod %s/%s (uid %s) has not reached netloom from the API server %s within %s; the kubelet will retry", ns, name, uid, s.cfg.Server, wait)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Object is one API object as `netloom get` shows it.
type Object struct {
	Namespace, Name string
	JSON            json.RawMessage
}

// List is the objects of a kind ("Pod", "Namespace", "NetworkPolicy",
// "Service", "AddressPool"), of one namespace unless ns is "", as the
// Source serves them now (nil for other kinds), with apiVersion and kind.
func (s *Source) List(kind, ns string) []Object {
	v, _, ok := s.view()
	if !ok {
		return nil
	}
	var out []Object
	add := func(apiVersion, objNS, name string, o any) {
		if ns != "" && objNS != ns {
			return
		}
		b, err := json.Marshal(o)
		if err != nil {
			return
		}
		// The informers' objects carry no type: set it for the views.
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) != nil {
			return
		}
		m["apiVersion"], _ = json.Marshal(apiVersion)
		m["kind"], _ = json.Marshal(kind)
		if b, err = json.Marshal(m); err == nil {
			out = append(out, Object{Namespace: objNS, Name: name, JSON: b})
		}
	}
	switch kind {
	case "Pod":
		for _, o := range v.Pods {
			add("v1", o.Namespace, o.Name, o)
		}
	case "Namespace":
		for _, o := range v.Namespaces {
			add("v1", "", o.Name, o)
		}
	case "NetworkPolicy":
		for _, o := range v.Policies {
			add("networking.k8s.io/v1", o.Namespace, o.Name, o)
		}
	case "Service":
		for _, o := range v.Services {
			add("v1", o.Namespace, o.Name, o.API())
		}
	case "AddressPool":
		for _, o := range v.AddressPools {
			add(manifests.GroupVersion.String(), "", o.GetName(), o.Object)
		}
	}
	return out
}
