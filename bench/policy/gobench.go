package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// gobench runs the compile and apply benchmarks of firewall/policy (the
// apply ones need root; they run in network namespaces of their own) and
// prints them as a table with the goals.
func gobench(ctx context.Context, root string, o options, w io.Writer) error {
	args := []string{"test", "-run", "XXX", "-bench", "BenchmarkCompile|BenchmarkApply", "-benchtime", o.benchtime, "./firewall/policy"}
	fmt.Fprintf(os.Stderr, "running: go %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(&out, os.Stderr)
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	took := time.Since(start)

	fmt.Fprintf(w, "## Compile and apply (Go benchmarks, 5,000 pods)\n\n")
	fmt.Fprintf(w, "`go %s` (as root), %s wall time.\n\n", strings.Join(args, " "), took.Round(time.Second))
	fmt.Fprintf(w, "| benchmark | policies | nodes | time per op | chains | rules | sets | elements | netlink msgs |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	sc := bufio.NewScanner(&out)
	type key struct{ policies, nodes string }
	byKind := map[string]map[key]float64{}
	var order []key
	for sc.Scan() {
		b, ok := parseBench(sc.Text())
		if !ok {
			continue
		}
		k := key{b.param["policies"], b.param["nodes"]}
		if byKind[b.kind] == nil {
			byKind[b.kind] = map[key]float64{}
		}
		if b.kind == "Compile" {
			order = append(order, k)
		}
		byKind[b.kind][k] = b.nsPerOp
		fmt.Fprintf(w, "| %s | %s | %s | **%s** | %s | %s | %s | %s | %s |\n", b.kind, b.param["policies"], b.param["nodes"], fmtNs(b.nsPerOp),
			b.metric("chains"), b.metric("rules"), b.metric("sets"), b.metric("elements"), b.metric("msgs"))
	}
	fmt.Fprintf(w, "\n| policies | nodes | full sync: compile + apply full | goal 1 s | one policy changed: compile + incremental apply | goal 50 ms |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, k := range order {
		full := byKind["Compile"][k] + byKind["Apply full"][k]
		one := byKind["Apply one-change-compile+apply"][k]
		fmt.Fprintf(w, "| %s | %s | **%s** | %s | **%s** | %s |\n", k.policies, k.nodes, fmtNs(full), meets(full, 1e9), fmtNs(one), meets(one, 50e6))
	}
	fmt.Fprintf(w, "\n(nodes=1: every pod is local, the worst case for one node; nodes=50: a node holds 1/50 of the pods. "+
		"Goals: full sync under 1 s, one policy changed under 50 ms.)\n\n")
	return nil
}

type benchLine struct {
	kind    string // e.g. "Compile", "Apply full", "Apply one-change-apply"
	param   map[string]string
	nsPerOp float64
	metrics map[string]float64
}

func (b benchLine) metric(k string) string {
	v, ok := b.metrics[k]
	if !ok {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// parseBench reads "BenchmarkApply/full/policies=1000/pods=5000/nodes=50-2  5  123 ns/op  7 chains ...".
func parseBench(line string) (benchLine, bool) {
	f := strings.Fields(line)
	if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
		return benchLine{}, false
	}
	name := f[0]
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		name = name[:i] // the GOMAXPROCS suffix
	}
	parts := strings.Split(strings.TrimPrefix(name, "Benchmark"), "/")
	b := benchLine{param: map[string]string{}, metrics: map[string]float64{}}
	var kind []string
	for _, p := range parts {
		if k, v, ok := strings.Cut(p, "="); ok {
			b.param[k] = v
		} else {
			kind = append(kind, p)
		}
	}
	b.kind = strings.Join(kind, " ")
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			continue
		}
		if f[i+1] == "ns/op" {
			b.nsPerOp = v
		} else {
			b.metrics[f[i+1]] = v
		}
	}
	return b, b.nsPerOp > 0
}

func fmtNs(ns float64) string {
	d := time.Duration(ns)
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	}
}

func meets(ns, goal float64) string {
	if ns == 0 {
		return "-"
	}
	if ns <= goal {
		return fmt.Sprintf("met (%.2fx)", ns/goal)
	}
	return fmt.Sprintf("missed (%.2fx)", ns/goal)
}
