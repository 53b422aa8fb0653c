package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// env owns everything the benchmark creates: namespaces (all named with
// its prefix), processes and the temporary directory. cleanup removes all
// of it, newest first.
type env struct {
	id  string // "nlb" + 4 hex digits: prefix of every namespace and interface we name
	dir string
	log *slog.Logger

	mu         sync.Mutex
	namespaces []string
	procs      []*proc
	cleanups   []func() error // e.g. demo cluster Down, run before namespaces go
	sockets    []string       // UAPI sockets of stand-alone wireguard-go
}

// proc is a process started inside a namespace through `ip netns exec`
// (which execs, so the pid is the command's own).
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

func newEnv(log *slog.Logger) (*env, error) {
	b := make([]byte, 2)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	id := "nlb" + hex.EncodeToString(b)
	dir, err := os.MkdirTemp("", id+"-")
	if err != nil {
		return nil, fmt.Errorf("create temporary directory: %w", err)
	}
	return &env{id: id, dir: dir, log: log}, nil
}

// ip runs `ip args...`.
func (e *env) ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// exec runs args inside namespace ns and returns the combined output.
func (e *env) exec(ctx context.Context, ns string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("in %s: %s: %w: %s", ns, strings.Join(args, " "), err, lastLines(out.String(), 3))
	}
	return out.String(), nil
}

// addNS creates a namespace with the env's prefix, lo up.
func (e *env) addNS(ctx context.Context, name string) error {
	if !strings.HasPrefix(name, e.id) {
		return fmt.Errorf("namespace %s lacks the prefix %s", name, e.id)
	}
	if err := e.ip(ctx, "netns", "add", name); err != nil {
		return err
	}
	e.mu.Lock()
	e.namespaces = append(e.namespaces, name)
	e.mu.Unlock()
	return e.ip(ctx, "-n", name, "link", "set", "lo", "up")
}

// sysctl writes /proc/sys/<key> inside ns.
func (e *env) sysctl(ctx context.Context, ns, key, val string) error {
	_, err := e.exec(ctx, ns, "sh", "-c", fmt.Sprintf("echo %s > /proc/sys/%s", val, strings.ReplaceAll(key, ".", "/")))
	return err
}

// start runs args inside ns in the background, output to dir/<name>.log,
// in a process group of its own.
func (e *env) start(ns, name string, env []string, args ...string) (*proc, error) {
	return e.startIn(ns, name, false, env, args...)
}

// startIn is start, in a session of its own when session is set.
func (e *env) startIn(ns, name string, session bool, env []string, args ...string) (*proc, error) {
	f, err := os.Create(filepath.Join(e.dir, strings.ReplaceAll(name, " ", "-")+".log"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: !session, Setsid: session}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", name, ns, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	return p, nil
}

func (e *env) onCleanup(f func() error) {
	e.mu.Lock()
	e.cleanups = append(e.cleanups, f)
	e.mu.Unlock()
}

// cleanup stops our processes, runs the registered cleanups (newest
// first), deletes our namespaces (newest first), removes stale UAPI sockets
// of our interfaces and the temporary directory.
func (e *env) cleanup() error {
	e.mu.Lock()
	procs := slices.Clone(e.procs)
	cleanups := slices.Clone(e.cleanups)
	nss := slices.Clone(e.namespaces)
	socks := slices.Clone(e.sockets)
	e.mu.Unlock()
	var errs []error
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop(5 * time.Second) }()
	}
	wg.Wait()
	slices.Reverse(cleanups)
	for _, f := range cleanups {
		if err := f(); err != nil {
			errs = append(errs, err)
		}
	}
	slices.Reverse(nss)
	for _, ns := range nss {
		if _, err := os.Stat(filepath.Join("/var/run/netns", ns)); err != nil {
			continue
		}
		if err := e.ip(context.Background(), "netns", "delete", ns); err != nil {
			errs = append(errs, err)
		}
	}
	for _, s := range socks {
		if fi, err := os.Lstat(s); err == nil && fi.Mode()&fs.ModeSocket != 0 {
			_ = os.Remove(s)
		}
	}
	if err := os.RemoveAll(e.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// procStatus reads fields (in kB, or counts) of /proc/<pid>/status.
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
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			m[k] = n
		}
	}
	return m, nil
}

// procCPU is the user+system CPU time of pid so far.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
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

// cpuBusy returns the machine's busy and total jiffies (/proc/stat).
func cpuBusy() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line := strings.SplitN(string(b), "\n", 2)[0]
	f := strings.Fields(line)
	for i, s := range f[1:] {
		n, _ := strconv.ParseInt(s, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// procRollup reads fields (kB) of /proc/<pid>/smaps_rollup: Pss counts
// pages shared with other processes (the same binary) by share.
func procRollup(pid int) map[string]int64 {
	m := map[string]int64{}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return m
	}
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
	return m
}
