package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/kube/devapi"
	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/demo"
	networkingv1 "k8s.io/api/networking/v1"
)

// bulkNamespaces hold the unrelated policies and the bulk pods.
const bulkNamespaces = 5

// e2eRun is the end-to-end benchmark's cluster and what it applied.
type e2eRun struct {
	ctx context.Context
	o   options
	log *slog.Logger
	cl  *demo.Cluster

	specs    []podSpec
	pods     map[string]*demo.Pod // "ns/name"
	nsLabels map[string]map[string]string
	pols     map[string]*networkingv1.NetworkPolicy
	api      map[string]*api.Client // node name

	client, near, server *demo.Pod
	// objectPods are pods that exist as objects with an address but are
	// not attached (scale-mem), for the expected policy rules.
	objectPods []policy.Pod
	// kube, when set, is the API server the objects go to.
	kube *kubeRun
}

// phase is one visit of a policy configuration and what was measured in
// it. The configurations are visited in turns (none, unrelated, selected,
// none, ...), so that a drift of the machine's speed spreads over all of
// them.
type phase struct {
	name     string // the configuration
	round    int
	policies int
	sync     map[string]time.Duration // node -> apply until its compiled rules matched
	rules    map[string]int
	reconMS  map[string]float64 // node -> mean firewall reconcile pass during the measurements
	cpu      map[string]float64 // node -> agent CPU, percent of one core, during the measurements
	cross    []iperfResult
	same     []iperfResult
	// the same runs with both agents stopped (SIGSTOP): the data plane
	// alone, without the agents' CPU
	crossFrozen, sameFrozen []iperfResult
	conn                    connResult
	rss                     map[string]map[string]int64 // node -> VmRSS, VmHWM, RssAnon (kB)
	toggles                 []toggle
}

// Configurations.
const (
	cfgNone      = "none"
	cfgAllow     = "1 (the allow policy)"
	cfgUnrelated = "unrelated"
	cfgSelected  = "selecting the server"
)

func e2e(ctx context.Context, dir string, o options, log *slog.Logger, w io.Writer) (err error) {
	start := time.Now()
	r, done, err := startE2E(ctx, dir, o, log, nil)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, done()) }()
	fmt.Fprintf(os.Stderr, "cluster ready after %s\n", time.Since(start).Round(time.Second))

	allow := []*networkingv1.NetworkPolicy{allowPolicy(true)}
	configs := map[string][]*networkingv1.NetworkPolicy{
		cfgNone:      nil,
		cfgAllow:     allow,
		cfgUnrelated: append(unrelatedPolicies(o.policies, bulkNamespaces), allow...),
		cfgSelected:  append(serverPolicies(o.policies), allow...),
	}
	var phases []*phase
	visit := func(cfg string, round int, measure, toggles bool) error {
		p, err := r.enter(cfg, configs[cfg])
		if err != nil {
			return err
		}
		p.round = round
		phases = append(phases, p)
		if measure {
			if err := r.measure(p); err != nil {
				return fmt.Errorf("%s: %w", cfg, err)
			}
		}
		if toggles {
			if err := r.toggles(p); err != nil {
				return fmt.Errorf("%s: %w", cfg, err)
			}
		}
		return nil
	}
	if err := visit(cfgNone, 0, true, false); err != nil {
		return err
	}
	if err := visit(cfgAllow, 0, false, true); err != nil {
		return err
	}
	for round := 1; round <= o.rounds; round++ {
		for _, cfg := range []string{cfgUnrelated, cfgSelected, cfgNone} {
			if err := visit(cfg, round, true, round == 1 && cfg != cfgNone); err != nil {
				return err
			}
		}
	}
	report(w, o, phases)
	fmt.Fprintf(w, "wall time of the end-to-end benchmark: %s\n\n", time.Since(start).Round(time.Second))
	return nil
}

