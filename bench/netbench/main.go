// Command netbench measures netloom's data plane and agent on this machine,
// each figure against a baseline measured in the same run (see
// BENCHMARKS.md):
//
//	go run ./bench/netbench overlay   # iperf3 pod to pod: netloom vs stand-alone wireguard-go vs plain veth
//	go run ./bench/netbench -load 1000 -base-exe OLD overlay  # also with 1,000 policies and services, and an older build
//	go run ./bench/netbench cluster   # 3-node demo: idle RSS, ping loss across an agent restart
//	go run ./bench/netbench all       # both
//
// It needs root, iproute2, iperf3, iputils-ping, wireguard-tools (wg) and
// the Debian wireguard-go. It builds netloom itself (go build) unless -exe
// names a binary. Everything it creates lives in network namespaces named
// with a random prefix "nlb<hex>" and in one temporary directory; all of it
// (namespaces, processes, files) is removed at the end, also on error or
// Ctrl-C. It never changes the root network namespace.
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

type options struct {
	exe      string
	rounds   int
	duration int // iperf3 -t
	idle     time.Duration
	pingFor  time.Duration
	verbose  bool
	quiet    time.Duration
	wgMod    string // wireguard-go built from netloom's module version
	baseExe  string // overlay: a second netloom binary (before a change), measured alongside
	load     int    // overlay: also a netloom cluster with this many policies and services
}

func main() {
	var o options
	fs := flag.NewFlagSet("netbench", flag.ExitOnError)
	fs.StringVar(&o.exe, "exe", "", "netloom binary (default: go build the module into the temporary directory)")
	fs.StringVar(&o.baseExe, "base-exe", "", "overlay: also measure a netloom cluster of this binary (e.g. a build before a change), same shape, alternating with the others")
	fs.IntVar(&o.load, "load", 0, "overlay: also measure a netloom cluster with this many NetworkPolicies selecting the server pod and as many services of it (0: not)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds: each configuration runs once per round, configurations alternating")
	fs.IntVar(&o.duration, "t", 10, "iperf3 -t seconds")
	fs.DurationVar(&o.idle, "idle", 20*time.Second, "idle time before reading the processes' resident memory")
	fs.DurationVar(&o.pingFor, "ping", 10*time.Second, "length of each ping run (ping -i 0.01 -w)")
	fs.BoolVar(&o.verbose, "v", false, "log progress")
	fs.DurationVar(&o.quiet, "quiet-wait", 3*time.Minute, "before each benchmark, wait up to this long for the machine to be idle (others' CPU use under 15%)")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: netbench [flags] overlay|cluster|all")
		fs.PrintDefaults()
	}
	if len(os.Args) < 2 {
		fs.Usage()
		os.Exit(2)
	}
	cmd := os.Args[1]
	if strings.HasPrefix(cmd, "-") {
		// flags first: netbench -rounds 1 overlay
		_ = fs.Parse(os.Args[1:])
		cmd = fs.Arg(0)
	} else {
		_ = fs.Parse(os.Args[2:])
	}
	if cmd != "overlay" && cmd != "cluster" && cmd != "all" {
		fs.Usage()
		os.Exit(2)
	}
	if err := run(cmd, o); err != nil {
		fmt.Fprintln(os.Stderr, "netbench: "+err.Error())
		os.Exit(1)
	}
}

