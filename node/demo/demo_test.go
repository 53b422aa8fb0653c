package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
}

func testPrefix(t *testing.T) string {
	b := make([]byte, 2)
	rand.Read(b)
	return "nlt-" + hex.EncodeToString(b)
}

// testBuild builds a cluster whose Down runs at cleanup, also on failure.
func testBuild(t *testing.T, opts Options) *Cluster {
	t.Helper()
	if opts.Prefix == "" {
		opts.Prefix = testPrefix(t)
	}
	if opts.StateDir == "" {
		opts.StateDir = t.TempDir()
	}
	c, err := Build(context.Background(), opts)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Down(); err != nil {
			t.Errorf("cleanup Down: %v", err)
		}
	})
	return c
}

func allNamespaces(c *Cluster) []string {
	ns := []string{c.Switch}
	for _, n := range c.Nodes {
		ns = append(ns, n.NS)
		for _, p := range n.Pods {
			ns = append(ns, p.NS)
		}
	}
	return ns
}

// rootLinks lists the links of the root namespace (read only), to show the
// package leaves it alone.
func rootLinks(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, strings.TrimSuffix(f[1], ":"))
		}
	}
	return names
}

func TestBuildDown(t *testing.T) {
	needRoot(t)
	before := rootLinks(t)
	c := testBuild(t, Options{Nodes: 3})

	for _, ns := range allNamespaces(c) {
		if !netnsExists(ns) {
			t.Errorf("namespace %s missing after Build", ns)
		}
	}
	if got, want := c.Nodes[2].Addr, netip.MustParseAddr("10.77.0.13"); got != want {
		t.Errorf("node3 address %s, want %s", got, want)
	}
	out, err := Exec(c.Nodes[0].NS, "ip", "-o", "addr", "show", "dev", "eth0")
	if err != nil || !strings.Contains(out, "10.77.0.11/24") {
		t.Errorf("node1 eth0: %q, %v", out, err)
	}
	out, err = Exec(c.Nodes[0].NS, "ip", "route", "show", "default")
	if err != nil || !strings.Contains(out, "via 10.77.0.1 dev eth0") {
		t.Errorf("node1 default route: %q, %v", out, err)
	}
	out, err = Exec(c.Switch, "cat", "/proc/sys/net/ipv4/ip_forward")
	if err != nil || strings.TrimSpace(out) != "0" {
		t.Errorf("switch ip_forward: %q, %v", out, err)
	}
	if err := Ping(c.Nodes[0].NS, c.Nodes[2].Addr); err != nil {
		t.Errorf("node1 -> node3 over the switch: %v", err)
	}
	if err := Ping(c.Nodes[2].NS, c.SwitchAddr); err != nil {
		t.Errorf("node3 -> bridge: %v", err)
	}

	// a process the cluster owns, started in a node namespace
	sleep, err := c.StartProcess("sleeper", c.Nodes[1].NS, "sleep", "1000")
	if err != nil {
		t.Fatal(err)
	}
	// ip netns exec switches namespace, then execs sleep under the same pid
	for deadline := time.Now().Add(5 * time.Second); !inNetns(sleep.Pid, c.Nodes[1].NS) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !sleep.Running() || !inNetns(sleep.Pid, c.Nodes[1].NS) {
		t.Fatalf("sleeper pid %d not running in %s", sleep.Pid, c.Nodes[1].NS)
	}
	if _, err := c.StartProcess("stray", "nlt-not-ours", "true"); err == nil {
		t.Error("StartProcess in a namespace the cluster does not own succeeded")
	}

	// state file round trip
	loaded, err := Load(c.Opts.StateDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	opt := cmp.Options{
		cmpopts.IgnoreUnexported(Cluster{}, Process{}),
		cmpopts.IgnoreFields(Options{}, "Log", "Stdout", "Token"),
		cmpopts.IgnoreFields(Process{}, "Cmd"),
		cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}),
	}
	if diff := cmp.Diff(c, loaded, opt); diff != "" {
		t.Errorf("Load differs from the built cluster (-built +loaded):\n%s", diff)
	}

	// Down from the state dir, as `netloom demo --down` in another process
	if err := Down(c.Opts.StateDir); err != nil {
		t.Fatalf("Down: %v", err)
	}
	if !sleep.wait(5 * time.Second) {
		t.Errorf("sleeper pid %d still runs after Down", sleep.Pid)
	}
	for _, ns := range allNamespaces(c) {
		if netnsExists(ns) {
			t.Errorf("namespace %s still exists after Down", ns)
		}
	}
	if _, err := os.Stat(filepath.Join(c.Opts.StateDir, StateFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("state file after Down: %v", err)
	}
	if err := Down(c.Opts.StateDir); err != nil {
		t.Errorf("second Down: %v", err)
	}
	for _, l := range rootLinks(t) {
		if !slices.Contains(before, l) && (strings.Contains(l, "node") || l == Bridge || l == "eth0") {
			t.Errorf("root namespace gained link %s", l)
		}
	}
	if err := c.Down(); err != nil {
		t.Errorf("Cluster.Down after Down: %v", err)
	}
}

