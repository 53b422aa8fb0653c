package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/netloom/netloom/node/demo"
)

// Addresses requested for the "one change" services (outside what the bulk
// services get from 10.96.0.0/16, lowest first).
var (
	changeIPSmall = netip.MustParseAddr("10.96.200.1")
	changeIPLarge = netip.MustParseAddr("10.96.200.2")
)

// sample is one round of measurements against one destination.
type sample struct {
	tcp    float64 // Gbit/s
	udpPPS float64 // 64-byte UDP datagrams received per second
	loss   float64 // UDP loss, percent
	conns  float64 // new TCP connections per second (sequential)
	failed int     // connection attempts that failed
}

// phase is the measurements with one number of services installed: each
// round measures the pod's own address (the baseline, no service lookup)
// and then the VIP, so that the machine's state varies as little as
// possible between the two.
type phase struct {
	name     string
	services int
	pod, vip []sample
	busy     []float64 // machine CPU busy (%) just before each round
	agentCPU []float64 // the three agents' CPU use during each round, % of one CPU
}

// packetBench measures traffic through a VIP with few and with many
// services installed, and how long the many take to be programmed.
func packetBench(ctx context.Context, o options, dir string, log *slog.Logger, w io.Writer) (err error) {
	start := time.Now()
	b, err := newBench(ctx, o, dir, log, "packet", nil)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := b.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	n1 := b.c.Nodes[0]
	target := b.c.Node("node1").Pods[0] // the one endpoint: iperf3 and the Go server
	pods := b.c.Pods()
	// 10 services: the iperf3 VIP, the connection-rate VIP (both Local, so
	// node1, which has the endpoint, announces them) and 8 ClusterIP
	// services over every pod.
	m := poolManifest + podsManifest(pods, map[string]string{target.Name: "role: perf"})
	m += fmt.Sprintf(`---
apiVersion: v1
kind: Service
metadata:
  name: perf
  namespace: default
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector:
    role: perf
  ports:
  - name: tcp
    protocol: TCP
    port: 5201
  - name: udp
    protocol: UDP
    port: 5201
`)
	m += service("conn", "LoadBalancer", "role: perf", 80, serverPort, true)
	for i := range 8 {
		m += service(fmt.Sprintf("fill-%d", i), "ClusterIP", "app: web", 80, serverPort, false)
	}
	if err := b.apply(ctx, n1, "apply", m); err != nil {
		return err
	}
	if _, err := b.c.StartProcess("iperf3", target.NS, "iperf3", "-s", "-p", "5201"); err != nil {
		return err
	}
	perfVIP, perfOwner, err := b.vip(ctx, "perf", b.c.Nodes, "", 60*time.Second)
	if err != nil {
		return err
	}
	connVIP, _, err := b.vip(ctx, "conn", b.c.Nodes, "", 60*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "per-packet: iperf3 in pod %s (%s) behind VIP %s announced by %s\n", target.Name, target.IP, perfVIP, perfOwner)
	// The baseline: the same pod without a service (the client routes the
	// pod subnet through node1).
	subnet := netip.PrefixFrom(target.IP, 24).Masked()
	if _, err := demo.ExecContext(ctx, b.clientNS, "ip", "route", "add", subnet.String(), "via", n1.Addr.String()); err != nil {
		return err
	}
	if err := waitConnect(ctx, b.clientNS, netip.AddrPortFrom(connVIP, 80)); err != nil {
		return err
	}
	if err := waitConnect(ctx, b.clientNS, netip.AddrPortFrom(perfVIP, 5201)); err != nil {
		return err
	}

	direct := netip.AddrPortFrom(target.IP, serverPort)
	one := func(dst netip.Addr, cr netip.AddrPort) (sample, error) {
		var x sample
		var err error
		if x.tcp, err = iperfTCP(ctx, b.clientNS, dst, o.iperfTime); err != nil {
			return x, err
		}
		if x.udpPPS, x.loss, err = iperfUDP(ctx, b.clientNS, dst, o.iperfTime); err != nil {
			return x, err
		}
		x.conns, x.failed, err = connRate(b.clientNS, cr, 3*time.Second)
		return x, err
	}
	measure := func(name string, services int) (phase, error) {
		p := phase{name: name, services: services}
		for range o.rounds {
			p.busy = append(p.busy, waitQuiet(ctx, 60*time.Second))
			cpu0, t0 := agentCPU(b), time.Now()
			pod, err := one(target.IP, direct)
			if err != nil {
				return p, err
			}
			vip, err := one(perfVIP, netip.AddrPortFrom(connVIP, 80))
			if err != nil {
				return p, err
			}
			p.agentCPU = append(p.agentCPU, 100*(agentCPU(b)-cpu0).Seconds()/time.Since(t0).Seconds())
			p.pod, p.vip = append(p.pod, pod), append(p.vip, vip)
			fmt.Fprintf(os.Stderr, "%s: pod %+v, VIP %+v; machine busy before %.0f%%, agents %.0f%%\n",
				name, pod, vip, p.busy[len(p.busy)-1], p.agentCPU[len(p.agentCPU)-1])
		}
		return p, nil
	}
	var phases []phase
	ph, err := measure("10 services", 10)
	if err != nil {
		return err
	}
	phases = append(phases, ph)
	rssSmall := agentRSS(b)
	changeSmall, err := b.oneChange(ctx, "change-small", changeIPSmall)
	if err != nil {
		return err
	}

	// 10,000 more, in one apply.
	before, err := svcElements(ctx, n1)
	if err != nil {
		return err
	}
	var bulk strings.Builder
	for i := range o.services {
		bulk.WriteString(service(fmt.Sprintf("bulk-%05d", i), "ClusterIP", "app: web", 80, serverPort, false))
	}
	t0 := time.Now()
	if err := b.apply(ctx, n1, "apply", bulk.String()); err != nil {
		return err
	}
	applyTook := time.Since(t0)
	programmed, err := b.waitElements(ctx, t0, before+o.services)
	if err != nil {
		return err
	}
	rssLarge := agentRSS(b)
	changeLarge, err := b.oneChange(ctx, "change-large", changeIPLarge)
	if err != nil {
		return err
	}
	if ph, err = measure(fmt.Sprintf("%d services", o.services+12), o.services+12); err != nil {
		return err
	}
	phases = append(phases, ph)
	t1 := time.Now()
	if err := b.apply(ctx, n1, "delete", bulk.String()); err != nil {
		return err
	}
	removed, err := b.waitElements(ctx, t1, before+1) // change-large stays
	if err != nil {
		return err
	}
	if ph, err = measure("12 services, after the delete", 12); err != nil {
		return err
	}
	phases = append(phases, ph)

	reportPacket(w, o, phases, applyTook, programmed, removed, changeSmall, changeLarge, rssSmall, rssLarge, time.Since(start))
	return nil
}