// startE2E builds the benchmark's 2-node cluster, with the agents in
// Kubernetes mode when bins is not nil (a control plane in the switch
// namespace, the objects through the API), and sets it up. done removes it.
func startE2E(ctx context.Context, dir string, o options, log *slog.Logger, bins *devapi.Binaries) (r *e2eRun, done func() error, err error) {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	cl, err := demo.Build(ctx, demo.Options{
		Prefix: "nlp" + hex.EncodeToString(b), Nodes: 2, PodsPerNode: -1, Exe: o.exe,
		StateDir: filepath.Join(dir, "demo-"+hex.EncodeToString(b)), Log: log,
	})
	if err != nil {
		return nil, nil, err
	}
	r = &e2eRun{ctx: ctx, o: o, log: log, cl: cl, pods: map[string]*demo.Pod{}, nsLabels: map[string]map[string]string{},
		pols: map[string]*networkingv1.NetworkPolicy{}, api: map[string]*api.Client{}}
	done = func() error {
		var errs []error
		if r.kube != nil {
			errs = append(errs, r.kube.srv.Stop())
		}
		if derr := cl.Down(); derr != nil {
			errs = append(errs, fmt.Errorf("remove the benchmark cluster: %w", derr))
		}
		return errors.Join(errs...)
	}
	if bins != nil {
		if r.kube, err = startKube(ctx, cl, *bins); err != nil {
			return nil, nil, errors.Join(err, done())
		}
	}
	if err := r.setup(); err != nil {
		return nil, nil, errors.Join(err, done())
	}
	return r, done, nil
}