func TestBuildLeavesForeignNamespaceAlone(t *testing.T) {
	needRoot(t)
	prefix := testPrefix(t)
	foreign := prefix + "-node2"
	if err := exec.Command("ip", "netns", "add", foreign).Run(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", foreign).Run() })
	dir := t.TempDir()

	_, err := Build(context.Background(), Options{Prefix: prefix, Nodes: 3, StateDir: dir})
	if err == nil || !strings.Contains(err.Error(), foreign) {
		t.Fatalf("Build over an existing namespace: %v", err)
	}
	if !netnsExists(foreign) {
		t.Errorf("Build removed namespace %s it did not create", foreign)
	}
	for _, ns := range []string{prefix + "-sw", prefix + "-node1"} {
		if netnsExists(ns) {
			t.Errorf("failed Build left namespace %s", ns)
			exec.Command("ip", "netns", "delete", ns).Run()
		}
	}
	if _, err := os.Stat(filepath.Join(dir, StateFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failed Build left its state file: %v", err)
	}
}

func TestBuildRefusesSecondCluster(t *testing.T) {
	needRoot(t)
	c := testBuild(t, Options{Nodes: 1})
	_, err := Build(context.Background(), Options{Prefix: testPrefix(t), Nodes: 1, StateDir: c.Opts.StateDir})
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second Build into the same state dir: %v", err)
	}
	if !netnsExists(c.Switch) {
		t.Error("second Build removed the first cluster's switch")
	}
}

func readArgs(t *testing.T, n *Node) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.RunDir, "agent.args"))
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	if err := json.Unmarshal(b, &args); err != nil {
		t.Fatal(err)
	}
	return args
}

func flagValue(args []string, name string) string {
	i := slices.Index(args, name)
	if i < 0 || i+1 >= len(args) {
		return ""
	}
	return args[i+1]
}

func companionPid(t *testing.T, n *Node) *Process {
	t.Helper()
	ps := (&Cluster{}).companions(n)
	if len(ps) != 1 {
		t.Fatalf("node %s: %d companions, want 1", n.Name, len(ps))
	}
	return ps[0]
}