func run(cmd string, o options) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("run as root: the benchmarks build network namespaces")
	}
	for _, tool := range []string{"ip", "iperf3", "ping", "wg", "wireguard-go", "ss"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: apt-get install -y --no-install-recommends iproute2 iperf3 iputils-ping wireguard-tools wireguard-go", tool)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	lvl := slog.LevelWarn
	if o.verbose {
		lvl = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	// The netloom binary lives in a directory of its own; each benchmark
	// gets an env (namespace prefix, processes, directory) that is removed
	// when it ends, so the next one runs on a quiet machine.
	top, err := newEnv(log)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := top.cleanup(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
		}
	}()
	if o.exe == "" {
		o.exe = filepath.Join(top.dir, "netloom")
		root, err := moduleRoot()
		if err != nil {
			return err
		}
		b := exec.CommandContext(ctx, "go", "build", "-o", o.exe, ".")
		b.Dir = root
		b.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as the README builds it
		b.Stdout, b.Stderr = os.Stderr, os.Stderr
		if err := b.Run(); err != nil {
			return fmt.Errorf("go build netloom: %w", err)
		}
	}

	{
		root, err := moduleRoot()
		if err != nil {
			return err
		}
		o.wgMod = filepath.Join(top.dir, "wireguard-go-mod")
		b := exec.CommandContext(ctx, "go", "build", "-mod=readonly", "-o", o.wgMod, "golang.zx2c4.com/wireguard")
		b.Dir = root
		b.Stdout, b.Stderr = os.Stderr, os.Stderr
		if err := b.Run(); err != nil {
			return fmt.Errorf("go build wireguard-go at netloom's module version: %w", err)
		}
	}

	out := os.Stdout
	printMachine(out, o)
	phase := func(f func(context.Context, *env, options, io.Writer) error) (err error) {
		waitQuiet(ctx, o.quiet, out)
		e, err := newEnv(log)
		if err != nil {
			return err
		}
		defer func() {
			fmt.Fprintf(out, "load average after: %s\n\n", loadavg())
			if cerr := e.cleanup(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
			}
		}()
		return f(ctx, e, o, out)
	}
	if cmd == "overlay" || cmd == "all" {
		if err := phase(overlay); err != nil {
			return err
		}
	}
	if cmd == "cluster" || cmd == "all" {
		if err := phase(cluster); err != nil {
			return err
		}
	}
	return nil
}

// waitQuiet waits up to max for the machine's CPU use (others', e.g. tests
// of other sessions) to fall under 15% over 2 s, and says what it saw.
func waitQuiet(ctx context.Context, max time.Duration, w io.Writer) {
	deadline := time.Now().Add(max)
	for {
		b0, t0 := cpuBusy()
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
		b1, t1 := cpuBusy()
		busy := 0.0
		if t1 > t0 {
			busy = 100 * float64(b1-b0) / float64(t1-t0)
		}
		if busy < 15 || time.Now().After(deadline) {
			fmt.Fprintf(w, "machine CPU busy before start: %.0f%% (load average %s)\n\n", busy, loadavg())
			return
		}
		fmt.Fprintf(os.Stderr, "machine busy (%.0f%% CPU); waiting for it to calm down\n", busy)
		time.Sleep(3 * time.Second)
	}
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// moduleRoot finds the directory of go.mod from the working directory up.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run netbench inside the netloom module (or give -exe)")
	}
	return filepath.Dir(mod), nil
}

func printMachine(w io.Writer, o options) {
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
	ver := func(args ...string) string {
		b, _ := exec.Command(args[0], args[1:]...).CombinedOutput()
		return strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
	}
	fmt.Fprintf(w, "## Machine\n\n")
	fmt.Fprintf(w, "- nproc: %d, CPU: %s\n", runtime.NumCPU(), cpu)
	fmt.Fprintf(w, "- kernel: %s, Go: %s\n", kernel, runtime.Version())
	fmt.Fprintf(w, "- Debian %s; %s; wg %s\n", ver("wireguard-go", "--version"), ver("iperf3", "--version"), ver("wg", "--version"))
	if o.wgMod != "" {
		fmt.Fprintf(w, "- netloom's module version of wireguard-go, built stand-alone: %s\n", ver(o.wgMod, "--version"))
	}
	fmt.Fprintf(w, "- netloom: commit %s\n", ver("git", "describe", "--always", "--dirty"))
	fmt.Fprintf(w, "- date: %s\n\n", time.Now().UTC().Format(time.RFC3339))
}
