package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/netloom/netloom/node/demo"
)

// cluster runs the 3-node demo benchmarks: resident memory at idle, and
// pod ping loss across an agent restart.
func cluster(ctx context.Context, e *env, o options, w io.Writer) error {
	start := time.Now()
	cl, err := buildNetloom(ctx, e, o, 3, 2)
	if err != nil {
		return err
	}
	// The baseline for the companion: the Debian wireguard-go, idle with a
	// peer, in the same kind of namespaces.
	wggo, err := buildHand(ctx, e, "wggo", "wireguard-go")
	if err != nil {
		return err
	}
	wggoMod, err := buildHand(ctx, e, "wggo-mod", o.wgMod)
	if err != nil {
		return err
	}
	// Traffic once everywhere (handshakes, ARP), then idle.
	pods := cl.Pods()
	for _, a := range pods {
		for _, b := range pods {
			if a != b {
				if err := demo.PingContext(ctx, a.NS, b.IP); err != nil {
					return fmt.Errorf("pod %s cannot reach %s: %w", a.Name, b.Name, err)
				}
			}
		}
	}
	for _, p := range []*pair{wggo, wggoMod} {
		if _, err := e.exec(ctx, p.pods[0], "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-w", "10", p.podIP[1].String()); err != nil {
			return fmt.Errorf("%s baseline: %w", p.name, err)
		}
	}
	fmt.Fprintf(w, "## Resident memory at idle (3-node demo cluster, %d pods, %s idle)\n\n", len(pods), o.idle)
	if err := sleep(ctx, o.idle); err != nil {
		return err
	}
	if err := rss(cl, wggo, wggoMod, w); err != nil {
		return err
	}
	if err := restartPing(ctx, e, o, cl, w); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nwall time of the cluster benchmarks: %s\n\n", time.Since(start).Round(time.Second))
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func mib(kb int64) float64 { return float64(kb) / 1024 }

func rss(cl *demo.Cluster, wggo, wggoMod *pair, w io.Writer) error {
	type row struct {
		what string
		pid  int
	}
	var rows []row
	for _, n := range cl.Nodes {
		rows = append(rows, row{"agent " + n.Name, n.Agent.Pid})
	}
	for _, n := range cl.Nodes {
		pid, err := companionPid(n)
		if err != nil {
			return err
		}
		rows = append(rows, row{"wg-companion " + n.Name, pid})
	}
	for i, pid := range wggo.wgPids {
		rows = append(rows, row{fmt.Sprintf("stand-alone wireguard-go (Debian) %d", i+1), pid})
	}
	for i, pid := range wggoMod.wgPids {
		rows = append(rows, row{fmt.Sprintf("stand-alone wireguard-go (module version) %d", i+1), pid})
	}
	fmt.Fprintf(w, "| process | VmRSS MiB | RssAnon MiB | RssFile MiB | Pss MiB | VmHWM MiB | threads |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	var agent, comp, base, baseMod []float64
	for _, r := range rows {
		st, err := procStatus(r.pid)
		if err != nil {
			return fmt.Errorf("%s (pid %d): %w", r.what, r.pid, err)
		}
		roll := procRollup(r.pid)
		fmt.Fprintf(w, "| %s | **%.1f** | %.1f | %.1f | %.1f | %.1f | %d |\n", r.what, mib(st["VmRSS"]), mib(st["RssAnon"]), mib(st["RssFile"]), mib(roll["Pss"]), mib(st["VmHWM"]), st["Threads"])
		switch {
		case strings.HasPrefix(r.what, "agent"):
			agent = append(agent, mib(st["VmRSS"]))
		case strings.HasPrefix(r.what, "wg-companion"):
			comp = append(comp, mib(st["VmRSS"]))
		case strings.Contains(r.what, "module version"):
			baseMod = append(baseMod, mib(st["VmRSS"]))
		default:
			base = append(base, mib(st["VmRSS"]))
		}
	}
	fmt.Fprintf(w, "\n| figure | value |\n| --- | --- |\n")
	fmt.Fprintf(w, "| agent VmRSS, median of %d | %.1f MiB |\n", len(agent), median(agent))
	fmt.Fprintf(w, "| agent / goal (30 MiB) | %.2f |\n", median(agent)/30)
	fmt.Fprintf(w, "| wg-companion VmRSS, median of %d | %.1f MiB |\n", len(comp), median(comp))
	fmt.Fprintf(w, "| wg-companion / stand-alone wireguard-go, Debian (%.1f MiB) | %.2f |\n", median(base), median(comp)/median(base))
	fmt.Fprintf(w, "| wg-companion / stand-alone wireguard-go, module version (%.1f MiB) | %.2f |\n", median(baseMod), median(comp)/median(baseMod))
	fmt.Fprintf(w, "| agent + companion per node / stand-alone wireguard-go, Debian | %.2f |\n\n", (median(agent)+median(comp))/median(base))
	return nil
}

// pingResult is one `ping -i 0.01` run.
type pingResult struct {
	sent, received int
	maxGap         int // longest run of consecutive lost sequence numbers
	restart        restartTimes
}

type restartTimes struct {
	stop   time.Duration // SIGTERM until the agent exited
	socket time.Duration // start until its API socket answers
	ready  time.Duration // SIGTERM until the whole cluster is ready again
}

var (
	pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
	pingSeq     = regexp.MustCompile(`icmp_seq=(\d+)`)
)

func parsePing(out string) (pingResult, error) {
	m := pingSummary.FindStringSubmatch(out)
	if m == nil {
		return pingResult{}, fmt.Errorf("no ping summary in: %s", lastLines(out, 3))
	}
	var r pingResult
	r.sent, _ = strconv.Atoi(m[1])
	r.received, _ = strconv.Atoi(m[2])
	got := map[int]bool{}
	for _, s := range pingSeq.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(s[1])
		got[n] = true
	}
	gap := 0
	for seq := 1; seq <= r.sent; seq++ {
		if got[seq] {
			gap = 0
			continue
		}
		gap++
		r.maxGap = max(r.maxGap, gap)
	}
	return r, nil
}

func restartPing(ctx context.Context, e *env, o options, cl *demo.Cluster, w io.Writer) error {
	src, dst := cl.Pod("node1-p1"), cl.Pod("node2-p1")
	if src == nil || dst == nil {
		return fmt.Errorf("demo pods node1-p1 and node2-p1 are needed")
	}
	victim := cl.Node("node1")
	deadline := strconv.Itoa(int(o.pingFor.Seconds()))
	ping := func() (string, error) {
		out, err := e.exec(ctx, src.NS, "ping", "-n", "-i", "0.01", "-w", deadline, dst.IP.String())
		if err != nil && !strings.Contains(out, "packets transmitted") {
			return out, err
		}
		return out, nil // ping exits 1 when a packet was lost
	}
	var base, restart []pingResult
	for round := range o.rounds {
		out, err := ping()
		if err != nil {
			return err
		}
		r, err := parsePing(out)
		if err != nil {
			return err
		}
		base = append(base, r)

		type pingOut struct {
			out string
			err error
		}
		done := make(chan pingOut, 1)
		go func() { out, err := ping(); done <- pingOut{out, err} }()
		if err := sleep(ctx, 2*time.Second); err != nil {
			return err
		}
		var rt restartTimes
		t0 := time.Now()
		if err := cl.StopAgent(victim, syscall.SIGTERM); err != nil {
			return err
		}
		rt.stop = time.Since(t0)
		t1 := time.Now()
		if err := cl.StartAgent(victim); err != nil {
			return err
		}
		if err := cl.WaitSocket(ctx, victim, 30*time.Second); err != nil {
			return err
		}
		rt.socket = time.Since(t1)
		if err := cl.WaitReady(ctx, 60*time.Second); err != nil {
			return err
		}
		rt.ready = time.Since(t0)
		po := <-done
		if po.err != nil {
			return po.err
		}
		r, err = parsePing(po.out)
		if err != nil {
			return err
		}
		r.restart = rt
		restart = append(restart, r)
		fmt.Fprintf(os.Stderr, "round %d ping: baseline lost %d/%d, restart lost %d/%d (restart %s)\n",
			round+1, base[round].sent-base[round].received, base[round].sent, r.sent-r.received, r.sent, rt.ready.Round(time.Millisecond))
	}

	fmt.Fprintf(w, "## Pod ping across an agent restart (node1-p1 -> node2-p1, ping -i 0.01 -w %s, agent of node1 restarted 2 s in)\n\n", deadline)
	fmt.Fprintf(w, "| round | run | sent | lost | loss %% | longest gap (packets) | SIGTERM->exit | start->socket | SIGTERM->cluster ready |\n")
	fmt.Fprintf(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	var bl, rl, rd []float64
	for i := range base {
		b, r := base[i], restart[i]
		fmt.Fprintf(w, "| %d | baseline (no restart) | %d | %d | %.2f | %d | - | - | - |\n", i+1, b.sent, b.sent-b.received, loss(b), b.maxGap)
		fmt.Fprintf(w, "| %d | agent restart | %d | %d | %.2f | %d | %s | %s | %s |\n", i+1, r.sent, r.sent-r.received, loss(r), r.maxGap,
			r.restart.stop.Round(time.Millisecond), r.restart.socket.Round(time.Millisecond), r.restart.ready.Round(time.Millisecond))
		bl = append(bl, loss(b))
		rl = append(rl, loss(r))
		rd = append(rd, r.restart.ready.Seconds())
	}
	fmt.Fprintf(w, "\nmedian loss: baseline %.2f %%, across restart %.2f %% (difference %.2f points); median restart (SIGTERM -> cluster ready) %.2f s\n",
		median(bl), median(rl), median(rl)-median(bl), median(rd))
	return nil
}

func loss(r pingResult) float64 {
	if r.sent == 0 {
		return 0
	}
	return 100 * float64(r.sent-r.received) / float64(r.sent)
}
