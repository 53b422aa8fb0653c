package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/mesh/store"
	"github.com/netloom/netloom/node"
	"github.com/netloom/netloom/node/demo"
)

// crashRounds is how many times TestCrashSafety kills the agent; set
// NETLOOM_CRASH_ROUNDS for a longer loop and NETLOOM_CRASH_SEED to replay
// one (the seed is logged).
const crashRounds = 10

// TestCrashSafety kills node1's agent with SIGKILL at random moments while
// it writes everything it keeps on disk: objects applied through its API
// (store.json, written before apply answers), pods attached and detached
// through the CNI plugin (pods.json, written before ADD and DEL answer) and
// the member list (peers.json). After each kill, before anything restarts,
// the data directory must load with the product's own readers and hold
// every write the agent acknowledged; then the agent must start again on
// it, join and be ready, leaving no temporary file behind.
func TestCrashSafety(t *testing.T) {
	needRoot(t)
	t.Parallel()
	rounds := envInt(t, "NETLOOM_CRASH_ROUNDS", crashRounds)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("NETLOOM_CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("NETLOOM_CRASH_SEED=%q is not a number", s)
		}
		seed = v
	}
	t.Logf("seed %d (replay: NETLOOM_CRASH_SEED=%d go test -run TestCrashSafety ./integration/)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))

	x := newCluster(t, demo.Options{Nodes: 2, PodsPerNode: -1, ExtraAgentArgs: fastTimers})
	x.start()
	n1 := x.node(1)
	acked := newAckLog()
	for r := 1; r <= rounds; r++ {
		delay := time.Duration(20+rng.IntN(1500)) * time.Millisecond
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); x.applyUntilError(n1, r, acked, stop) }()
		go func() { defer wg.Done(); x.podsUntilError(n1, r, acked, stop) }()
		time.Sleep(delay)
		if err := x.c.StopAgent(n1, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		close(stop)
		wg.Wait()
		t.Logf("round %d: SIGKILL after %s; acknowledged so far: %d objects, %d pods attached, %d detached",
			r, delay, len(acked.objects), len(acked.attached), len(acked.detached))
		if err := checkDataDir(n1.DataDir, n1.Name, acked); err != nil {
			t.Fatalf("round %d (seed %d): the data directory after SIGKILL: %v", r, seed, err)
		}
		logStart := fileSize(n1.LogPath)
		if err := x.c.StartAgent(n1); err != nil {
			t.Fatal(err)
		}
		x.waitReady()
		if out := logSince(n1.LogPath, logStart); strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
			t.Fatalf("round %d (seed %d): the restarted agent's log shows a panic:\n%s", r, seed, out)
		}
		if left := tempFiles(n1.DataDir); len(left) > 0 {
			t.Errorf("round %d: temporary files left in %s after a start: %v", r, n1.DataDir, left)
		}
	}
	t.Run("DamagedFiles", func(t *testing.T) { x.with(t).damagedFiles(n1) })
	// What the agent acknowledged is also what it serves after the last
	// restart.
	items, err := x.getList(n1, "namespaces")
	if err != nil {
		t.Fatal(err)
	}
	for name := range acked.objects {
		if find(items, "", name) == nil {
			t.Errorf("namespace %s was applied (acknowledged) but is missing after the restarts", name)
		}
	}
}

