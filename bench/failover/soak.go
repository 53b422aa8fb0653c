package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// soakResult counts what memberlist and the agents logged during a soak:
// with no node failing, every suspicion is a false alarm, and every member
// marked failed and every VIP move is a false failure.
type soakResult struct {
	name, flags string
	load        int
	dur         time.Duration
	suspects    int // "Suspect X has failed, no acks received"
	refuted     int // "Refuting a suspect message"
	failed      int // "Marking X as failed, suspect timeout reached"
	moves       int // "VIP moved"
	loadAvg     string
}

// soakPatterns are the log lines counted, by field of soakResult.
var soakPatterns = []struct {
	text  string
	field func(*soakResult) *int
}{
	{"has failed, no acks received", func(r *soakResult) *int { return &r.suspects }},
	{"Refuting a suspect message", func(r *soakResult) *int { return &r.refuted }},
	{"as failed, suspect timeout reached", func(r *soakResult) *int { return &r.failed }},
	{"VIP moved", func(r *soakResult) *int { return &r.moves }},
}

// soakBench runs a 3-node cluster with one LoadBalancer service for
// o.soak with the given timers, while o.load busy-looping processes keep
// every CPU busy, and counts false alarms in the agents' logs. Nothing
// fails on purpose, so every "failed" and every VIP move is a false
// failure. Then, as a control, it kills one agent and checks that the
// failure shows in the lines it counts.
func soakBench(ctx context.Context, o options, dir string, log *slog.Logger, name, flags string) (r soakResult, err error) {
	r = soakResult{name: name, flags: flags, load: o.load, dur: o.soak}
	// memberlist's suspicions and failures are INFO lines, which the agent
	// logs at debug level.
	b, err := newBench(ctx, o, dir, log, "soak-"+name, append(strings.Fields(flags), "--log-level", "debug"))
	if err != nil {
		return r, err
	}
	defer func() {
		if cerr := b.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	n1 := b.c.Nodes[0]
	if err := b.apply(ctx, n1, "apply", poolManifest+podsManifest(b.c.Pods(), nil)+service("web", "LoadBalancer", "app: web", 80, serverPort, false)); err != nil {
		return r, err
	}
	if _, _, err := b.vip(ctx, "web", b.c.Nodes, "", 60*time.Second); err != nil {
		return r, err
	}
	// Count from here: the logs of the start are not part of the soak.
	offsets := map[string]int64{}
	for _, n := range b.c.Nodes {
		if fi, err := os.Stat(n.LogPath); err == nil {
			offsets[n.LogPath] = fi.Size()
		}
	}
	stop, err := cpuLoad(o.load)
	if err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, "%s timers: soaking %s with %d busy processes on %d CPUs\n", name, o.soak, o.load, runtime.NumCPU())
	serr := sleep(ctx, o.soak)
	r.loadAvg = loadavg()
	stop()
	if serr != nil {
		return r, serr
	}
	for _, n := range b.c.Nodes {
		data, err := readFrom(n.LogPath, offsets[n.LogPath])
		if err != nil {
			return r, err
		}
		for _, p := range soakPatterns {
			*p.field(&r) += bytes.Count(data, []byte(p.text))
		}
	}
	// The control: a real failure must show in the counted lines, or the
	// zeros above mean nothing.
	n1, n3 := b.c.Nodes[0], b.c.Nodes[2]
	from, err := os.Stat(n1.LogPath)
	if err != nil {
		return r, err
	}
	if err := b.c.StopAgent(n3, syscall.SIGKILL); err != nil {
		return r, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, err := readFrom(n1.LogPath, from.Size())
		if err != nil {
			return r, err
		}
		if bytes.Contains(data, []byte(soakPatterns[2].text)) {
			return r, nil
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("control: %s's agent was killed, but %s's log has no %q after 30 s: the soak's counts cannot be trusted", n3.Name, n1.Name, soakPatterns[2].text)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return r, err
		}
	}
}

// readFrom reads path from offset to its end.
func readFrom(path string, offset int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

// cpuLoad starts n processes that spin (sh busy loops) and returns the
// function that kills them, by PID.
func cpuLoad(n int) (func(), error) {
	var procs []*exec.Cmd
	stop := func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGKILL)
			_ = p.Wait()
		}
	}
	for i := 0; i < n; i++ {
		p := exec.Command("sh", "-c", "while :; do :; done")
		if err := p.Start(); err != nil {
			stop()
			return nil, fmt.Errorf("start CPU load: %w", err)
		}
		procs = append(procs, p)
	}
	return stop, nil
}

func reportSoak(w io.Writer, results []soakResult) {
	fmt.Fprintf(w, "## False failures: 3 nodes, nothing killed, CPUs kept busy\n\n")
	fmt.Fprintf(w, "| timers | soak | busy processes / CPUs | load average at the end | suspicions | refuted | members marked failed (false) | VIP moves (false) |\n")
	fmt.Fprintf(w, "| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range results {
		flags := r.flags
		if flags == "" {
			flags = "(agent defaults)"
		}
		fmt.Fprintf(w, "| %s: `%s` | %s | %d / %d | %s | %d | %d | %d | %d |\n", r.name, flags, r.dur, r.load, runtime.NumCPU(), r.loadAvg,
			r.suspects, r.refuted, r.failed, r.moves)
	}
	fmt.Fprintln(w)
}