// TestAgentsWithFake drives agents, status, CNI and Down against the test
// binary acting as a fake netloom.
func TestAgentsWithFake(t *testing.T) {
	needRoot(t)
	t.Setenv(fakeEnv, "1")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := testBuild(t, Options{Nodes: 3, PodsPerNode: 2, Exe: exe, DisplayExe: "netloom", Stdout: testWriter{t},
		NodeSysctls: map[string]string{"net.ipv4.ip_forward": "1"}})

	if err := c.StartAgents(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if out, err := Exec(n.NS, "cat", "/proc/sys/net/ipv4/ip_forward"); err != nil || strings.TrimSpace(out) != "1" {
			t.Errorf("%s ip_forward: %q, %v", n.Name, out, err)
		}
	}
	if c.Token != "FAKETOKEN-123" {
		t.Errorf("token %q, want the last line of init", c.Token)
	}
	for i, n := range c.Nodes {
		args := readArgs(t, n)
		if args[0] != "agent" || flagValue(args, "--name") != n.Name || flagValue(args, "--token") != "FAKETOKEN-123" ||
			flagValue(args, "--wg-iface") != n.WGIface || flagValue(args, "--advertise-addr") != n.Addr.String() {
			t.Errorf("agent %s args: %q", n.Name, args)
		}
		join := flagValue(args, "--join")
		if i == 0 && join != "" {
			t.Errorf("node1 joins %q, want nothing", join)
		}
		if i > 0 && !strings.Contains(join, "10.77.0.11:7946") {
			t.Errorf("%s joins %q, want node1", n.Name, join)
		}
		if want := netip.MustParsePrefix(fakeSubnet(n.Name)); n.Subnet != want {
			t.Errorf("%s subnet %s, want %s", n.Name, n.Subnet, want)
		}
	}

	if err := c.AddPods(ctx); err != nil {
		t.Fatal(err)
	}
	pods := c.Pods()
	if len(pods) != 6 {
		t.Fatalf("%d pods, want 6", len(pods))
	}
	for _, p := range pods {
		if !p.IP.IsValid() || !netnsExists(p.NS) {
			t.Errorf("pod %+v: no IP or namespace", p)
		}
	}
	if got, want := c.Pod("node2-p1").IP, netip.MustParseAddr("10.244.2.2"); got != want {
		t.Errorf("node2-p1 IP %s, want %s", got, want)
	}
	if _, err := c.AddPod(ctx, c.Nodes[0], "node1-fail"); err == nil || !strings.Contains(err.Error(), "fake failure") {
		t.Errorf("AddPod of a failing pod: %v", err)
	}
	if netnsExists(c.Opts.Prefix+"-node1-fail") || c.Pod("node1-fail") != nil {
		t.Error("failed AddPod left its namespace or record")
	}
	del := c.Pod("node1-p2")
	if err := c.DelPod(ctx, del); err != nil {
		t.Fatal(err)
	}
	if netnsExists(del.NS) || c.Pod(del.Name) != nil {
		t.Error("DelPod left the pod")
	}
	if _, err := os.Stat(filepath.Join(c.Nodes[0].RunDir, "cni-DEL-"+del.ContainerID)); err != nil {
		t.Errorf("DelPod did not run CNI DEL: %v", err)
	}

	// kill -9 one agent: the companion survives, WaitReady fails fast
	n2 := c.Nodes[1]
	comp := companionPid(t, n2)
	if err := c.StopAgent(n2, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if n2.Agent.Running() || !comp.Running() {
		t.Fatalf("after SIGKILL: agent running %v, companion running %v", n2.Agent.Running(), comp.Running())
	}
	err = c.WaitReady(ctx, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "agent node2") {
		t.Errorf("WaitReady with a dead agent: %v", err)
	}
	if err := c.StartAgent(n2); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if join := flagValue(readArgs(t, n2), "--join"); join != "10.77.0.11:7946,10.77.0.13:7946" {
		t.Errorf("restarted node2 joins %q", join)
	}
	if got := companionPid(t, n2); got.Pid != comp.Pid {
		t.Errorf("restart started a new companion %d, want %d adopted", got.Pid, comp.Pid)
	}
	if err := c.Restart(c.Nodes[0]); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}

	// a node leaves: the agent exits 0; the cluster is no longer ready
	n3 := c.Nodes[2]
	if err := c.Leave(ctx, n3); err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := c.Describe(&sb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ip netns exec " + c.Nodes[0].NS + " netloom status --socket " + c.Nodes[0].Socket,
		"netloom demo --down --state-dir " + c.Opts.StateDir,
		"default/node2-p1", "10.244.2.2",
	} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("Describe lacks %q:\n%s", want, sb.String())
		}
	}
	t.Log("\n" + sb.String())

	var comps []*Process
	for _, n := range c.Nodes {
		comps = append(comps, companionPid(t, n))
	}
	nss := allNamespaces(c)
	agents := []*Process{c.Nodes[0].Agent, c.Nodes[1].Agent}

	// as `netloom demo --down` from another process: pids from the state file
	if err := Down(c.Opts.StateDir); err != nil {
		t.Fatalf("Down: %v", err)
	}
	for _, p := range append(comps, agents...) {
		if p.Running() {
			t.Errorf("%s (pid %d) still runs after Down", p.Name, p.Pid)
		}
	}
	for _, ns := range nss {
		if netnsExists(ns) {
			t.Errorf("namespace %s still exists after Down", ns)
		}
	}
	// Down ran CNI DEL for pods whose agent still ran (not node3's)
	if _, err := os.Stat(filepath.Join(c.Nodes[1].RunDir, "cni-DEL-"+c.Pod("node2-p1").ContainerID)); err != nil {
		t.Errorf("Down did not run CNI DEL for node2-p1: %v", err)
	}
	if _, err := os.Stat(filepath.Join(n3.RunDir, "cni-DEL-"+c.Pod("node3-p1").ContainerID)); err == nil {
		t.Error("Down ran CNI DEL against a node whose agent had left")
	}
	if err := c.Down(); err != nil {
		t.Errorf("Cluster.Down after Down: %v", err)
	}
}

// testWriter sends progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}
