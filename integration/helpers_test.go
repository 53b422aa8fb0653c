package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/demo"
)

// Ports of the demo clusters (the demo defaults, spelled out because the
// capture filters depend on them).
const (
	gossipPort = demo.DefaultGossipPort
	wgPort     = demo.DefaultWGPort
	clusterNet = "10.244.0.0/16"
)

// fastTimers make failure detection and gossip quick for the tests that wait
// for a node to be seen failing or leaving.
var fastTimers = []string{
	"--probe-interval", "500ms",
	"--probe-timeout", "250ms",
	"--suspicion-mult", "3",
	"--gossip-interval", "100ms",
	"--push-pull-interval", "5s",
}

// tc is one test's cluster.
type tc struct {
	t *testing.T
	c *demo.Cluster
}

// newCluster builds a cluster (namespaces only, no agents yet) under a
// unique prefix and a short state directory, and registers its removal,
// which also checks that nothing of it is left. Fields of o left zero get
// the demo defaults; Prefix, StateDir, Exe and Log are set here.
func newCluster(t *testing.T, o demo.Options) *tc {
	t.Helper()
	needRoot(t)
	for _, tool := range []string{"ip", "ping", "socat", "tcpdump", "wg", "nft", "timeout"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: install the test tools (./test.sh does it with apt-get)", tool)
		}
	}
	// A short directory: the API socket path must stay under 108 bytes.
	dir, err := os.MkdirTemp("/tmp", "nlit")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(dir)
			return
		}
		t.Logf("state of the failed cluster kept in %s (agent logs: %s/node*/agent.log)", dir, dir)
	})
	o.Prefix = "nlt-" + randHex(2)
	o.StateDir = dir
	o.Exe = exe
	o.Log = slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c, err := demo.Build(context.Background(), o)
	if err != nil {
		t.Fatalf("build cluster: %v", err)
	}
	x := &tc{t: t, c: c}
	t.Cleanup(x.down)
	t.Logf("cluster %s: %d nodes, state in %s", o.Prefix, len(c.Nodes), dir)
	return x
}

// down removes the cluster and checks that no namespace or process of it is
// left; on failure it first shows the end of every agent's log.
func (x *tc) down() {
	t := x.t
	if t.Failed() {
		for _, n := range x.c.Nodes {
			t.Logf("---- last lines of %s's agent log (%s):\n%s", n.Name, n.LogPath, tail(n.LogPath, 40))
		}
	}
	if err := x.c.Down(); err != nil {
		t.Errorf("remove cluster %s: %v", x.c.Opts.Prefix, err)
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Errorf("ip netns list: %v: %s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, x.c.Opts.Prefix+"-") {
			t.Errorf("namespace left after the cluster was removed: %s", l)
		}
	}
	for _, p := range x.strayProcs() {
		t.Errorf("process left after the cluster was removed: %s", p)
	}
	for _, n := range x.c.Nodes {
		if _, err := os.Lstat(uapiSocket(n)); err == nil {
			t.Errorf("WireGuard UAPI socket left after the cluster was removed: %s", uapiSocket(n))
		}
	}
}

// strayProcs lists processes whose command line names this cluster's state
// directory or one of its WireGuard interfaces.
func (x *tc) strayProcs() []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		mine := slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, x.c.Opts.StateDir) })
		for i, a := range args {
			for _, n := range x.c.Nodes {
				if a == "--iface" && i+1 < len(args) && args[i+1] == n.WGIface {
					mine = true
				}
			}
		}
		if mine {
			if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && strings.Contains(string(st), ") Z ") {
				continue // a zombie is gone already
			}
			out = append(out, fmt.Sprintf("pid %d: %s", pid, strings.Join(args, " ")))
		}
	}
	return out
}

// start starts every agent, waits until the cluster agrees, then adds the
// pods.
func (x *tc) start() {
	x.t.Helper()
	ctx := context.Background()
	if err := x.c.StartAgents(ctx); err != nil {
		x.t.Fatalf("start agents: %v", err)
	}
	x.waitReady()
	if err := x.c.AddPods(ctx); err != nil {
		x.t.Fatalf("add pods: %v", err)
	}
}

func (x *tc) waitReady() {
	x.t.Helper()
	if err := x.c.WaitReady(context.Background(), 60*time.Second); err != nil {
		x.t.Fatalf("cluster not ready: %v", err)
	}
}

// with returns x bound to t, for use in a subtest of x's test.
func (x *tc) with(t *testing.T) *tc { return &tc{t: t, c: x.c} }

func (x *tc) node(i int) *demo.Node { return x.c.Nodes[i-1] }

func (x *tc) status(n *demo.Node) *api.Status {
	x.t.Helper()
	st, err := x.c.Status(context.Background(), n)
	if err != nil {
		x.t.Fatal(err)
	}
	return st
}

// result of a command.
type result struct {
	stdout, stderr string
	err            error
}

func (r result) String() string {
	return fmt.Sprintf("err=%v stdout=%q stderr=%q", r.err, r.stdout, r.stderr)
}