func waitConnect(ctx context.Context, ns string, addr netip.AddrPort) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := demo.Do(ns, func() error {
			c, err := net.DialTimeout("tcp4", addr.String(), time.Second)
			if err == nil {
				abort(c)
			}
			return err
		})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("client cannot connect to %s: %w", addr, err)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

func iperfTCP(ctx context.Context, ns string, dst netip.Addr, secs int) (float64, error) {
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := iperf(ctx, ns, &r, "-c", dst.String(), "-p", "5201", "-t", strconv.Itoa(secs), "-J"); err != nil {
		return 0, err
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}

// iperfUDP sends 64-byte datagrams as fast as iperf3 can and returns the
// datagrams the server received per second and the loss.
func iperfUDP(ctx context.Context, ns string, dst netip.Addr, secs int) (float64, float64, error) {
	var r struct {
		End struct {
			Sum struct {
				Seconds     float64 `json:"seconds"`
				Packets     float64 `json:"packets"`
				LostPackets float64 `json:"lost_packets"`
				LostPercent float64 `json:"lost_percent"`
			} `json:"sum"`
		} `json:"end"`
	}
	if err := iperf(ctx, ns, &r, "-c", dst.String(), "-p", "5201", "-u", "-l", "64", "-b", "0", "-t", strconv.Itoa(secs), "-J"); err != nil {
		return 0, 0, err
	}
	s := r.End.Sum
	if s.Seconds == 0 {
		return 0, 0, errors.New("iperf3 -u reported no duration")
	}
	return (s.Packets - s.LostPackets) / s.Seconds, s.LostPercent, nil
}

func iperf(ctx context.Context, ns string, v any, args ...string) error {
	var out string
	var err error
	for try := 0; try < 3; try++ { // the server takes one test at a time
		out, err = demo.ExecContext(ctx, ns, append([]string{"iperf3"}, args...)...)
		if err == nil {
			break
		}
		if serr := sleep(ctx, time.Second); serr != nil {
			return serr
		}
	}
	if err != nil {
		return err
	}
	var e struct {
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal([]byte(out), &e); jerr == nil && e.Error != "" {
		return fmt.Errorf("iperf3 %s: %s", strings.Join(args, " "), e.Error)
	}
	if jerr := json.Unmarshal([]byte(out), v); jerr != nil {
		return fmt.Errorf("iperf3 output: %w", jerr)
	}
	return nil
}

// connRate opens connections one after the other from ns to addr (connect,
// read the answer, close) for d, or at most 10,000 of them (fewer than the
// client's ephemeral ports), and returns connections per second and the
// attempts that failed (1 s timeout).
func connRate(ns string, addr netip.AddrPort, d time.Duration) (float64, int, error) {
	n, failed := 0, 0
	var took time.Duration
	err := demo.Do(ns, func() error {
		start := time.Now()
		buf := make([]byte, 64)
		for time.Since(start) < d && n+failed < 10000 {
			c, err := net.DialTimeout("tcp4", addr.String(), time.Second)
			if err != nil {
				failed++
				continue
			}
			c.SetDeadline(time.Now().Add(time.Second))
			_, err = c.Read(buf)
			abort(c)
			if err != nil {
				failed++
				continue
			}
			n++
		}
		took = time.Since(start)
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("connections to %s: %w", addr, err)
	}
	if n == 0 {
		return 0, failed, fmt.Errorf("connections to %s: all %d failed", addr, failed)
	}
	return float64(n) / took.Seconds(), failed, nil
}

// svcElements counts the service addresses in node n's svc-ips map.
func svcElements(ctx context.Context, n *demo.Node) (int, error) {
	out, err := demo.ExecContext(ctx, n.NS, "nft", "list", "map", "inet", "netloom", "svc-ips")
	if err != nil {
		return 0, err
	}
	return strings.Count(out, " : "), nil
}

// waitElements waits until every node's svc-ips map holds want elements
// and returns, per node, the time from t0.
func (b *bench) waitElements(ctx context.Context, t0 time.Time, want int) (map[string]time.Duration, error) {
	got := map[string]time.Duration{}
	deadline := time.Now().Add(5 * time.Minute)
	last := map[string]int{}
	for len(got) < len(b.c.Nodes) {
		for _, n := range b.c.Nodes {
			if _, ok := got[n.Name]; ok {
				continue
			}
			c, err := svcElements(ctx, n)
			if err != nil {
				return nil, err
			}
			last[n.Name] = c
			if c == want {
				got[n.Name] = time.Since(t0)
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("svc-ips elements after 5 minutes: %v, want %d", last, want)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	return got, nil
}

// oneChange applies one ClusterIP service (requested address cip, port
// 9090, the perf pod) on node1 and returns the time from the start of the
// apply until a pod of node2 connects to it.
func (b *bench) oneChange(ctx context.Context, name string, cip netip.Addr) (time.Duration, error) {
	m := strings.Replace(service(name, "ClusterIP", "role: perf", 9090, serverPort, false), "  ports:", "  clusterIP: "+cip.String()+"\n  ports:", 1)
	from := b.c.Node("node2").Pods[0]
	addr := netip.AddrPortFrom(cip, 9090)
	done := make(chan time.Time, 1)
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- demo.Do(from.NS, func() error {
			d := net.Dialer{Timeout: 50 * time.Millisecond}
			for {
				select {
				case <-stop:
					return errors.New("stopped")
				default:
				}
				c, err := d.Dial("tcp4", addr.String())
				if err == nil {
					done <- time.Now()
					abort(c)
					return nil
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}()
	t0 := time.Now()
	if err := b.apply(ctx, b.c.Nodes[0], "apply", m); err != nil {
		close(stop)
		<-errc
		return 0, err
	}
	select {
	case t := <-done:
		<-errc
		return t.Sub(t0), nil
	case <-time.After(60 * time.Second):
		close(stop)
		<-errc
		return 0, fmt.Errorf("service %s at %s not reachable from %s within 60s", name, addr, from.Name)
	}
}

// agentRSS is the resident memory of every agent, in MiB.
func agentRSS(b *bench) map[string]float64 {
	out := map[string]float64{}
	for _, n := range b.c.Nodes {
		if n.Agent == nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.Agent.Pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				out[n.Name] = kb / 1024
			}
		}
	}
	return out
}

// waitQuiet waits (at most max) until the machine's CPUs are less than 25%
// busy over one second and returns the last busy figure.
func waitQuiet(ctx context.Context, max time.Duration) float64 {
	deadline := time.Now().Add(max)
	for {
		b0, t0 := cpuBusy()
		if sleep(ctx, time.Second) != nil {
			return 0
		}
		b1, t1 := cpuBusy()
		busy := 0.0
		if t1 > t0 {
			busy = 100 * float64(b1-b0) / float64(t1-t0)
		}
		if busy < 25 || time.Now().After(deadline) {
			return busy
		}
	}
}

// cpuBusy reads the busy and total jiffies of all CPUs from /proc/stat.
func cpuBusy() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, x := range f[1:] {
		v, _ := strconv.ParseInt(x, 10, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// agentCPU is the CPU time used so far by the three agents.
func agentCPU(b *bench) time.Duration {
	var d time.Duration
	for _, n := range b.c.Nodes {
		if n.Agent == nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n.Agent.Pid))
		if err != nil {
			continue
		}
		s := string(data)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		d += time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ 100
	}
	return d
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func reportPacket(w io.Writer, o options, phases []phase, applyTook time.Duration, programmed, removed map[string]time.Duration,
	changeSmall, changeLarge time.Duration, rssSmall, rssLarge map[string]float64, wall time.Duration) {
	fmt.Fprintf(w, "## Per-packet cost: client -> VIP with 10 vs %d services installed\n\n", o.services)
	fmt.Fprintf(w, "One endpoint (iperf3 -s and a Go TCP server in pod node1-p1) behind LoadBalancer services with externalTrafficPolicy Local, so node1 announces the VIPs; the client on the same bridge. "+
		"Each round measures the pod's own address first (the client routes the pod subnet through node1: the same hops, no service lookup, no DNAT) and then the VIP. "+
		"%d rounds per phase, iperf3 -t %d; UDP: 64-byte datagrams, -b 0; connections: sequential connect, read, close (reset) for 3 s. Mean (every round).\n\n", o.rounds, o.iperfTime)
	fmt.Fprintf(w, "| services installed | to | TCP Gbit/s | UDP datagrams/s received | UDP loss %% | connections/s | failed connects |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	col := func(xs []sample, f func(sample) float64, format string) string {
		v := make([]float64, len(xs))
		for i, x := range xs {
			v[i] = f(x)
		}
		s := make([]string, len(v))
		for i, x := range v {
			s[i] = fmt.Sprintf(format, x)
		}
		return fmt.Sprintf(format, mean(v)) + " (" + strings.Join(s, ", ") + ")"
	}
	fails := func(xs []sample) int {
		n := 0
		for _, x := range xs {
			n += x.failed
		}
		return n
	}
	tcp := func(x sample) float64 { return x.tcp }
	pps := func(x sample) float64 { return x.udpPPS }
	loss := func(x sample) float64 { return x.loss }
	conns := func(x sample) float64 { return x.conns }
	for _, p := range phases {
		for _, r := range []struct {
			to string
			xs []sample
		}{{"pod address", p.pod}, {"VIP", p.vip}} {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %d |\n", p.name, r.to, col(r.xs, tcp, "%.2f"), col(r.xs, pps, "%.0f"), col(r.xs, loss, "%.1f"), col(r.xs, conns, "%.0f"), fails(r.xs))
		}
	}
	// VIP / pod per round, averaged: the cost of the service path with
	// the machine's load of that moment factored out.
	ratio := func(p phase, f func(sample) float64) float64 {
		v := make([]float64, len(p.vip))
		for i := range p.vip {
			v[i] = f(p.vip[i]) / f(p.pod[i])
		}
		return mean(v)
	}
	fmt.Fprintf(w, "\nVIP / pod address, mean of the per-round ratios:\n\n| services installed | TCP | UDP datagrams/s | connections/s | machine busy before a round, %% | agents' CPU during, %% of one CPU |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, p := range phases {
		list := func(v []float64) string {
			s := make([]string, len(v))
			for i, x := range v {
				s[i] = fmt.Sprintf("%.0f", x)
			}
			return strings.Join(s, ", ")
		}
		fmt.Fprintf(w, "| %s | %.3f | %.3f | %.3f | %s | %s |\n", p.name, ratio(p, tcp), ratio(p, pps), ratio(p, conns), list(p.busy), list(p.agentCPU))
	}
	if len(phases) == 3 {
		small := func(f func(sample) float64) float64 { return (ratio(phases[0], f) + ratio(phases[2], f)) / 2 }
		fmt.Fprintf(w, "\nlarge / small (the VIP / pod ratio with %d services over the mean of the two small phases): TCP %.3f, UDP datagrams/s %.3f, connections/s %.3f\n",
			o.services+12, ratio(phases[1], tcp)/small(tcp), ratio(phases[1], pps)/small(pps), ratio(phases[1], conns)/small(conns))
	}
	fmt.Fprintf(w, "\n## Programming %d ClusterIP services (6 endpoints each) end to end\n\n", o.services)
	fmt.Fprintf(w, "- `netloom apply -f` of the %d services on node1 returned after %s\n", o.services, applyTook.Round(time.Millisecond))
	fmt.Fprintf(w, "- from the start of the apply until each node's svc-ips map held every service: %s\n", durs(programmed))
	fmt.Fprintf(w, "- `netloom delete -f` of them, until every node's map was back: %s\n", durs(removed))
	fmt.Fprintf(w, "- one more ClusterIP service applied on node1, until a pod of node2 connects to it: %s with 10 services installed, %s with %d\n",
		changeSmall.Round(time.Millisecond), changeLarge.Round(time.Millisecond), o.services+11)
	fmt.Fprintf(w, "- agent resident memory (MiB): %s with 10 services, %s with %d\n", rss(rssSmall), rss(rssLarge), o.services+11)
	fmt.Fprintf(w, "\n(wall time %s)\n\n", wall.Round(time.Second))
}

func durs(m map[string]time.Duration) string {
	var s []string
	for _, n := range []string{"node1", "node2", "node3"} {
		if d, ok := m[n]; ok {
			s = append(s, fmt.Sprintf("%s %s", n, d.Round(10*time.Millisecond)))
		}
	}
	return strings.Join(s, ", ")
}

func rss(m map[string]float64) string {
	var s []string
	for _, n := range []string{"node1", "node2", "node3"} {
		if v, ok := m[n]; ok {
			s = append(s, fmt.Sprintf("%s %.0f", n, v))
		}
	}
	return strings.Join(s, ", ")
}
