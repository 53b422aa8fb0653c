package arp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// segment is an L2 segment in network namespaces the test creates: a
// bridge in a "switch" namespace and one namespace per host, each with eth0
// on the bridge. Nothing is made in the test's own namespace.
type segment struct {
	t      *testing.T
	prefix string
	sw     string
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newSegment(t *testing.T) *segment {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	for _, tool := range []string{"ip", "arping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	b := make([]byte, 3)
	rand.Read(b)
	s := &segment{t: t, prefix: "nlt-" + hex.EncodeToString(b)}
	s.sw = s.addNS("sw")
	run(t, "ip", "-n", s.sw, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", s.sw, "link", "set", "br0", "up")
	return s
}

func (s *segment) addNS(name string) string {
	ns := s.prefix + "-" + name
	run(s.t, "ip", "netns", "add", ns)
	s.t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	return ns
}

// host adds a host namespace with eth0 (addr) on the bridge and returns
// the namespace and eth0's MAC.
func (s *segment) host(name string, addr string) (string, string) {
	ns := s.addNS(name)
	port := "p-" + name
	run(s.t, "ip", "-n", s.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
	run(s.t, "ip", "-n", s.sw, "link", "set", port, "master", "br0", "up")
	run(s.t, "ip", "-n", ns, "addr", "add", addr, "dev", "eth0")
	run(s.t, "ip", "-n", ns, "link", "set", "eth0", "up")
	run(s.t, "ip", "-n", ns, "link", "set", "lo", "up")
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(run(s.t, "ip", "-n", ns, "-j", "link", "show", "dev", "eth0")), &links); err != nil || len(links) != 1 {
		s.t.Fatalf("mac of eth0 in %s: %v", ns, err)
	}
	return ns, links[0].Address
}

// start runs an announcer for eth0 inside ns: the goroutine's thread enters
// ns before Run opens its socket, and is never given back to the runtime
// (it ends with the goroutine), so no other goroutine runs in ns.
//
// The burst is shortened to keep the test fast; the schedule itself is
// TestSchedulerBurst's.
func start(t *testing.T, ns string) *Announcer {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("ns", ns)
	a := NewAnnouncer("eth0", log)
	a.sched.burst = []time.Duration{0, 100 * time.Millisecond, 300 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread exits with the goroutine
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		errc <- a.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run in %s: %v", ns, err)
		}
	})
	select {
	case <-a.Ready():
	case err := <-errc:
		t.Fatalf("Run in %s: %v", ns, err)
	case <-time.After(5 * time.Second):
		t.Fatalf("announcer in %s not ready", ns)
	}
	return a
}

var macRE = regexp.MustCompile(`reply from [0-9.]+ \[([0-9A-Fa-f:]{17})\]`)

// arping asks for target from ns with broadcast requests (-b, so that every
// host sees every request) and returns the distinct MACs that answered.
func arping(t *testing.T, ns string, target netip.Addr) []string {
	t.Helper()
	out, _ := exec.Command("ip", "netns", "exec", ns, "arping", "-b", "-c", "2", "-w", "2", "-I", "eth0", target.String()).CombinedOutput()
	var macs []string
	for _, m := range macRE.FindAllStringSubmatch(string(out), -1) {
		mac := strings.ToLower(m[1])
		if !slices.Contains(macs, mac) {
			macs = append(macs, mac)
		}
	}
	slices.Sort(macs)
	return macs
}

// neigh returns the lladdr and state of ns's neighbour entry for addr ("",
// "" when there is none).
func neigh(t *testing.T, ns string, addr netip.Addr) (string, string) {
	var es []struct {
		LLAddr string   `json:"lladdr"`
		State  []string `json:"state"`
	}
	out := run(t, "ip", "-n", ns, "-j", "neigh", "show", addr.String(), "dev", "eth0")
	if err := json.Unmarshal([]byte(out), &es); err != nil {
		t.Fatalf("ip neigh: %v: %s", err, out)
	}
	if len(es) == 0 {
		return "", ""
	}
	return es[0].LLAddr, strings.Join(es[0].State, ",")
}

// waitNeigh waits (bounded) until ns's entry for addr has mac.
func waitNeigh(t *testing.T, ns string, addr netip.Addr, mac string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		got, state := neigh(t, ns, addr)
		if got == mac {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: neighbour %s is %q (%s), want %s", ns, addr, got, state, mac)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAnnouncerNetns(t *testing.T) {
	seg := newSegment(t)
	nsA, macA := seg.host("a", "10.250.0.1/24")
	nsC, macC := seg.host("c", "10.250.0.3/24")
	client, _ := seg.host("cl", "10.250.0.2/24")
	x, y, z := netip.MustParseAddr("10.250.0.100"), netip.MustParseAddr("10.250.0.101"), netip.MustParseAddr("10.250.0.102")

	a, c := start(t, nsA), start(t, nsC)
	a.SetOwned([]netip.Addr{x})
	c.SetOwned([]netip.Addr{y})

	t.Run("only the owner answers", func(t *testing.T) {
		type res struct {
			vip  netip.Addr
			macs []string
		}
		ch := make(chan res, 3)
		for _, v := range []netip.Addr{x, y, z} {
			go func() { ch <- res{v, arping(t, client, v)} }()
		}
		want := map[netip.Addr][]string{x: {macA}, y: {macC}, z: nil}
		for range 3 {
			r := <-ch
			if !slices.Equal(r.macs, want[r.vip]) {
				t.Errorf("arping %s: answered by %v, want %v", r.vip, r.macs, want[r.vip])
			}
		}
		if st := a.Stats(); st.Replies == 0 || st.Gratuitous == 0 {
			t.Errorf("stats of a: %+v", st)
		}
	})

	// A hands X over to C. The client's entry for X (in the given state,
	// pointing elsewhere) follows C's gratuitous ARP without a flush.
	for _, state := range []string{"stale", "reachable", "delay"} {
		t.Run("handover updates a "+state+" entry", func(t *testing.T) {
			from, to, mac := a, c, macC
			if slices.Contains(c.Owned(), x) {
				from, to, mac = c, a, macA
			}
			run(t, "ip", "-n", client, "neigh", "replace", x.String(), "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", state)
			from.SetOwned(slices.DeleteFunc(from.Owned(), func(v netip.Addr) bool { return v == x }))
			to.SetOwned(append(to.Owned(), x))
			waitNeigh(t, client, x, mac)
			if got := arping(t, client, x); !slices.Equal(got, []string{mac}) {
				t.Errorf("after handover arping %s answered by %v, want %v", x, got, []string{mac})
			}
		})
	}

	// waitIdle waits (bounded) until an announcer has no announcement
	// planned.
	waitIdle := func(an *Announcer) {
		deadline := time.Now().Add(3 * time.Second)
		for {
			an.mu.Lock()
			_, busy := an.sched.next()
			an.mu.Unlock()
			if !busy {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("announcer still busy")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	owner := func(v netip.Addr) (*Announcer, string) {
		switch {
		case slices.Contains(a.Owned(), v):
			return a, macA
		case slices.Contains(c.Owned(), v):
			return c, macC
		}
		t.Fatalf("nobody owns %s", v)
		return nil, ""
	}

	t.Run("reannounce", func(t *testing.T) {
		an, mac := owner(x)
		waitIdle(an) // so that only Reannounce can fix the entry
		run(t, "ip", "-n", client, "neigh", "replace", x.String(), "lladdr", "02:00:00:00:00:98", "dev", "eth0", "nud", "stale")
		time.Sleep(300 * time.Millisecond)
		if got, _ := neigh(t, client, x); got != "02:00:00:00:00:98" {
			t.Fatalf("entry changed without an announcement: %s", got)
		}
		an.Reannounce()
		waitNeigh(t, client, x, mac)
	})

	t.Run("periodic", func(t *testing.T) {
		an, mac := owner(y)
		waitIdle(an)
		before := an.Stats().Gratuitous
		an.SetGARPInterval(200 * time.Millisecond)
		defer an.SetGARPInterval(0)
		run(t, "ip", "-n", client, "neigh", "replace", y.String(), "lladdr", "02:00:00:00:00:97", "dev", "eth0", "nud", "stale")
		waitNeigh(t, client, y, mac)
		if an.Stats().Gratuitous == before {
			t.Errorf("no periodic announcement counted")
		}
	})

	t.Run("release", func(t *testing.T) {
		a.SetOwned(nil)
		c.SetOwned(nil)
		if got := arping(t, client, x); got != nil {
			t.Errorf("released %s still answered by %v", x, got)
		}
	})

	if t.Failed() {
		t.Log(run(t, "ip", "-n", client, "neigh"))
	}
}

func TestRunBadInterface(t *testing.T) {
	a := NewAnnouncer("nlt-no-such-if", nil)
	err := a.Run(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "arp announcer: interface nlt-no-such-if: ") {
		t.Errorf("Run = %v", err)
	}
}
