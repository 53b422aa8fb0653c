package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

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

func mibOf(kb int64) float64 { return float64(kb) / 1024 }

// label names a configuration in the tables.
func label(cfg string, o options) string {
	switch cfg {
	case cfgUnrelated:
		return fmt.Sprintf("%d policies selecting other pods + allow", o.policies)
	case cfgSelected:
		return fmt.Sprintf("%d policies selecting the server + allow", o.policies)
	}
	return cfg
}

// report prints the end-to-end tables. Every ratio is against the median
// of the visits without policies.
func report(w io.Writer, o options, phases []*phase) {
	byCfg := map[string][]*phase{}
	for _, p := range phases {
		if len(p.cross) > 0 {
			byCfg[p.name] = append(byCfg[p.name], p)
		}
	}
	cfgs := []string{cfgNone, cfgUnrelated, cfgSelected}
	collect := func(cfg string, f func(*phase) float64) []float64 {
		var out []float64
		for _, p := range byCfg[cfg] {
			out = append(out, f(p))
		}
		return out
	}
	list := func(xs []float64, format string) string {
		s := make([]string, len(xs))
		for i, x := range xs {
			s[i] = fmt.Sprintf(format, x)
		}
		return strings.Join(s, ", ")
	}
	cross := func(p *phase) float64 { return p.cross[0].gbps }
	same := func(p *phase) float64 { return p.same[0].gbps }
	conn := func(p *phase) float64 { return p.conn.perSec }

	fmt.Fprintf(w, "## End to end: 2-node demo cluster, %d policies\n\n", o.policies)
	fmt.Fprintf(w, "Pods: perf/client on node1, perf/server and perf/near on node2, two pods in each of %d bulk namespaces. "+
		"The configurations are visited in turns (none, then %d rounds of: %d policies selecting other pods, %d selecting the server, none), "+
		"each entered by one delete and one apply request to node1's agent.\n\n", bulkNamespaces, o.rounds, o.policies, o.policies)

	fmt.Fprintf(w, "### Pod-to-pod throughput (iperf3 -t %d, one stream, one run per visit)\n\n", o.duration)
	fmt.Fprintf(w, "| configuration | client (node1) -> server (node2), Gbit/s | median | vs none | near (node2) -> server (node2), Gbit/s | median | vs none |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	bc, bs, bn := median(collect(cfgNone, cross)), median(collect(cfgNone, same)), median(collect(cfgNone, conn))
	for _, cfg := range cfgs {
		c, s := collect(cfg, cross), collect(cfg, same)
		fmt.Fprintf(w, "| %s | %s | **%.2f** | %s | %s | **%.2f** | %s |\n", label(cfg, o), list(c, "%.2f"), median(c), ratio(median(c), bc), list(s, "%.2f"), median(s), ratio(median(s), bs))
	}

	crossF := func(p *phase) float64 { return p.crossFrozen[0].gbps }
	sameF := func(p *phase) float64 { return p.sameFrozen[0].gbps }
	fmt.Fprintf(w, "\nThe same runs with both agents stopped (SIGSTOP) for the run: the kernel's data plane alone, without the agents' CPU.\n\n")
	fmt.Fprintf(w, "| configuration | client (node1) -> server (node2), Gbit/s | median | vs none | near (node2) -> server (node2), Gbit/s | median | vs none |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	bcf, bsf := median(collect(cfgNone, crossF)), median(collect(cfgNone, sameF))
	for _, cfg := range cfgs {
		c, s := collect(cfg, crossF), collect(cfg, sameF)
		fmt.Fprintf(w, "| %s | %s | **%.2f** | %s | %s | **%.2f** | %s |\n", label(cfg, o), list(c, "%.2f"), median(c), ratio(median(c), bcf), list(s, "%.2f"), median(s), ratio(median(s), bsf))
	}

	fmt.Fprintf(w, "\n### New connections (client on node1 -> server on node2, %d sequential connects per visit)\n\n", o.conns)
	fmt.Fprintf(w, "| configuration | connections/s | median | vs none | connect p50 | connect p99 |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, cfg := range cfgs {
		c := collect(cfg, conn)
		p50 := collect(cfg, func(p *phase) float64 { return float64(p.conn.p50) })
		p99 := collect(cfg, func(p *phase) float64 { return float64(p.conn.p99) })
		failed := 0
		for _, p := range byCfg[cfg] {
			failed += p.conn.failed
		}
		fmt.Fprintf(w, "| %s | %s | **%.0f** | %s | %s | %s |\n", label(cfg, o), list(c, "%.0f"), median(c), ratio(median(c), bn),
			time.Duration(median(p50)).Round(time.Microsecond), time.Duration(median(p99)).Round(time.Microsecond))
		if failed > 0 {
			fmt.Fprintf(w, "| (%s: %d connections failed) | | | | | |\n", label(cfg, o), failed)
		}
	}

	fmt.Fprintf(w, "\n### Applying, agent memory and CPU, every visit in order\n\n")
	fmt.Fprintf(w, "VmRSS read after the visit's measurements; CPU and the mean firewall reconcile pass (netloom_reconcile_duration_seconds{subsystem=\"firewall\"}: snapshot, compile, nftables apply) over the measurements with the agents running (about %d s).\n\n", 2*o.duration+2)
	fmt.Fprintf(w, "| visit | policies | rules node1 / node2 | apply -> compiled node1 / node2 | VmRSS MiB node1 / node2 | VmHWM MiB node1 / node2 | agent CPU node1 / node2 | reconcile pass node1 / node2 |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, p := range phases {
		name := label(p.name, o)
		if p.round > 0 {
			name = fmt.Sprintf("%d: %s", p.round, name)
		}
		if len(p.cross) == 0 {
			fmt.Fprintf(w, "| %s | %d | %d / %d | %s / %s | - | - | - | - |\n", name, p.policies, p.rules["node1"], p.rules["node2"],
				p.sync["node1"].Round(time.Millisecond), p.sync["node2"].Round(time.Millisecond))
			continue
		}
		a, b := p.rss["node1"], p.rss["node2"]
		fmt.Fprintf(w, "| %s | %d | %d / %d | %s / %s | **%.1f** / **%.1f** | %.1f / %.1f | %.1f %% / %.1f %% | %s / %s |\n", name, p.policies, p.rules["node1"], p.rules["node2"],
			p.sync["node1"].Round(time.Millisecond), p.sync["node2"].Round(time.Millisecond),
			mibOf(a["VmRSS"]), mibOf(b["VmRSS"]), mibOf(a["VmHWM"]), mibOf(b["VmHWM"]),
			p.cpu["node1"], p.cpu["node2"], fmtMS(p.reconMS["node1"]), fmtMS(p.reconMS["node2"]))
	}

	fmt.Fprintf(w, "\n### One policy changed: apply request -> new connections follow it (server on node2)\n\n")
	fmt.Fprintf(w, "The allow policy's second port is closed and opened again; a prober starts a connection every 5 ms. "+
		"Gossip lag is node2's netloom_store_sync_lag_seconds for the change.\n\n")
	fmt.Fprintf(w, "| configuration | applied on | change | n | median | max | gossip lag, median |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, p := range phases {
		for _, on := range []string{"node2", "node1"} {
			for _, open := range []bool{false, true} {
				var ds, lags []float64
				for _, t := range p.toggles {
					if t.on == on && t.open == open {
						ds = append(ds, float64(t.took))
						lags = append(lags, float64(t.lag))
					}
				}
				if len(ds) == 0 {
					continue
				}
				what := "close the port (deny)"
				if open {
					what = "open the port (allow)"
				}
				where, lag := on+" (the server's node)", "-"
				if on == "node1" {
					where = on + " (gossip to node2)"
					lag = time.Duration(median(lags)).Round(time.Millisecond).String()
				}
				fmt.Fprintf(w, "| %s | %s | %s | %d | **%s** | %s | %s |\n", label(p.name, o), where, what, len(ds),
					time.Duration(median(ds)).Round(time.Millisecond), time.Duration(slices.Max(ds)).Round(time.Millisecond), lag)
			}
		}
	}
	fmt.Fprintln(w)
}

func ratio(v, base float64) string {
	if base == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f (%+.1f %%)", v/base, 100*(v/base-1))
}

func fmtMS(ms float64) string {
	if ms == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f ms", ms)
}
