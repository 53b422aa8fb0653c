package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netloom/netloom/node/demo"
)

// refusedLine is what an agent logs when gossip arrives under another
// cluster's token (mesh/membership.go, logAdapter).
const refusedLine = "gossip refused: the peer does not use this cluster's token"

// joinFailLine is what a joiner logs when no member lets it in.
const joinFailLine = "cannot join the cluster yet"

// TestWrongTokenRefused: an agent started with another cluster's token never
// becomes a member; node1 says why, the joiner says it cannot join.
func TestWrongTokenRefused(t *testing.T) {
	needRoot(t)
	t.Parallel()
	x := newCluster(t, demo.Options{Nodes: 2, PodsPerNode: -1, ExtraAgentArgs: fastTimers})
	n1, n2 := x.node(1), x.node(2)

	// Another cluster's token, from `netloom init` in a directory of its own.
	other := filepath.Join(x.c.Opts.StateDir, "other-cluster")
	out := x.must(n2.NS, exe, "init", "--data-dir", other)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	wrong := strings.TrimSpace(lines[len(lines)-1])
	good, err := x.c.Init(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(wrong, "nl1.") || wrong == good {
		t.Fatalf("netloom init printed %q as its last line, want a fresh token", wrong)
	}
	// The last --token on the command line wins.
	n2.ExtraArgs = []string{"--token", wrong}
	if err := x.c.StartAgents(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := x.c.WaitSocket(context.Background(), n2, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(n2.DataDir, "cluster.secret")); err != nil || strings.TrimSpace(string(b)) != wrong {
		t.Fatalf("node2 was not started with the wrong token (its cluster.secret: %q, %v)", b, err)
	}

	// notMembers fails the test as soon as either node lists the other as
	// alive (or at all).
	notMembers := func() {
		t.Helper()
		for _, p := range [][2]*demo.Node{{n1, n2}, {n2, n1}} {
			st, err := x.c.Status(context.Background(), p[0])
			if err != nil {
				t.Fatal(err)
			}
			if m, ok := member(st, p[1].Name); ok {
				t.Fatalf("%s lists %s (state %s) although it has another cluster's token", p[0].Name, p[1].Name, m.State)
			}
		}
	}
	eventually(t, 30*time.Second, "node1 logs the refusal and node2 logs that it cannot join", func() error {
		notMembers()
		var missing []string
		if !fileHas(n1.LogPath, refusedLine) {
			missing = append(missing, fmt.Sprintf("node1's log has no %q", refusedLine))
		}
		if !fileHas(n2.LogPath, joinFailLine) {
			missing = append(missing, fmt.Sprintf("node2's log has no %q", joinFailLine))
		}
		if len(missing) > 0 {
			return fmt.Errorf("%s", strings.Join(missing, "; "))
		}
		return nil
	})
	// Keep watching through a few more join attempts.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		notMembers()
		time.Sleep(200 * time.Millisecond)
	}
	for _, l := range linesWith(n1.LogPath, refusedLine) {
		t.Logf("node1: %s", l)
	}
	join := linesWith(n2.LogPath, joinFailLine)
	for _, l := range join {
		t.Logf("node2: %s", l)
	}
	if l := join[0]; !strings.Contains(l, "token") || !strings.Contains(l, n1.Addr.String()) {
		t.Errorf("node2's join failure does not name the address it tried and the token as a likely cause: %s", l)
	}
	if peers, err := x.wgPeers(n1); err != nil {
		t.Error(err)
	} else if len(peers) != 0 {
		t.Errorf("node1 has WireGuard peers %v, want none", peers)
	}
}
