package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/netloom/netloom/node/demo"
)

// buildNetloom builds a demo cluster (userspace WireGuard) with the given
// nodes and pods per node and registers its Down with the env.
func buildNetloom(ctx context.Context, e *env, o options, nodes, pods int) (*demo.Cluster, error) {
	return buildNetloomAs(ctx, e, "nl", o.exe, nodes, pods)
}

// buildNetloomAs is buildNetloom for the binary exe, with namespaces and
// state named by tag, so that several clusters can run side by side.
func buildNetloomAs(ctx context.Context, e *env, tag, exe string, nodes, pods int) (*demo.Cluster, error) {
	cl, err := demo.Build(ctx, demo.Options{
		Prefix: e.id + "-" + tag, Nodes: nodes, PodsPerNode: pods, Exe: exe,
		StateDir: filepath.Join(e.dir, "demo-"+tag), WireGuard: "userspace", Log: e.log,
	})
	if err != nil {
		return nil, err
	}
	e.onCleanup(cl.Down)
	if err := cl.StartAgents(ctx); err != nil {
		return nil, err
	}
	if err := cl.WaitReady(ctx, 90*time.Second); err != nil {
		return nil, err
	}
	if err := cl.AddPods(ctx); err != nil {
		return nil, err
	}
	return cl, nil
}

