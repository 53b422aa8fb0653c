// Command failover measures netloom's LoadBalancer on demo clusters (3 nodes,
// or -nodes) with a client host on the nodes' L2 segment (see bench/LB.md):
//
//	go run ./bench/failover                 # everything below
//	go run ./bench/failover -only failover  # VIP failover, the default timers and memberlist's slower LAN defaults
//	go run ./bench/failover -only failover -slow "" -modes node-loss -policies Local  # one row
//	go run ./bench/failover -only packet    # per-packet cost and programming, 10 vs 10,000 services
//	go run ./bench/failover -only failover -slow "" -nodes 5  # the same in a 5-node cluster
//	go run ./bench/failover -only soak      # false failures of the timers under CPU load (not part of the default run)
//
// Failover: the owner of a LoadBalancer VIP fails while a client on the
// LAN opens a new TCP connection to VIP:80 every 50 ms (each with 3.5 s,
// so the kernel's 1 s SYN retransmit counts, as a user's client would),
// for a service with externalTrafficPolicy Cluster and one with Local.
// Two modes, alternating round by round: node-loss (the owner's eth0 goes
// down inside its namespace, then its agent is SIGKILLed: the node is gone)
// and agent-kill (only the agent is SIGKILLed; its kernel keeps forwarding,
// so clients are still served: not a node failure, kept for comparison).
// Each run reports the time to the first successful connection, to the
// first one through the new owner, and where the time went: the survivors'
// memberlist suspicion and failure (their debug logs), the new owner's "VIP
// moved" and first gratuitous ARP (its log), the ARP the client's capture
// saw, and when the new owner's nftables dropped the dead node's pods (nft
// monitor). The failed node comes back and the cluster settles between
// runs. It runs once with the agent's default memberlist timers and once
// with memberlist's slower LAN defaults (-slow).
//
// Per packet: iperf3 from the client to a VIP (TCP throughput, and 64-byte
// UDP datagrams), and new TCP connections per second, with 10 services
// installed, then 10,000 more (one `netloom apply -f`), then after their
// delete; every round measures the endpoint pod's own address first, as
// the baseline of that moment. Also: how long the 10,000 took to reach
// every node's nftables, one service change afterwards, and the agents'
// memory and CPU.
//
// It needs root, iproute2, iperf3 and nftables. It builds netloom (go build)
// unless -exe names a binary. Everything lives in network namespaces named
// "nlf<hex>-..." and in one temporary directory; all of it is removed at the
// end, also on error or Ctrl-C. The root network namespace is not touched.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// slowTimers are memberlist's LAN defaults, netloom's defaults before it
// tuned them, measured for comparison.
const slowTimers = "--probe-interval 1s --probe-timeout 500ms --suspicion-mult 4 --gossip-interval 200ms"

type options struct {
	exe       string
	nodes     int
	runs      int
	modes     []string
	policies  []string
	only      string
	slow      string
	services  int
	iperfTime int
	rounds    int
	verbose   bool
	soak      time.Duration
	load      int
	soakSets  string
}