// damagedFiles damages each file of n's data dir in turn (cut in half, or
// replaced by garbage) and starts the agent on it. For the files the node
// cannot rebuild on its own the agent must refuse to start, with one line
// that names the file and the fix, leaving the file as it was; a damaged
// peer list (only a hint for joining) is reported and written again.
func (x *tc) damagedFiles(n *demo.Node) {
	t := x.t
	cases := []struct {
		file    string
		refuse  bool
		noToken bool // start without --token, so that the secret file is read
	}{
		{file: store.FileName, refuse: true},
		{file: node.PodsFile, refuse: true},
		{file: node.KeyFile, refuse: true},
		{file: node.SecretFile, refuse: true, noToken: true},
		{file: node.PeersFile},
	}
	path := func(f string) string { return filepath.Join(n.DataDir, f) }
	eventually(t, 20*time.Second, "the agent writes its peer list", func() error {
		_, err := os.Stat(path(node.PeersFile))
		return err
	})
	for _, c := range cases {
		for _, damage := range []string{"cut", "garbage"} {
			if err := x.c.StopAgent(n, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			orig, err := os.ReadFile(path(c.file))
			if err != nil {
				t.Fatal(err)
			}
			bad := orig[:len(orig)/2]
			if damage == "garbage" {
				bad = []byte("\x00\x01{ not what netloom wrote \xff\n")
			}
			if err := os.WriteFile(path(c.file), bad, 0o600); err != nil {
				t.Fatal(err)
			}
			what := c.file + " " + damage
			if c.refuse {
				args := x.c.AgentArgs(n, nil)
				if c.noToken {
					i := slices.Index(args, "--token")
					args = slices.Delete(args, i, i+2)
				}
				r := inNS(n.NS, nil, nil, append([]string{exe}, args...)...)
				lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
				last := lines[len(lines)-1]
				switch {
				case r.exitCode() != 1:
					t.Errorf("%s: the agent should refuse to start (exit 1), got %v; stderr:\n%s", what, r.err, r.stderr)
				case !strings.HasPrefix(last, "netloom: ") || !strings.Contains(last, path(c.file)):
					t.Errorf("%s: the agent's last line should name %s, got %q", what, path(c.file), last)
				case strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine "):
					t.Errorf("%s: the agent panicked:\n%s", what, r.stderr)
				default:
					t.Logf("%s: %s", what, last)
				}
				if now, _ := os.ReadFile(path(c.file)); !bytes.Equal(now, bad) {
					t.Errorf("%s: the refused start changed the file", what)
				}
				if err := os.WriteFile(path(c.file), orig, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			logStart := fileSize(n.LogPath)
			if err := x.c.StartAgent(n); err != nil {
				t.Fatal(err)
			}
			x.waitReady()
			if c.refuse {
				continue
			}
			out := logSince(n.LogPath, logStart)
			if !strings.Contains(out, "peer list is corrupt") || !strings.Contains(out, path(c.file)) {
				t.Errorf("%s: the agent's log does not report the damaged file:\n%s", what, out)
			}
			eventually(t, 20*time.Second, what+": the agent writes the peer list again", func() error {
				b, err := os.ReadFile(path(c.file))
				if err != nil {
					return err
				}
				var peers []string
				return json.Unmarshal(b, &peers)
			})
		}
	}
}

// ackLog records the writes node1's agent acknowledged.
type ackLog struct {
	mu       sync.Mutex
	objects  map[string]bool       // Namespace objects applied
	attached map[string]netip.Addr // pod name -> address, still attached
	detached map[string]bool       // pods whose DEL returned success
}

func newAckLog() *ackLog {
	return &ackLog{objects: map[string]bool{}, attached: map[string]netip.Addr{}, detached: map[string]bool{}}
}

// applyUntilError applies one Namespace after another on n until stop is
// closed or an apply fails (the agent was killed), recording each success.
func (x *tc) applyUntilError(n *demo.Node, round int, acked *ackLog, stop <-chan struct{}) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		name := fmt.Sprintf("crash-r%d-%d", round, i)
		manifest := fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", name)
		if r := x.cli(n, []byte(manifest), "apply", "-f", "-"); r.err != nil {
			return
		}
		acked.mu.Lock()
		acked.objects[name] = true
		acked.mu.Unlock()
	}
}

// podsUntilError attaches pods on n and detaches every other one, until
// stop is closed or the CNI plugin fails (the agent was killed).
func (x *tc) podsUntilError(n *demo.Node, round int, acked *ackLog, stop <-chan struct{}) {
	ctx := context.Background()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		p, err := x.c.AddPod(ctx, n, fmt.Sprintf("k%d-%d", round, i))
		if err != nil {
			return
		}
		acked.mu.Lock()
		acked.attached[p.Name] = p.IP
		acked.mu.Unlock()
		if i%2 == 1 {
			continue
		}
		// From here until DEL answers, the pod's address may be recorded
		// or not: a DEL cut off by the kill may have released it.
		acked.mu.Lock()
		delete(acked.attached, p.Name)
		acked.mu.Unlock()
		if err := x.c.DelPod(ctx, p); err != nil {
			return
		}
		acked.mu.Lock()
		acked.detached[p.Name] = true
		acked.mu.Unlock()
	}
}

// checkDataDir loads a copy of the data directory of a killed agent with
// the readers the agent itself uses, and checks it holds what was
// acknowledged.
func checkDataDir(dataDir, nodeName string, acked *ackLog) error {
	cp, err := os.MkdirTemp("", "nlcrash")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cp)
	if out, err := exec.Command("cp", "-a", dataDir+"/.", cp).CombinedOutput(); err != nil {
		return fmt.Errorf("copy %s: %v: %s", dataDir, err, out)
	}
	st, err := store.Open(cp, nodeName, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	acked.mu.Lock()
	defer acked.mu.Unlock()
	for name := range acked.objects {
		if e, ok := st.Get(store.Key{Kind: "Namespace", Name: name}); !ok || e.Deleted {
			return fmt.Errorf("store.json lacks namespace %s, whose apply was acknowledged", name)
		}
	}
	al, err := ipam.OpenAllocator(filepath.Join(cp, node.PodsFile), netip.Prefix{})
	if err != nil {
		return err
	}
	owners := map[string]netip.Addr{}
	for _, a := range al.Allocations() {
		owners[a.Owner] = a.IP.Addr()
	}
	for name, ip := range acked.attached {
		if got, ok := owners[demo.PodNamespace+"/"+name]; !ok || got != ip {
			return fmt.Errorf("pods.json gives attached pod %s %v (recorded: %t), want %s", name, got, ok, ip)
		}
	}
	for name := range acked.detached {
		if got, ok := owners[demo.PodNamespace+"/"+name]; ok {
			return fmt.Errorf("pods.json still gives detached pod %s the address %s", name, got)
		}
	}
	if b, err := os.ReadFile(filepath.Join(cp, node.PeersFile)); err == nil {
		var peers []string
		if err := json.Unmarshal(b, &peers); err != nil {
			return fmt.Errorf("peers.json: %v", err)
		}
	}
	b, err := os.ReadFile(filepath.Join(cp, node.KeyFile))
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(b))) != 44 {
		return fmt.Errorf("wireguard.key holds %q, not a base64 key", b)
	}
	if b, err := os.ReadFile(filepath.Join(cp, node.SecretFile)); err != nil {
		return err
	} else if _, err := node.ParseToken(string(b)); err != nil {
		return fmt.Errorf("%s: %v", node.SecretFile, err)
	}
	return nil
}

// tempNameRe matches the temporary files of atomic writes: "." + the
// file's name + a random number.
var tempNameRe = regexp.MustCompile(`^\..+[0-9]+$`)

// tempFiles lists temporary files of atomic writes in dir.
func tempFiles(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if tempNameRe.MatchString(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logSince is what was appended to path after offset.
func logSince(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return ""
	}
	return string(b[offset:])
}

func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		t.Fatalf("%s=%q: want a positive number", name, s)
	}
	return v
}