// exitCode is the command's exit status, -1 when it did not run or was killed.
func (r result) exitCode() int {
	if r.err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(r.err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// inNS runs args inside namespace ns with the given environment (added to
// ours) and stdin, for at most 30 seconds.
func inNS(ns string, env []string, stdin []byte, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	err := cmd.Run()
	return result{o.String(), e.String(), err}
}

// must runs args in ns and fails the test when the command fails.
func (x *tc) must(ns string, args ...string) string {
	x.t.Helper()
	r := inNS(ns, nil, nil, args...)
	if r.err != nil {
		x.t.Fatalf("in netns %s: %s: %v", ns, strings.Join(args, " "), r)
	}
	return r.stdout
}

// cli runs `netloom <cmd> --socket <node's socket> args...` in node n's
// namespace. Flags go before positional arguments (urfave/cli).
func (x *tc) cli(n *demo.Node, stdin []byte, cmd string, args ...string) result {
	full := append([]string{exe, cmd, "--socket", n.Socket}, args...)
	return inNS(n.NS, nil, stdin, full...)
}

// eventually calls f until it returns nil, failing the test with f's last
// error after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not the case after %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// member returns the member called name in st.
func member(st *api.Status, name string) (api.MemberStatus, bool) {
	for _, m := range st.Members {
		if m.Name == name {
			return m, true
		}
	}
	return api.MemberStatus{}, false
}

// wgPeers reads `wg show <iface> allowed-ips` in node n's namespace: public
// key -> allowed IPs.
func (x *tc) wgPeers(n *demo.Node) (map[string][]string, error) {
	r := inNS(n.NS, nil, nil, "wg", "show", n.WGIface, "allowed-ips")
	if r.err != nil {
		return nil, fmt.Errorf("wg show %s allowed-ips in %s: %v", n.WGIface, n.NS, r)
	}
	peers := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		var ips []string
		for _, s := range f[1:] {
			if s != "(none)" {
				ips = append(ips, s)
			}
		}
		slices.Sort(ips)
		peers[f[0]] = ips
	}
	return peers, nil
}

// wgEndpoints reads `wg show <iface> endpoints`: public key -> endpoint.
func (x *tc) wgEndpoints(n *demo.Node) (map[string]string, error) {
	r := inNS(n.NS, nil, nil, "wg", "show", n.WGIface, "endpoints")
	if r.err != nil {
		return nil, fmt.Errorf("wg show %s endpoints in %s: %v", n.WGIface, n.NS, r)
	}
	eps := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			eps[f[0]] = f[1]
		}
	}
	return eps, nil
}

// routeTo returns the route lines (all tables) in node n's namespace whose
// destination is exactly p.
func (x *tc) routeTo(n *demo.Node, p netip.Prefix) ([]string, error) {
	r := inNS(n.NS, nil, nil, "ip", "-4", "-o", "route", "show", "table", "all")
	if r.err != nil {
		return nil, fmt.Errorf("ip route in %s: %v", n.NS, r)
	}
	var out []string
	for _, l := range strings.Split(r.stdout, "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == p.String() {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out, nil
}

// links lists the link names in namespace ns.
func links(ns string) ([]string, error) {
	r := inNS(ns, nil, nil, "ip", "-o", "link", "show")
	if r.err != nil {
		return nil, fmt.Errorf("ip link in %s: %v", ns, r)
	}
	var names []string
	for _, l := range strings.Split(r.stdout, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		names = append(names, name)
	}
	return names, nil
}

// companionPid reads node n's WireGuard companion pid file and checks the
// process runs; it returns the pid and its start time.
func companionPid(n *demo.Node) (int, string, error) {
	b, err := os.ReadFile(filepath.Join(n.RunDir, n.WGIface+".pid"))
	if err != nil {
		return 0, "", fmt.Errorf("companion pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, "", fmt.Errorf("companion pid file: %w", err)
	}
	start, err := procStart(pid)
	if err != nil {
		return pid, "", fmt.Errorf("companion pid %d does not run: %w", pid, err)
	}
	return pid, start, nil
}

// procStart is the start time field of /proc/<pid>/stat; an error when the
// process is gone or a zombie.
func procStart(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return "", fmt.Errorf("pid %d is a zombie", pid)
	}
	return f[19], nil
}

func uapiSocket(n *demo.Node) string {
	return filepath.Join("/var/run/wireguard", n.WGIface+".sock")
}

// getList runs `netloom get -o json <kind>` on node n and returns the items.
func (x *tc) getList(n *demo.Node, kind string) ([]map[string]any, error) {
	r := x.cli(n, nil, "get", "-o", "json", kind)
	if r.err != nil {
		return nil, fmt.Errorf("netloom get %s on %s: %v", kind, n.Name, r)
	}
	var l struct {
		Kind  string           `json:"kind"`
		Items []map[string]any `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
		return nil, fmt.Errorf("netloom get %s on %s: decode: %v: %s", kind, n.Name, err, r.stdout)
	}
	if l.Kind != "List" {
		return nil, fmt.Errorf("netloom get %s on %s: kind %q, want List", kind, n.Name, l.Kind)
	}
	return l.Items, nil
}

// find returns the item with the given namespace ("" for none) and name.
func find(items []map[string]any, namespace, name string) map[string]any {
	for _, it := range items {
		md, _ := it["metadata"].(map[string]any)
		ns, _ := md["namespace"].(string)
		n, _ := md["name"].(string)
		if n == name && ns == namespace {
			return it
		}
	}
	return nil
}

func labelsOf(obj map[string]any) map[string]string {
	md, _ := obj["metadata"].(map[string]any)
	raw, _ := md["labels"].(map[string]any)
	out := map[string]string{}
	for k, v := range raw {
		out[k] = fmt.Sprint(v)
	}
	return out
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// fileHas reports whether the file holds s.
func fileHas(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(b), s)
}

// linesWith returns the lines of a file that hold s.
func linesWith(path, s string) []string {
	b, _ := os.ReadFile(path)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// tlog sends the demo package's log to the test log.
type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