// setup starts the agents, attaches the pods (client and server on
// different nodes, a second client on the server's node, two bulk pods per
// bulk namespace), applies the Namespace and Pod objects and starts the
// servers.
func (r *e2eRun) setup() error {
	if err := r.cl.StartAgents(r.ctx); err != nil {
		return err
	}
	if err := r.cl.WaitReady(r.ctx, 90*time.Second); err != nil {
		return err
	}
	for _, n := range r.cl.Nodes {
		r.api[n.Name] = api.NewClient(n.Socket)
	}
	r.nsLabels["perf"] = map[string]string{"team": "perf"}
	r.specs = []podSpec{
		{"perf", "client", 1, map[string]string{"role": "client"}},
		{"perf", "server", 2, map[string]string{"role": "server"}},
		{"perf", "near", 2, map[string]string{"role": "client"}},
	}
	for i := range bulkNamespaces {
		ns := fmt.Sprintf("bulk-%d", i)
		r.nsLabels[ns] = map[string]string{"team": "bulk", "idx": strconv.Itoa(i)}
		for j := range 2 {
			r.specs = append(r.specs, podSpec{ns, fmt.Sprintf("b%d", j), j + 1, map[string]string{"app": fmt.Sprintf("bulk-%d", (i+j)%5)}})
		}
	}
	var objs []any
	for _, ns := range sortedKeys(r.nsLabels) {
		objs = append(objs, namespaceObj(ns, r.nsLabels[ns]))
	}
	if r.kube != nil {
		// A pod's namespace and object exist before the kubelet runs the
		// CNI ADD.
		if err := r.kube.apply(r.ctx, objs, false); err != nil {
			return err
		}
		objs = nil
	}
	for _, s := range r.specs {
		var p *demo.Pod
		var err error
		if r.kube != nil {
			p, err = r.kube.addPod(r.ctx, r.cl, s)
		} else {
			p, err = r.cl.AddPodIn(r.ctx, r.cl.Nodes[s.node-1], s.ns, s.name)
			objs = append(objs, podObj(s))
		}
		if err != nil {
			return err
		}
		r.pods[s.ns+"/"+s.name] = p
	}
	r.client, r.near, r.server = r.pods["perf/client"], r.pods["perf/near"], r.pods["perf/server"]
	if err := r.apply(r.cl.Nodes[0], objs, false); err != nil {
		return err
	}
	if _, err := r.cl.StartProcess("iperf3-server", r.server.NS, "iperf3", "-s", "-p", strconv.Itoa(iperfPort)); err != nil {
		return err
	}
	// The connection server: accept and close, in this process.
	var ln net.Listener
	if err := demo.Do(r.server.NS, func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", connPort))
		return err
	}); err != nil {
		return fmt.Errorf("connection server: %w", err)
	}
	go func() {
		<-r.ctx.Done()
		ln.Close()
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := exec.CommandContext(r.ctx, "ip", "netns", "exec", r.server.NS, "ss", "-Hltn", fmt.Sprintf("sport = :%d", iperfPort)).Output()
		_, err := dialIn(r.client.NS, netip.AddrPortFrom(r.server.IP, connPort), time.Second)
		if err == nil && strings.TrimSpace(string(out)) != "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("servers in %s not listening or not reachable from %s: %v", r.server.NS, r.client.NS, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// apply sends objs to node n's agent (`netloom apply` / `netloom delete`
// through the API) and records them.
func (r *e2eRun) apply(n *demo.Node, objs []any, del bool) error {
	if len(objs) == 0 {
		return nil
	}
	if r.kube != nil {
		if err := r.kube.apply(r.ctx, objs, del); err != nil {
			return err
		}
		r.record(objs, del)
		return nil
	}
	m, err := manifest(objs)
	if err != nil {
		return err
	}
	path := api.PathApply
	if del {
		path = api.PathDelete
	}
	ctx, cancel := context.WithTimeout(r.ctx, 120*time.Second)
	defer cancel()
	var resp api.ApplyResponse
	if err := r.api[n.Name].Do(ctx, "POST", path, api.ApplyRequest{Manifest: m}, &resp); err != nil {
		return fmt.Errorf("apply %d objects on %s: %w", len(objs), n.Name, err)
	}
	r.record(objs, del)
	return nil
}

// record notes the policies applied or deleted.
func (r *e2eRun) record(objs []any, del bool) {
	for _, o := range objs {
		if p, ok := o.(*networkingv1.NetworkPolicy); ok {
			if del {
				delete(r.pols, policy.PolicyKey(p))
			} else {
				r.pols[policy.PolicyKey(p)] = p
			}
		}
	}
}

func (r *e2eRun) snapshot() *policy.Snapshot {
	s := &policy.Snapshot{Namespaces: map[string]map[string]string{}}
	for ns, l := range r.nsLabels {
		s.Namespaces[ns] = l
	}
	for _, sp := range r.specs {
		p := r.pods[sp.ns+"/"+sp.name]
		s.Pods = append(s.Pods, policy.Pod{Namespace: sp.ns, Name: sp.name, IP: p.IP, Node: p.Node, Labels: sp.labels, Ports: podPorts})
	}
	s.Pods = append(s.Pods, r.objectPods...)
	for _, k := range sortedKeys(r.pols) {
		s.Policies = append(s.Policies, r.pols[k])
	}
	return s
}

// enter makes want the cluster's policy set (one delete and one apply
// request to node1, for what differs), then waits until every node's
// compiled policy rules are what this snapshot compiles to and the client
// reaches the server.
func (r *e2eRun) enter(name string, want []*networkingv1.NetworkPolicy) (*phase, error) {
	keep := map[string]bool{}
	var add, del []any
	for _, p := range want {
		k := policy.PolicyKey(p)
		keep[k] = true
		if _, ok := r.pols[k]; !ok {
			add = append(add, p)
		}
	}
	for _, k := range sortedKeys(r.pols) {
		if !keep[k] {
			del = append(del, r.pols[k])
		}
	}
	fmt.Fprintf(os.Stderr, "%s: applying %d, deleting %d policies\n", name, len(add), len(del))
	start := time.Now()
	if err := r.apply(r.cl.Nodes[0], del, true); err != nil {
		return nil, err
	}
	if err := r.apply(r.cl.Nodes[0], add, false); err != nil {
		return nil, err
	}
	p := &phase{name: name, policies: len(r.pols), sync: map[string]time.Duration{}, rules: map[string]int{}}
	snap := r.snapshot()
	for _, n := range r.cl.Nodes {
		c := policy.Compile(snap, n.Name, policy.Options{})
		for _, ch := range c.Model.Chains {
			p.rules[n.Name] += len(ch.Rules)
		}
	}
	deadline := start.Add(5 * time.Minute)
	for len(p.sync) < len(r.cl.Nodes) {
		for _, n := range r.cl.Nodes {
			if _, done := p.sync[n.Name]; done {
				continue
			}
			st, err := r.status(n)
			if err == nil && st.Node.PolicyRules == p.rules[n.Name] {
				p.sync[n.Name] = time.Since(start)
				fmt.Fprintf(os.Stderr, "  %s: %d policy rules after %s\n", n.Name, p.rules[n.Name], p.sync[n.Name].Round(time.Millisecond))
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: nodes did not compile the expected rules %v within 5 minutes (in sync: %v)", name, p.rules, p.sync)
		}
		if err := sleep(r.ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	// The table is applied right after it is compiled; give the kernel
	// transaction its moment, then check that the client reaches the
	// server (the connection port is open in every configuration).
	if err := sleep(r.ctx, 2*time.Second); err != nil {
		return nil, err
	}
	for _, c := range []*demo.Pod{r.client, r.near} {
		if _, err := dialIn(c.NS, netip.AddrPortFrom(r.server.IP, connPort), 2*time.Second); err != nil {
			return nil, fmt.Errorf("%s: the allowed flow %s -> server does not connect: %w", name, c.NS, err)
		}
	}
	return p, nil
}

func (r *e2eRun) status(n *demo.Node) (*api.Status, error) {
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	var st api.Status
	if err := r.api[n.Name].Do(ctx, "GET", api.PathStatus, nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// measure runs the throughput, connection-rate and memory measurements of
// a phase.
func (r *e2eRun) measure(p *phase) error {
	m0 := map[string]metrics{}
	cpu0 := map[string]time.Duration{}
	for _, n := range r.cl.Nodes {
		m0[n.Name], _ = r.metrics(n)
		cpu0[n.Name] = procCPU(n.Agent.Pid)
	}
	t0 := time.Now()
	for _, c := range []struct {
		from *demo.Pod
		out  *[]iperfResult
	}{{r.client, &p.cross}, {r.near, &p.same}} {
		res, err := r.iperf(c.from)
		if err != nil {
			return err
		}
		*c.out = append(*c.out, res)
		fmt.Fprintf(os.Stderr, "  %s round %d %s -> server: %.2f Gbit/s, %d retransmits\n", p.name, p.round, c.from.Name, res.gbps, res.retrans)
	}
	var err error
	if p.conn, err = r.connRate(r.client); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "  %s connections: %.0f/s, p50 %s, p99 %s, %d failed\n", p.name, p.conn.perSec, p.conn.p50, p.conn.p99, p.conn.failed)
	p.rss = map[string]map[string]int64{}
	p.reconMS = map[string]float64{}
	p.cpu = map[string]float64{}
	wall := time.Since(t0)
	for _, n := range r.cl.Nodes {
		p.cpu[n.Name] = 100 * float64(procCPU(n.Agent.Pid)-cpu0[n.Name]) / float64(wall)
		st, err := procStatus(n.Agent.Pid)
		if err != nil {
			return fmt.Errorf("agent %s: %w", n.Name, err)
		}
		p.rss[n.Name] = st
		m1, err := r.metrics(n)
		if err != nil {
			return err
		}
		if m1.reconErrors > m0[n.Name].reconErrors {
			return fmt.Errorf("agent %s: %.0f failed firewall reconcile passes during phase %s (see %s)", n.Name, m1.reconErrors-m0[n.Name].reconErrors, p.name, n.LogPath)
		}
		if dc := m1.reconCount - m0[n.Name].reconCount; dc > 0 {
			p.reconMS[n.Name] = 1000 * (m1.reconSum - m0[n.Name].reconSum) / dc
		}
	}
	return r.frozen(func() error {
		for _, c := range []struct {
			from *demo.Pod
			out  *[]iperfResult
		}{{r.client, &p.crossFrozen}, {r.near, &p.sameFrozen}} {
			res, err := r.iperf(c.from)
			if err != nil {
				return err
			}
			*c.out = append(*c.out, res)
			fmt.Fprintf(os.Stderr, "  %s round %d %s -> server, agents stopped: %.2f Gbit/s, %d retransmits\n", p.name, p.round, c.from.Name, res.gbps, res.retrans)
		}
		return nil
	})
}

// frozen runs f with every agent stopped (SIGSTOP), so that what f
// measures is the kernel's data plane (and the WireGuard companions)
// without the agents' CPU; then it continues them and waits until the
// cluster is ready again.
func (r *e2eRun) frozen(f func() error) error {
	var stopped []int
	for _, n := range r.cl.Nodes {
		if err := syscall.Kill(n.Agent.Pid, syscall.SIGSTOP); err != nil {
			for _, pid := range stopped {
				_ = syscall.Kill(pid, syscall.SIGCONT)
			}
			return fmt.Errorf("stop agent %s: %w", n.Name, err)
		}
		stopped = append(stopped, n.Agent.Pid)
	}
	ferr := f()
	var errs []error
	for _, pid := range stopped {
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			errs = append(errs, fmt.Errorf("continue agent pid %d: %w", pid, err))
		}
	}
	if err := r.cl.WaitReady(r.ctx, 60*time.Second); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(append([]error{ferr}, errs...)...)
}

// ---- iperf3 ----

type iperfResult struct {
	gbps    float64
	retrans int
}

func (r *e2eRun) iperf(from *demo.Pod) (iperfResult, error) {
	args := []string{"netns", "exec", from.NS, "iperf3", "-c", r.server.IP.String(), "-p", strconv.Itoa(iperfPort), "-t", strconv.Itoa(r.o.duration), "-J"}
	var out []byte
	var err error
	for try := range 10 { // the server may still be finishing the last test
		if err := sleep(r.ctx, 500*time.Millisecond); err != nil {
			return iperfResult{}, err
		}
		out, err = exec.CommandContext(r.ctx, "ip", args...).Output()
		if err == nil || r.ctx.Err() != nil {
			break
		}
		r.log.Info("iperf3 failed; retrying", "try", try, "err", err, "out", strings.TrimSpace(string(out)))
		time.Sleep(time.Second)
	}
	var j struct {
		End struct {
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal(out, &j); jerr != nil {
		return iperfResult{}, fmt.Errorf("iperf3 from %s: %w (%v)", from.NS, errors.Join(err, jerr), strings.TrimSpace(string(out)))
	}
	if j.Error != "" {
		return iperfResult{}, fmt.Errorf("iperf3 from %s: %s", from.NS, j.Error)
	}
	return iperfResult{gbps: j.End.SumReceived.BitsPerSecond / 1e9, retrans: j.End.SumSent.Retransmits}, nil
}

// ---- connection rate ----

type connResult struct {
	perSec   float64
	p50, p99 time.Duration
	failed   int
}

// connRate opens o.conns TCP connections one after the other from pod
// from to the server's connection port (accepted and closed at once): the
// first packet of each is a new connection the policy chains judge.
func (r *e2eRun) connRate(from *demo.Pod) (connResult, error) {
	var lat []time.Duration
	failed := 0
	addr := netip.AddrPortFrom(r.server.IP, connPort).String()
	var elapsed time.Duration
	err := demo.Do(from.NS, func() error {
		start := time.Now()
		for range r.o.conns {
			t := time.Now()
			c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
			if err != nil {
				failed++
				continue
			}
			lat = append(lat, time.Since(t))
			c.Close()
		}
		elapsed = time.Since(start)
		return nil
	})
	if err != nil {
		return connResult{}, err
	}
	slices.Sort(lat)
	res := connResult{perSec: float64(r.o.conns) / elapsed.Seconds(), failed: failed}
	if len(lat) > 0 {
		res.p50 = lat[len(lat)/2].Round(time.Microsecond)
		res.p99 = lat[len(lat)*99/100].Round(time.Microsecond)
	}
	return res, nil
}

// ---- apply to enforcement ----

type toggle struct {
	on   string // node the apply went to
	open bool   // the change opened the connection port (else closed it)
	took time.Duration
	lag  time.Duration // node2's store sync lag of the change (gossip), when applied on node1
}

// toggles closes and opens the connection port for the client by applying
// the allow policy without and with it, o.toggles times on each node, and
// measures from the apply request to the moment new connections follow:
// a prober starts a connection every 5 ms (each with 250 ms to connect);
// the change is in force at the start time of the first attempt from
// which on every attempt has the new outcome.
func (r *e2eRun) toggles(p *phase) error {
	addr := netip.AddrPortFrom(r.server.IP, connPort)
	for i := range r.o.toggles {
		for _, n := range []*demo.Node{r.cl.Nodes[1], r.cl.Nodes[0]} {
			for _, open := range []bool{false, true} {
				m0, _ := r.metrics(r.cl.Nodes[1])
				took, err := r.toggleOnce(n, open, addr)
				if err != nil {
					return err
				}
				tg := toggle{on: n.Name, open: open, took: took}
				if m1, err := r.metrics(r.cl.Nodes[1]); err == nil && n != r.cl.Nodes[1] && m1.lagCount > m0.lagCount {
					tg.lag = time.Duration(float64(time.Second) * (m1.lagSum - m0.lagSum) / (m1.lagCount - m0.lagCount))
				}
				p.toggles = append(p.toggles, tg)
				fmt.Fprintf(os.Stderr, "  %s toggle %d on %s open=%v: %s (gossip lag %s)\n", p.name, i+1, n.Name, open, took.Round(time.Millisecond), tg.lag.Round(time.Millisecond))
			}
		}
	}
	return nil
}

func (r *e2eRun) toggleOnce(n *demo.Node, open bool, addr netip.AddrPort) (time.Duration, error) {
	type attempt struct {
		at time.Duration
		ok bool
	}
	var mu sync.Mutex
	var atts []attempt
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t0 := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				at := time.Since(t0)
				_, err := dialIn(r.client.NS, addr, 250*time.Millisecond)
				mu.Lock()
				atts = append(atts, attempt{at, err == nil})
				mu.Unlock()
			}()
		}
	}()
	if err := sleep(r.ctx, 300*time.Millisecond); err != nil {
		close(stop)
		wg.Wait()
		return 0, err
	}
	applied := time.Since(t0)
	if err := r.apply(n, []any{allowPolicy(open)}, false); err != nil {
		close(stop)
		wg.Wait()
		return 0, err
	}
	// Wait until 1 s of attempts agree with the new verdict, 30 s at most.
	var took time.Duration
	deadline := time.Now().Add(30 * time.Second)
	for {
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		done := slices.Clone(atts)
		mu.Unlock()
		slices.SortFunc(done, func(a, b attempt) int { return int(a.at - b.at) })
		// the last attempt with the old outcome, among those finished
		last := -1
		for i, a := range done {
			if a.ok != open {
				last = i
			}
		}
		horizon := time.Since(t0) - 300*time.Millisecond // attempts started before this have finished
		if last+1 < len(done) && done[last+1].at < horizon-time.Second && done[last+1].at > applied {
			took = done[last+1].at - applied
			break
		}
		if time.Now().After(deadline) {
			close(stop)
			wg.Wait()
			return 0, fmt.Errorf("apply of the allow policy (open=%v) on %s: not in force after 30 s", open, n.Name)
		}
	}
	close(stop)
	wg.Wait()
	return took, nil
}

// ---- agent metrics and memory ----

// metrics are the figures of an agent's /metrics the benchmark reads.
type metrics struct {
	reconSum, reconCount, reconErrors float64 // firewall reconcile passes
	lagSum, lagCount                  float64 // store sync lag of remote writes
}

// metrics reads node n's /metrics (served inside the node's namespace).
func (r *e2eRun) metrics(n *demo.Node) (metrics, error) {
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return demo.DialInNetns(n.NS, network, a, 5*time.Second)
		},
	}}
	resp, err := hc.Get("http://127.0.0.1:7947/metrics")
	if err != nil {
		return metrics{}, fmt.Errorf("metrics of %s: %w", n.Name, err)
	}
	defer resp.Body.Close()
	var m metrics
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		f := strings.Fields(l)
		if len(f) < 2 || strings.HasPrefix(l, "#") {
			continue
		}
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		fw := strings.Contains(l, `subsystem="firewall"`)
		switch {
		case fw && strings.HasPrefix(l, "netloom_reconcile_duration_seconds_sum"):
			m.reconSum = v
		case fw && strings.HasPrefix(l, "netloom_reconcile_duration_seconds_count"):
			m.reconCount = v
		case fw && strings.HasPrefix(l, "netloom_reconcile_errors_total"):
			m.reconErrors = v
		case strings.HasPrefix(l, "netloom_store_sync_lag_seconds_sum"):
			m.lagSum = v
		case strings.HasPrefix(l, "netloom_store_sync_lag_seconds_count"):
			m.lagCount = v
		}
	}
	return m, sc.Err()
}

// procCPU is the user+system CPU time of pid so far.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// procStatus reads fields (kB, or counts) of /proc/<pid>/status.
func procStatus(pid int) (map[string]int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	m := map[string]int64{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		if f := strings.Fields(v); len(f) > 0 {
			if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				m[k] = n
			}
		}
	}
	return m, nil
}

// ---- network namespaces ----

// dialIn connects from namespace ns to addr and closes the connection.
func dialIn(ns string, addr netip.AddrPort, timeout time.Duration) (time.Duration, error) {
	var took time.Duration
	err := demo.Do(ns, func() error {
		t := time.Now()
		c, err := net.DialTimeout("tcp4", addr.String(), timeout)
		if err != nil {
			return err
		}
		took = time.Since(t)
		return c.Close()
	})
	return took, err
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
