// Command policy measures netloom's NetworkPolicy on this machine (see
// bench/POLICY.md):
//
//	go run ./bench/policy gobench   # compile and apply: the Go benchmarks of firewall/policy
//	go run ./bench/policy e2e       # 2-node demo: iperf3, connection rate, agent memory,
//	                                # apply-to-enforcement time, with 0 and 10,000 policies
//	go run ./bench/policy scale-mem # agent memory with 5,000 pods and 10,000 services,
//	                                # then 10,000 policies (Kubernetes mode)
//	go run ./bench/policy all       # both
//
// It needs root, iproute2, iperf3 and nftables. It builds netloom itself
// (go build) unless -exe names a binary. The e2e part builds a demo
// cluster in network namespaces named "nlp<hex>-..." under a temporary
// directory and removes all of it (namespaces, processes, files) at the
// end, also on error or Ctrl-C. It never changes the root network
// namespace.
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
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	exe         string
	policies    int // size of the large policy set
	rounds      int // rounds of visits to the configurations
	duration    int // iperf3 -t
	conns       int // connections per connection-rate run
	toggles     int // apply-to-enforcement measurements per node and direction
	benchtime   string
	verbose     bool
	kubeSizes   []int // policy set sizes of the kube benchmark
	memPods     int   // kube-mem: pods
	memServices int   // kube-mem: services
	podRuns     int   // kube-pod: new pods per mode
	// scale-mem: pods, services (10 endpoints each), policies, and where
	// the agents' heap profiles go.
	scalePods, scaleServices, scalePolicies int
	heapDir                                 string
}

func main() {
	var o options
	fs := flag.NewFlagSet("policy", flag.ExitOnError)
	fs.StringVar(&o.exe, "exe", "", "netloom binary (default: go build the module into the temporary directory)")
	fs.IntVar(&o.policies, "policies", 10000, "policies in the large set")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of the configurations (each visit runs iperf3 once per pod pair)")
	fs.IntVar(&o.duration, "t", 10, "iperf3 -t seconds")
	fs.IntVar(&o.conns, "conns", 2000, "sequential TCP connections per connection-rate run")
	fs.IntVar(&o.toggles, "toggles", 4, "apply-to-enforcement measurements per applying node and direction")
	fs.StringVar(&o.benchtime, "benchtime", "5x", "go test -benchtime for the gobench part")
	fs.BoolVar(&o.verbose, "v", false, "log progress")
	fs.IntVar(&o.memPods, "mem-pods", 5000, "kube-mem: pod objects")
	fs.IntVar(&o.memServices, "mem-services", 1000, "kube-mem: services")
	fs.IntVar(&o.scalePods, "scale-pods", 5000, "scale-mem: pod objects with addresses")
	fs.IntVar(&o.scaleServices, "scale-services", 10000, "scale-mem: ClusterIP services (10 endpoints each at 5000 pods)")
	fs.IntVar(&o.scalePolicies, "scale-policies", 10000, "scale-mem: NetworkPolicies over the pods")
	fs.StringVar(&o.heapDir, "heap-dir", "", "scale-mem: save each agent's heap profile of every step here")
	fs.IntVar(&o.podRuns, "pod-runs", 5, "kube-pod: new pods per mode")
	sizes := fs.String("kube-sizes", "10,1000", "kube: sizes of the unrelated policy sets, comma separated")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: policy [flags] gobench|e2e|kube|kube-mem|kube-pod|scale-mem|all")
		fs.PrintDefaults()
	}
	if len(os.Args) < 2 {
		fs.Usage()
		os.Exit(2)
	}
	cmd := os.Args[1]
	if strings.HasPrefix(cmd, "-") {
		_ = fs.Parse(os.Args[1:])
		cmd = fs.Arg(0)
	} else {
		_ = fs.Parse(os.Args[2:])
	}
	if cmd != "gobench" && cmd != "e2e" && cmd != "kube" && cmd != "kube-mem" && cmd != "kube-pod" && cmd != "scale-mem" && cmd != "all" {
		fs.Usage()
		os.Exit(2)
	}
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			fmt.Fprintf(os.Stderr, "policy bench: -kube-sizes %q: want numbers separated by commas\n", *sizes)
			os.Exit(2)
		}
		o.kubeSizes = append(o.kubeSizes, n)
	}
	if err := run(cmd, o); err != nil {
		fmt.Fprintln(os.Stderr, "policy bench: "+err.Error())
		os.Exit(1)
	}
}

func run(cmd string, o options) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("run as root: the benchmarks build network namespaces and nftables tables in them")
	}
	for _, tool := range []string{"ip", "iperf3", "nft", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: apt-get install -y --no-install-recommends iproute2 iperf3 nftables (and Go)", tool)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lvl := slog.LevelWarn
	if o.verbose {
		lvl = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	dir, err := os.MkdirTemp("", "nlpolbench-")
	if err != nil {
		return fmt.Errorf("create temporary directory: %w", err)
	}
	defer func() {
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	out := os.Stdout
	printMachine(out)
	if cmd == "gobench" || cmd == "all" {
		if err := gobench(ctx, root, o, out); err != nil {
			return err
		}
	}
	if cmd == "e2e" || strings.HasPrefix(cmd, "kube") || cmd == "scale-mem" || cmd == "all" {
		if o.exe == "" {
			o.exe = filepath.Join(dir, "netloom")
			b := exec.CommandContext(ctx, "go", "build", "-o", o.exe, ".")
			b.Dir = root
			b.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as the README builds it
			b.Stdout, b.Stderr = os.Stderr, os.Stderr
			if err := b.Run(); err != nil {
				return fmt.Errorf("go build netloom: %w", err)
			}
		}
		switch cmd {
		case "kube":
			return kubeBench(ctx, dir, o, log, out)
		case "kube-mem":
			return kubeMem(ctx, dir, o, log, out)
		case "kube-pod":
			return kubePod(ctx, dir, o, log, out)
		case "scale-mem":
			return scaleMem(ctx, dir, o, log, out)
		}
		if err := e2e(ctx, dir, o, log, out); err != nil {
			return err
		}
	}
	return nil
}

// moduleRoot finds the directory of go.mod from the working directory up.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run the policy bench inside the netloom module")
	}
	return filepath.Dir(mod), nil
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
	load := "?"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	ver := func(args ...string) string {
		b, _ := exec.Command(args[0], args[1:]...).CombinedOutput()
		return strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
	}
	fmt.Fprintf(w, "## Machine\n\n")
	fmt.Fprintf(w, "- nproc: %d, CPU: %s\n", runtime.NumCPU(), cpu)
	fmt.Fprintf(w, "- kernel: %s, Go: %s, %s, %s\n", kernel, runtime.Version(), ver("iperf3", "--version"), ver("nft", "--version"))
	fmt.Fprintf(w, "- load average at start: %s\n", load)
	fmt.Fprintf(w, "- date: %s\n\n", time.Now().UTC().Format(time.RFC3339))
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
