package integration

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/netloom/netloom/node/demo"
)

// TestCNIAgentNotRunning: CNI ADD against a node whose agent does not run
// (never started, or killed and its socket left behind) fails with a CNI
// error that names the socket, and leaves no veth behind.
func TestCNIAgentNotRunning(t *testing.T) {
	needRoot(t)
	t.Parallel()
	x := newCluster(t, demo.Options{Nodes: 1, PodsPerNode: -1})
	n := x.node(1)
	podNS := x.c.Opts.Prefix + "-cnipod"
	if out, err := exec.Command("ip", "netns", "add", podNS).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", podNS, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", podNS).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", podNS, err, out)
		}
	})

	add := func(t *testing.T) {
		t.Helper()
		env := []string{
			"CNI_COMMAND=ADD",
			"CNI_CONTAINERID=" + podNS,
			"CNI_NETNS=" + filepath.Join(demo.NetnsDir, podNS),
			"CNI_IFNAME=eth0",
			"CNI_PATH=" + filepath.Dir(exe),
			"CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=cnipod",
		}
		r := inNS(n.NS, env, x.c.NetConf(n), exe)
		t.Logf("CNI ADD: exit %d, stdout %s, stderr %q", r.exitCode(), strings.TrimSpace(r.stdout), r.stderr)
		if r.exitCode() <= 0 {
			t.Errorf("CNI ADD exited %d, want non-zero", r.exitCode())
		}
		var e struct {
			Code    int    `json:"code"`
			Msg     string `json:"msg"`
			Details string `json:"details"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &e); err != nil {
			t.Fatalf("CNI ADD printed no error JSON on stdout: %v: %q", err, r.stdout)
		}
		if e.Code != 11 {
			t.Errorf("CNI error code %d, want 11 (try again later)", e.Code)
		}
		if !strings.Contains(e.Msg+" "+e.Details, n.Socket) {
			t.Errorf("CNI error does not name the socket %s: %q", n.Socket, e.Msg)
		}
		if strings.Contains(e.Msg, "\n") {
			t.Errorf("CNI error message has several lines: %q", e.Msg)
		}
		nodeLinks, err := links(n.NS)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range nodeLinks {
			if l != "lo" && l != "eth0" && l != "netloom-br0" && l != n.WGIface {
				t.Errorf("link %s left in the node namespace after the failed ADD (links: %v)", l, nodeLinks)
			}
		}
		podLinks, err := links(podNS)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(podLinks, []string{"lo"}) {
			t.Errorf("pod namespace has links %v after the failed ADD, want only lo", podLinks)
		}
	}

	t.Run("NeverStarted", add)
	t.Run("KilledStaleSocket", func(t *testing.T) {
		if err := x.c.StartAgents(context.Background()); err != nil {
			t.Fatal(err)
		}
		x.with(t).waitReady()
		if err := x.c.StopAgent(n, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		add(t)
	})
}
