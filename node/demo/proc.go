package demo

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is a process the cluster started inside one of its namespaces
// (through `ip netns exec`, which execs, so Pid is the command itself). It
// is identified by pid and start time, so a reused pid is never signalled.
type Process struct {
	Name  string   `json:"name"`
	NS    string   `json:"netns"`
	Args  []string `json:"args"`
	Pid   int      `json:"pid"`
	Start uint64   `json:"start"` // /proc/<pid>/stat starttime, clock ticks since boot
	Log   string   `json:"log"`

	// Cmd is set when this process started it; nil after Load.
	Cmd     *exec.Cmd     `json:"-"`
	done    chan struct{} // closed when Cmd.Wait returned
	waitErr error
}

// startProcess starts args inside namespace ns in a session of its own (so
// it outlives the caller, e.g. `netloom demo`), appending its stdout and
// stderr to logPath. A goroutine reaps it.
func startProcess(name, ns, logPath string, env []string, args ...string) (*Process, error) {
	if !netnsExists(ns) {
		return nil, fmt.Errorf("start %s: network namespace %s does not exist", name, ns)
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer f.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.Env = childEnv(env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in netns %s: %w", name, ns, err)
	}
	p := &Process{Name: name, NS: ns, Args: args, Pid: cmd.Process.Pid, Log: logPath, Cmd: cmd, done: make(chan struct{})}
	p.Start, _ = procStart(p.Pid)
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// procStat returns the state letter and start time of pid.
func procStat(pid int) (state string, start uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return "", 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return f[0], start, err
}

func procStart(pid int) (uint64, error) {
	_, s, err := procStat(pid)
	return s, err
}

// procAlive reports whether pid runs (not a zombie) and, when start is not
// zero, is still the process that started at start.
func procAlive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st, s, err := procStat(pid)
	if err != nil || st == "Z" || st == "X" {
		return false
	}
	return start == 0 || s == start
}

func procCmdline(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
}

// Running reports whether the process still runs.
func (p *Process) Running() bool {
	if p == nil {
		return false
	}
	if p.done != nil {
		select {
		case <-p.done:
			return false
		default:
		}
	}
	return procAlive(p.Pid, p.Start)
}

// ExitErr is the result of Wait when this process started it and it has
// exited (nil for exit status 0), else nil.
func (p *Process) ExitErr() error {
	if p == nil || p.done == nil {
		return nil
	}
	select {
	case <-p.done:
		return p.waitErr
	default:
		return nil
	}
}

// Exited returns a channel closed when a process started by this process
// exits; nil when it is known by pid only.
func (p *Process) Exited() <-chan struct{} {
	if p == nil || p.done == nil {
		return nil
	}
	return p.done
}

// wait waits up to timeout for the process to end and reports whether it did.
func (p *Process) wait(timeout time.Duration) bool {
	if p.done != nil {
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-p.done:
			return true
		case <-t.C:
			return !p.Running()
		}
	}
	deadline := time.Now().Add(timeout)
	for p.Running() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// signal sends sig if the process still is the one recorded.
func (p *Process) signal(sig syscall.Signal) error {
	if !p.Running() {
		return nil
	}
	if err := syscall.Kill(p.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s (pid %d): %w", p.Name, p.Pid, err)
	}
	return nil
}

// Stop sends sig and waits up to grace for the process to end, then kills it
// with SIGKILL and waits up to 5 seconds more. Stopping a process that does
// not run is not an error.
func (p *Process) Stop(sig syscall.Signal, grace time.Duration) error {
	if p == nil || !p.Running() {
		return nil
	}
	if err := p.signal(sig); err != nil {
		return err
	}
	if p.wait(grace) {
		return nil
	}
	if sig != syscall.SIGKILL {
		if err := p.signal(syscall.SIGKILL); err != nil {
			return err
		}
		if p.wait(5 * time.Second) {
			return nil
		}
	}
	return fmt.Errorf("stop %s (pid %d): still running after SIGKILL", p.Name, p.Pid)
}

// stopAll signals every process first, then waits for each, so the grace
// periods overlap.
func stopAll(procs []*Process, grace time.Duration) error {
	var errs []error
	for _, p := range procs {
		if err := p.signal(syscall.SIGTERM); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range procs {
		if err := p.Stop(syscall.SIGTERM, grace); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// StartProcess starts args inside namespace ns as a background process the
// cluster owns: it is recorded in the state file and stopped by Down. Its
// output goes to StateDir/procs/<name>.log.
func (c *Cluster) StartProcess(name, ns string, args ...string) (*Process, error) {
	if !c.ownsNetns(ns) {
		return nil, fmt.Errorf("start %s: network namespace %s is not part of demo cluster %s", name, ns, c.Opts.Prefix)
	}
	logPath := filepath.Join(c.Opts.StateDir, "procs", name+".log")
	p, err := startProcess(name, ns, logPath, nil, args...)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.Procs = append(c.Procs, p)
	err = c.saveLocked()
	c.mu.Unlock()
	return p, err
}

// StopProcess stops a process started with StartProcess (SIGTERM, then
// SIGKILL after 5 seconds) and forgets it.
func (c *Cluster) StopProcess(p *Process) error {
	err := p.Stop(syscall.SIGTERM, 5*time.Second)
	c.mu.Lock()
	for i, q := range c.Procs {
		if q == p {
			c.Procs = append(c.Procs[:i], c.Procs[i+1:]...)
			break
		}
	}
	err = errors.Join(err, c.saveLocked())
	c.mu.Unlock()
	return err
}

func (c *Cluster) ownsNetns(ns string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.Namespaces {
		if n == ns {
			return true
		}
	}
	return false
}

// logTail returns the last n lines of a file, on one line.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