// companionPid reads the pid file of node n's wg-companion.
func companionPid(n *demo.Node) (int, error) {
	b, err := os.ReadFile(filepath.Join(n.RunDir, n.WGIface+".pid"))
	if err != nil {
		return 0, fmt.Errorf("wg-companion of %s: %w", n.Name, err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func netloomPair(cl *demo.Cluster) (*pair, error) {
	return netloomPairAs(cl, "netloom")
}

func netloomPairAs(cl *demo.Cluster, name string) (*pair, error) {
	ps := cl.Pods()
	if len(ps) < 2 {
		return nil, fmt.Errorf("netloom cluster has %d pods, want 2", len(ps))
	}
	p := &pair{name: name, pods: [2]string{ps[0].NS, ps[1].NS}, podIP: [2]netip.Addr{ps[0].IP, ps[1].IP}}
	for _, n := range cl.Nodes {
		pid, err := companionPid(n)
		if err != nil {
			return nil, err
		}
		p.wgPids = append(p.wgPids, pid)
	}
	return p, nil
}

// iperfRun is one iperf3 client run.
type iperfRun struct {
	gbps     float64 // received
	retrans  int
	wgCPU    time.Duration // CPU time of the WireGuard processes during the run
	busy     float64       // machine CPU busy, percent of all cores
	gigabyte float64       // data received, GB
}

type iperfJSON struct {
	End struct {
		SumSent struct {
			Retransmits int `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Bytes         float64 `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

func runIperf(ctx context.Context, e *env, p *pair, streams, secs int) (iperfRun, error) {
	args := []string{"iperf3", "-c", p.podIP[1].String(), "-p", "5201", "-t", strconv.Itoa(secs), "-J"}
	if streams > 1 {
		args = append(args, "-P", strconv.Itoa(streams))
	}
	cpu0 := map[int]time.Duration{}
	for _, pid := range p.wgPids {
		cpu0[pid] = procCPU(pid)
	}
	b0, t0 := cpuBusy()
	var out string
	var err error
	for try := range 3 { // the server may still be finishing the last test
		out, err = e.exec(ctx, p.pods[0], args...)
		if err == nil || ctx.Err() != nil {
			break
		}
		e.log.Info("iperf3 failed; retrying", "config", p.name, "try", try, "err", err)
		time.Sleep(time.Second)
	}
	if err != nil {
		return iperfRun{}, fmt.Errorf("iperf3 %s -P %d: %w", p.name, streams, err)
	}
	b1, t1 := cpuBusy()
	var j iperfJSON
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		return iperfRun{}, fmt.Errorf("iperf3 %s: decode: %w", p.name, err)
	}
	if j.Error != "" {
		return iperfRun{}, fmt.Errorf("iperf3 %s: %s", p.name, j.Error)
	}
	r := iperfRun{gbps: j.End.SumReceived.BitsPerSecond / 1e9, retrans: j.End.SumSent.Retransmits, gigabyte: j.End.SumReceived.Bytes / 1e9}
	for _, pid := range p.wgPids {
		r.wgCPU += procCPU(pid) - cpu0[pid]
	}
	if t1 > t0 {
		r.busy = 100 * float64(b1-b0) / float64(t1-t0)
	}
	return r, nil
}

// startIperfServer starts iperf3 -s in the second pod and waits until it
// listens.
func startIperfServer(ctx context.Context, e *env, p *pair) error {
	if _, err := e.start(p.pods[1], "iperf3-server-"+p.name, nil, "iperf3", "-s", "-p", "5201"); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := e.exec(ctx, p.pods[1], "ss", "-Hltn", "sport = :5201")
		if strings.TrimSpace(out) != "" {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("iperf3 server in %s not listening after 10s", p.pods[1])
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	switch n := len(s); {
	case n == 0:
		return 0
	case n%2 == 1:
		return s[n/2]
	default:
		return (s[n/2-1] + s[n/2]) / 2
	}
}

func overlay(ctx context.Context, e *env, o options, w io.Writer) error {
	start := time.Now()
	plain, err := buildHand(ctx, e, "plain", "")
	if err != nil {
		return err
	}
	wggo, err := buildHand(ctx, e, "wggo", "wireguard-go")
	if err != nil {
		return err
	}
	wggoMod, err := buildHand(ctx, e, "wggo-mod", o.wgMod)
	if err != nil {
		return err
	}
	wggoModSid, err := buildHand(ctx, e, "wggo-mod-sid", o.wgMod)
	if err != nil {
		return err
	}
	comp, err := buildHand(ctx, e, "companion", o.exe)
	if err != nil {
		return err
	}
	cl, err := buildNetloom(ctx, e, o, 2, 1)
	if err != nil {
		return err
	}
	nl, err := netloomPair(cl)
	if err != nil {
		return err
	}
	pairs := []*pair{nl}
	var extra []string // configurations the flags added, for the ratios
	// addNetloom adds a netloom cluster of exe, named name, made ready by
	// prepare.
	addNetloom := func(tag, exe, name string, prepare func(*demo.Cluster) error) (*demo.Cluster, error) {
		c, err := buildNetloomAs(ctx, e, tag, exe, 2, 1)
		if err != nil {
			return nil, err
		}
		if err := prepare(c); err != nil {
			return nil, err
		}
		p, err := netloomPairAs(c, name)
		if err != nil {
			return nil, err
		}
		pairs, extra = append(pairs, p), append(extra, name)
		return c, nil
	}
	if o.baseExe != "" {
		if _, err := addNetloom("nb", o.baseExe, "netloom-base", func(*demo.Cluster) error { return nil }); err != nil {
			return err
		}
	}
	var rulesets string
	if o.load > 0 {
		cload, err := addNetloom("nd", o.exe, "netloom-load", func(c *demo.Cluster) error { return loadCluster(ctx, e, o, c) })
		if err != nil {
			return err
		}
		rulesets = fmt.Sprintf("nftables ruleset of the receiving node, lines: %d without the objects, %d with them", rulesetLines(ctx, e, cl.Nodes[1].NS), rulesetLines(ctx, e, cload.Nodes[1].NS))
	}
	pairs = append(pairs, wggo, wggoMod, wggoModSid, comp, plain)
	for _, p := range pairs {
		// a first packet also makes the WireGuard handshake
		if _, err := e.exec(ctx, p.pods[0], "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-w", "10", p.podIP[1].String()); err != nil {
			return fmt.Errorf("%s: pods cannot reach each other: %w", p.name, err)
		}
		if err := startIperfServer(ctx, e, p); err != nil {
			return err
		}
	}
	offload := companionOffloads(cl)

	streamsList := []int{1, 4}
	type key struct {
		cfg     string
		streams int
	}
	runs := map[key][]iperfRun{}
	for round := range o.rounds {
		// rotate the order so no configuration always runs first
		order := append(slices.Clone(pairs[round%len(pairs):]), pairs[:round%len(pairs)]...)
		for _, p := range order {
			for _, s := range streamsList {
				r, err := runIperf(ctx, e, p, s, o.duration)
				if err != nil {
					return err
				}
				e.log.Info("iperf3", "round", round+1, "config", p.name, "streams", s, "gbps", fmt.Sprintf("%.2f", r.gbps))
				fmt.Fprintf(os.Stderr, "round %d %-8s -P %d: %6.2f Gbit/s\n", round+1, p.name, s, r.gbps)
				runs[key{p.name, s}] = append(runs[key{p.name, s}], r)
			}
		}
	}

	fmt.Fprintf(w, "## Overlay throughput (iperf3 -t %d, pod to pod across two nodes, %d rounds)\n\n", o.duration, o.rounds)
	fmt.Fprintf(w, "| configuration | streams | Gbit/s per round | median Gbit/s | median retransmits | WireGuard CPU s per GB | machine CPU busy |\n")
	fmt.Fprintf(w, "| --- | --- | --- | --- | --- | --- | --- |\n")
	med := map[key]float64{}
	for _, p := range pairs {
		for _, s := range streamsList {
			rs := runs[key{p.name, s}]
			var g, rt, cpu, busy []float64
			var per []string
			for _, r := range rs {
				g = append(g, r.gbps)
				rt = append(rt, float64(r.retrans))
				if r.gigabyte > 0 {
					cpu = append(cpu, r.wgCPU.Seconds()/r.gigabyte)
				}
				busy = append(busy, r.busy)
				per = append(per, fmt.Sprintf("%.2f", r.gbps))
			}
			med[key{p.name, s}] = median(g)
			cpuS := "-"
			if p.name != "plain" {
				cpuS = fmt.Sprintf("%.2f", median(cpu))
			}
			fmt.Fprintf(w, "| %s | %d | %s | **%.2f** | %.0f | %s | %.0f%% |\n", label(p.name), s, strings.Join(per, ", "), median(g), median(rt), cpuS, median(busy))
		}
	}
	// Per-round ratios pair runs made minutes apart, which cancels slow
	// drifts of the machine (other load) better than ratios of medians.
	roundRatio := func(a, b string, s int) string {
		var rs []float64
		var per []string
		for i := range runs[key{a, s}] {
			x := runs[key{a, s}][i].gbps / runs[key{b, s}][i].gbps
			rs = append(rs, x)
			per = append(per, fmt.Sprintf("%.2f", x))
		}
		return fmt.Sprintf("**%.2f** (%s)", median(rs), strings.Join(per, ", "))
	}
	fmt.Fprintf(w, "\n| ratio | -P 1: median of per-round ratios (rounds) | -P 4: median of per-round ratios (rounds) | -P 1: ratio of medians | -P 4: ratio of medians |\n| --- | --- | --- | --- | --- |\n")
	ratios := [][2]string{{"netloom", "wggo"}, {"netloom", "plain"}, {"netloom", "wggo-mod"}, {"netloom", "wggo-mod-sid"}, {"wggo-mod-sid", "wggo-mod"}, {"companion", "wggo-mod"}, {"netloom", "companion"}, {"wggo", "plain"}, {"wggo-mod", "plain"}}
	for _, x := range extra {
		switch x {
		case "netloom-base":
			ratios = append(ratios, [2]string{"netloom", x}, [2]string{x, "wggo-mod"})
		case "netloom-load":
			ratios = append(ratios, [2]string{x, "netloom"})
		}
	}
	for _, rr := range ratios {
		fmt.Fprintf(w, "| %s / %s | %s | %s | %.2f | %.2f |\n", label(rr[0]), label(rr[1]),
			roundRatio(rr[0], rr[1], 1), roundRatio(rr[0], rr[1], 4),
			med[key{rr[0], 1}]/med[key{rr[1], 1}], med[key{rr[0], 4}]/med[key{rr[1], 4}])
	}
	fmt.Fprintf(w, "\nnetloom companion offloads (its log): %s\n", offload)
	if rulesets != "" {
		fmt.Fprintf(w, "\n%s\n", rulesets)
	}
	fmt.Fprintf(w, "\nwall time of the overlay benchmark: %s\n\n", time.Since(start).Round(time.Second))
	return nil
}

func label(cfg string) string {
	switch cfg {
	case "wggo":
		return "stand-alone wireguard-go (Debian)"
	case "wggo-mod":
		return "stand-alone wireguard-go (netloom's module version)"
	case "wggo-mod-sid":
		return "stand-alone wireguard-go (module version) in a session of its own, as netloom's companion runs"
	case "netloom-base":
		return "netloom, -base-exe binary"
	case "netloom-load":
		return "netloom with -load policies and services"
	case "companion":
		return "netloom's wg-companion alone, hand-built (no agent, no nftables)"
	case "plain":
		return "plain veth (ceiling)"
	}
	return cfg
}

// companionOffloads returns the "TUN created" line of the first node's
// companion log, which says whether the TUN got vnet headers and TSO.
func companionOffloads(cl *demo.Cluster) string {
	n := cl.Nodes[0]
	b, err := os.ReadFile(filepath.Join(n.RunDir, n.WGIface+".log"))
	if err != nil {
		return "(no companion log: " + err.Error() + ")"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "TUN created") {
			var keep []string
			for _, f := range strings.Fields(l) {
				for _, k := range []string{"mtu=", "procs=", "vnet_hdr=", "batch=", "tso="} {
					if strings.HasPrefix(f, k) {
						keep = append(keep, f)
					}
				}
			}
			return strings.Join(keep, " ")
		}
	}
	return "(no TUN line in the companion log)"
}