func main() {
	var o options
	flag.StringVar(&o.exe, "exe", "", "netloom binary (default: go build the module into the temporary directory)")
	flag.IntVar(&o.nodes, "nodes", 3, "nodes of each demo cluster (the client and pool addresses limit it to 80)")
	flag.IntVar(&o.runs, "runs", 10, "failover: runs per timer setting, mode and policy")
	modes := flag.String("modes", modeNodeLoss+","+modeAgentKill, "failover: modes, comma-separated: node-loss (link down, then the agent SIGKILLed), agent-kill (the agent only)")
	policies := flag.String("policies", "Cluster,Local", "failover: externalTrafficPolicy of the failed-over service, comma-separated")
	flag.StringVar(&o.only, "only", "", "failover or packet (default both)")
	flag.StringVar(&o.slow, "slow", slowTimers, "agent flags of the comparison run (empty: skip it)")
	flag.IntVar(&o.services, "services", 10000, "services installed for the large case")
	flag.IntVar(&o.iperfTime, "t", 10, "iperf3 -t seconds")
	flag.IntVar(&o.rounds, "rounds", 2, "per-packet: measurements of each kind per phase")
	flag.BoolVar(&o.verbose, "v", false, "log progress")
	flag.DurationVar(&o.soak, "soak", 5*time.Minute, "soak: how long each timer setting runs")
	flag.IntVar(&o.load, "load", 2*runtime.NumCPU(), "soak: busy-looping processes during the soak")
	flag.StringVar(&o.soakSets, "soak-timers", "default=;slow="+slowTimers,
		"soak: name=agent flags pairs separated by ';' (empty flags: the agent's defaults)")
	flag.Parse()
	if o.only != "" && o.only != "failover" && o.only != "packet" && o.only != "soak" {
		fmt.Fprintln(os.Stderr, "failover: -only is failover, packet or soak")
		os.Exit(2)
	}
	if o.nodes < 2 || o.nodes > 80 {
		fmt.Fprintf(os.Stderr, "failover: -nodes %d: give 2 to 80 (a VIP needs another node to move to; the underlay has room for 80)\n", o.nodes)
		os.Exit(2)
	}
	for _, m := range strings.Split(*modes, ",") {
		if m = strings.TrimSpace(m); m != modeNodeLoss && m != modeAgentKill {
			fmt.Fprintf(os.Stderr, "failover: -modes: %q is neither %s nor %s\n", m, modeNodeLoss, modeAgentKill)
			os.Exit(2)
		}
		o.modes = append(o.modes, m)
	}
	for _, p := range strings.Split(*policies, ",") {
		if p = strings.TrimSpace(p); policyService[p] == "" {
			fmt.Fprintf(os.Stderr, "failover: -policies: %q is neither Cluster nor Local\n", p)
			os.Exit(2)
		}
		o.policies = append(o.policies, p)
	}
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "failover: "+err.Error())
		os.Exit(1)
	}
}

func run(o options, w io.Writer) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("run as root: the benchmark builds network namespaces")
	}
	for _, tool := range []string{"ip", "iperf3", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: apt-get install -y --no-install-recommends iproute2 iperf3 nftables", tool)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lvl := slog.LevelWarn
	if o.verbose {
		lvl = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	dir, err := os.MkdirTemp("/tmp", "nlf")
	if err != nil {
		return err
	}
	defer func() {
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	if o.exe == "" {
		o.exe = filepath.Join(dir, "netloom")
		b := exec.CommandContext(ctx, "go", "build", "-o", o.exe, "github.com/netloom/netloom")
		b.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as the README builds it
		b.Stdout, b.Stderr = os.Stderr, os.Stderr
		if err := b.Run(); err != nil {
			return fmt.Errorf("go build netloom: %w", err)
		}
	}
	printMachine(w)

	if o.only == "" || o.only == "failover" {
		settings := []struct{ name, flags string }{{"default", ""}}
		if o.slow != "" {
			settings = append(settings, struct{ name, flags string }{"slow", o.slow})
		}
		var results []failoverResult
		for _, s := range settings {
			r, err := failoverBench(ctx, o, dir, log, s.name, strings.Fields(s.flags))
			if err != nil {
				return fmt.Errorf("failover (%s timers): %w", s.name, err)
			}
			results = append(results, r)
		}
		reportFailover(w, o, results)
	}
	if o.only == "soak" {
		var results []soakResult
		for _, set := range strings.Split(o.soakSets, ";") {
			name, flags, _ := strings.Cut(set, "=")
			r, err := soakBench(ctx, o, dir, log, strings.TrimSpace(name), strings.TrimSpace(flags))
			if err != nil {
				return fmt.Errorf("soak (%s timers): %w", name, err)
			}
			results = append(results, r)
		}
		reportSoak(w, results)
		return nil
	}
	if o.only == "" || o.only == "packet" {
		if err := packetBench(ctx, o, dir, log, w); err != nil {
			return fmt.Errorf("per-packet: %w", err)
		}
	}
	return nil
}

func printMachine(w io.Writer) {
	cpu := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	wg := "userspace (wireguard-go companion)"
	if _, err := os.Stat("/sys/module/wireguard"); err == nil {
		wg = "kernel"
	}
	fmt.Fprintf(w, "machine: %s, %d CPUs, kernel %s, %s; WireGuard %s; load average at start %s\n\n",
		cpu, runtime.NumCPU(), kernel, runtime.Version(), wg, loadavg())
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
