package wg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Root tests: every link lives in a network namespace the test creates.
// The UAPI socket directory is shared by all namespaces, so interface
// names carry a random part.

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, TUN)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun")
	}
	for _, tool := range []string{"ip", "ping", "wg"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newNetns creates a named network namespace, deleted in cleanup.
func newNetns(t *testing.T) string {
	t.Helper()
	name := "nlt-" + randHex(3)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// inNetns runs fn on a locked OS thread switched into the namespace. Only
// what fn creates synchronously (netlink sockets, the companion process)
// lands in the namespace.
func inNetns(t *testing.T, name string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get netns: %v", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(name)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("open netns %s: %v", name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("enter netns %s: %v", name, err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// stay locked: the runtime drops this thread when the goroutine ends
			t.Errorf("restore netns: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// cleanupCompanion kills a companion left behind and removes its files.
func cleanupCompanion(t *testing.T, runDir, iface string) {
	t.Cleanup(func() {
		if c := companionFromPIDFile(runDir, iface); c != nil {
			_ = syscall.Kill(c.pid, syscall.SIGKILL)
			c.waitExit(2 * time.Second)
		}
		if !uapiAnswers(iface, 100*time.Millisecond) {
			_ = os.Remove(uapiPath(iface))
		}
	})
}

type node struct {
	ns, iface string
	key       wgtypes.Key
	cfg       Config
	dev       *Device
}

func (n *node) open(t *testing.T) {
	t.Helper()
	var err error
	inNetns(t, n.ns, func() {
		n.dev, err = Open(context.Background(), n.cfg, testLogger(t).With("node", n.ns))
	})
	if err != nil {
		t.Fatalf("Open %s: %v\ncompanion log:\n%s", n.iface, err, readFile(logFile(n.cfg.RunDir, n.iface)))
	}
	dev := n.dev
	t.Cleanup(func() { dev.Close() })
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func newNode(t *testing.T, ns, suffix, mode, runDir string) *node {
	t.Helper()
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	iface := "nlt" + randHex(3) + suffix
	cleanupCompanion(t, runDir, iface)
	return &node{ns: ns, iface: iface, key: key, cfg: Config{
		Iface: iface, Mode: mode, Port: 51820, PrivateKey: key, MTU: 1420, Exe: exe, RunDir: runDir,
	}}
}

func pingOK(t *testing.T, ns, dst string) bool {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("ip", "netns", "exec", ns, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", dst).CombinedOutput()
		if err == nil {
			return true
		}
		if time.Now().After(deadline) {
			t.Logf("ping %s from %s: %v\n%s", dst, ns, err, out)
			return false
		}
	}
}

func TestUserspacePair(t *testing.T) {
	requireRoot(t)
	runDir := t.TempDir()
	nsA, nsB := newNetns(t), newNetns(t)
	run(t, "ip", "-n", nsA, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", nsB)
	for _, c := range []struct{ ns, addr, lo string }{{nsA, "10.99.0.1/24", "10.98.1.1/32"}, {nsB, "10.99.0.2/24", "10.98.2.1/32"}} {
		run(t, "ip", "-n", c.ns, "addr", "add", c.addr, "dev", "veth0")
		run(t, "ip", "-n", c.ns, "link", "set", "veth0", "up")
		run(t, "ip", "-n", c.ns, "addr", "add", c.lo, "dev", "lo")
	}

	// A in auto mode: falls back to userspace without the kernel module.
	a := newNode(t, nsA, "a", ModeAuto, runDir)
	b := newNode(t, nsB, "b", ModeUserspace, runDir)
	b.cfg.Procs = 3 // A keeps the default, CompanionProcs
	a.open(t)
	b.open(t)
	t.Logf("A mode %s, B mode %s", a.dev.Mode(), b.dev.Mode())
	if b.dev.Mode() != ModeUserspace {
		t.Fatalf("B mode = %s, want userspace", b.dev.Mode())
	}
	if a.dev.Mode() != ModeUserspace {
		t.Skipf("kernel WireGuard available here (auto chose %s); this test covers userspace", a.dev.Mode())
	}

	// Offloads of the embedded wireguard-go.
	inNetns(t, nsA, func() {
		tso, err := linkTSO(a.iface)
		if err != nil || !tso {
			t.Errorf("TSO on %s = %v, %v; want on", a.iface, tso, err)
		}
	})
	if log := readFile(logFile(runDir, a.iface)); !strings.Contains(log, "vnet_hdr=true") {
		t.Errorf("companion log does not report vnet_hdr=true:\n%s", log)
	}
	// The companion runs on as many threads as it was told.
	for _, c := range []struct {
		n     *node
		procs int
	}{{a, CompanionProcs(runtime.GOMAXPROCS(0))}, {b, 3}} {
		if log, want := readFile(logFile(runDir, c.n.iface)), fmt.Sprintf(" procs=%d ", c.procs); !strings.Contains(log, want) {
			t.Errorf("companion log of %s does not report%s:\n%s", c.n.iface, want, log)
		}
	}

	peersA := []Peer{{Name: "b", PublicKey: b.key.PublicKey(), Endpoint: netip.MustParseAddrPort("10.99.0.2:51820"),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.98.2.0/24")}}}
	peersB := []Peer{{Name: "a", PublicKey: a.key.PublicKey(), Endpoint: netip.MustParseAddrPort("10.99.0.1:51820"),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.98.1.0/24")}, Keepalive: 25 * time.Second}}
	routesA := []Route{{Dst: netip.MustParsePrefix("10.98.2.0/24"), Src: netip.MustParseAddr("10.98.1.1")}}
	routesB := []Route{{Dst: netip.MustParsePrefix("10.98.1.0/24"), Src: netip.MustParseAddr("10.98.2.1")}}
	// a route of another protocol on the link must survive SetRoutes
	run(t, "ip", "-n", nsA, "route", "add", "10.97.0.0/24", "dev", a.iface, "proto", "static")
	for _, step := range []struct {
		n      *node
		peers  []Peer
		routes []Route
	}{{a, peersA, routesA}, {b, peersB, routesB}} {
		if _, err := step.n.dev.SetPeers(step.peers); err != nil {
			t.Fatal(err)
		}
		if _, err := step.n.dev.SetRoutes(step.routes); err != nil {
			t.Fatal(err)
		}
	}
	// a stale route of ours is removed
	run(t, "ip", "-n", nsA, "route", "add", "10.96.0.0/24", "dev", a.iface, "proto", "78")
	if _, err := a.dev.SetRoutes(routesA); err != nil {
		t.Fatal(err)
	}
	routes := run(t, "ip", "-n", nsA, "route", "show", "dev", a.iface)
	for _, want := range []string{"10.98.2.0/24 proto 78 scope link src 10.98.1.1", "10.97.0.0/24 proto static"} {
		if !strings.Contains(routes, want) {
			t.Errorf("routes on %s lack %q:\n%s", a.iface, want, routes)
		}
	}
	if strings.Contains(routes, "10.96.0.0/24") {
		t.Errorf("stale netloom route not removed:\n%s", routes)
	}

	if !pingOK(t, nsA, "10.98.2.1") {
		t.Fatalf("no ping through WireGuard\nA log:\n%s\nB log:\n%s",
			readFile(logFile(runDir, a.iface)), readFile(logFile(runDir, b.iface)))
	}
	show := run(t, "wg", "show", a.iface)
	if !strings.Contains(show, b.key.PublicKey().String()) || !strings.Contains(show, "latest handshake") {
		t.Errorf("wg show %s lacks peer B or its handshake:\n%s", a.iface, show)
	}
	stats, err := a.dev.Stats()
	if err != nil {
		t.Fatal(err)
	}
	sb, ok := stats[b.key.PublicKey()]
	if !ok {
		t.Fatalf("Stats of A lack peer B: %+v", stats)
	}
	if sb.LastHandshake.IsZero() || sb.RxBytes == 0 || sb.TxBytes == 0 || sb.Endpoint != netip.MustParseAddrPort("10.99.0.2:51820") {
		t.Errorf("Stats of B on A = %+v, want handshake, bytes and endpoint 10.99.0.2:51820", sb)
	}

	// Applying the same state again changes nothing.
	if n, err := a.dev.SetPeers(peersA); err != nil || n != 0 {
		t.Fatalf("SetPeers with the same peers again = %d changes, %v; want 0, nil", n, err)
	}
	if n, err := a.dev.SetRoutes(routesA); err != nil || n != 0 {
		t.Fatalf("SetRoutes with the same routes again = %d changes, %v; want 0, nil", n, err)
	}
	assertNoPeerChange(t, a, peersA)

	// Adopt: an agent restart closes and reopens while traffic flows.
	pidBefore := readFile(pidFile(runDir, a.iface))
	indexBefore := run(t, "ip", "-n", nsA, "-o", "link", "show", a.iface)
	ping := exec.Command("ip", "netns", "exec", nsA, "ping", "-n", "-c", "40", "-i", "0.05", "-W", "1", "10.98.2.1")
	var pingOut strings.Builder
	ping.Stdout, ping.Stderr = &pingOut, &pingOut
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ping.Process.Kill() })
	if err := a.dev.Close(); err != nil {
		t.Fatal(err)
	}
	a.open(t)
	if a.dev.Mode() != ModeUserspace {
		t.Errorf("adopted mode = %s, want userspace", a.dev.Mode())
	}
	if _, err := a.dev.SetPeers(peersA); err != nil {
		t.Fatal(err)
	}
	if _, err := a.dev.SetRoutes(routesA); err != nil {
		t.Fatal(err)
	}
	if err := ping.Wait(); err != nil {
		t.Errorf("ping during adopt failed: %v\n%s", err, pingOut.String())
	}
	t.Logf("ping during adopt: %s", lastLines(pingOut.String(), 2))
	if got := readFile(pidFile(runDir, a.iface)); got != pidBefore {
		t.Errorf("companion pid changed on adopt: %q -> %q", pidBefore, got)
	}
	if got := run(t, "ip", "-n", nsA, "-o", "link", "show", a.iface); strings.Fields(got)[0] != strings.Fields(indexBefore)[0] {
		t.Errorf("link index changed on adopt: %q -> %q", indexBefore, got)
	}
	stats2, err := a.dev.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if !stats2[b.key.PublicKey()].LastHandshake.Equal(sb.LastHandshake) {
		t.Errorf("handshake with B redone on adopt: %v -> %v", sb.LastHandshake, stats2[b.key.PublicKey()].LastHandshake)
	}
	assertNoPeerChange(t, a, peersA)

	// Ensure: nothing to do while the companion answers; once it is
	// killed (its TUN link goes with it), the device is made again with
	// the same key.
	if remade, err := b.dev.Ensure(context.Background()); err != nil || remade {
		t.Fatalf("Ensure on a healthy device: remade %v, err %v", remade, err)
	}
	if c := companionFromPIDFile(runDir, b.iface); c == nil {
		t.Fatal("no live companion in B's pid file")
	} else {
		_ = syscall.Kill(c.pid, syscall.SIGKILL)
		if !c.waitExit(5 * time.Second) {
			t.Fatalf("companion pid %d of B survived SIGKILL", c.pid)
		}
	}
	var remade bool
	// In B's namespace: the companion it starts (and so the TUN link)
	// lands where the calling thread is.
	inNetns(t, nsB, func() { remade, err = b.dev.Ensure(context.Background()) })
	if err != nil || !remade {
		t.Fatalf("Ensure after the companion was killed: remade %v, err %v", remade, err)
	}
	if dev, err := b.dev.wg.Device(b.iface); err != nil || dev.PublicKey != b.key.PublicKey() {
		t.Fatalf("B's device after Ensure: %v, %+v", err, dev)
	}

	// Destroy: link, routes, companion and its files go.
	compB := companionFromPIDFile(runDir, b.iface)
	if compB == nil {
		t.Fatal("no live companion in B's pid file")
	}
	if err := b.dev.Destroy(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "-n", nsB, "link", "show", b.iface).CombinedOutput(); err == nil {
		t.Errorf("link %s still exists after Destroy:\n%s", b.iface, out)
	}
	if !compB.waitExit(5 * time.Second) {
		t.Errorf("companion pid %d of B still running after Destroy", compB.pid)
	}
	for _, p := range []string{pidFile(runDir, b.iface), uapiPath(b.iface)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Destroy (%v)", p, err)
		}
	}
	if err := a.dev.Destroy(); err != nil {
		t.Fatal(err)
	}
}

func assertNoPeerChange(t *testing.T, n *node, peers []Peer) {
	t.Helper()
	dev, err := n.dev.wg.Device(n.iface)
	if err != nil {
		t.Fatal(err)
	}
	if cfg, changed := PeerConfig(dev.Peers, peers); changed {
		t.Errorf("device %s differs from desired peers after SetPeers: %+v", n.iface, cfg)
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, " | ")
}

// A TUN link nobody serves is replaced; a link of another type is refused;
// kernel mode reports a missing module clearly.
func TestOpenExistingLinks(t *testing.T) {
	requireRoot(t)
	runDir := t.TempDir()
	ns := newNetns(t)

	stale := newNode(t, ns, "s", ModeAuto, runDir)
	run(t, "ip", "-n", ns, "tuntap", "add", "dev", stale.iface, "mode", "tun")
	before := run(t, "ip", "-n", ns, "-o", "link", "show", stale.iface)
	stale.open(t)
	if stale.dev.Mode() == ModeUserspace {
		after := run(t, "ip", "-n", ns, "-o", "link", "show", stale.iface)
		if strings.Fields(after)[0] == strings.Fields(before)[0] {
			t.Errorf("stale TUN link not recreated: %q", after)
		}
		if !uapiAnswers(stale.iface, time.Second) {
			t.Error("recreated device's UAPI socket does not answer")
		}
	}
	if err := stale.dev.Destroy(); err != nil {
		t.Fatal(err)
	}

	// A port in use fails Open clearly and leaves nothing behind.
	busy := newNode(t, ns, "p", ModeUserspace, runDir)
	busy.cfg.Port = 51821
	var err error
	var pc *net.UDPConn
	inNetns(t, ns, func() { pc, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 51821}) })
	if err != nil {
		t.Fatal(err)
	}
	inNetns(t, ns, func() { _, err = Open(context.Background(), busy.cfg, testLogger(t)) })
	pc.Close()
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("Open with a busy port: err = %v, want 'in use'", err)
	}
	if out, lerr := exec.Command("ip", "-n", ns, "link", "show", busy.iface).CombinedOutput(); lerr == nil {
		t.Errorf("failed Open left link %s behind:\n%s", busy.iface, out)
	}
	if c := companionFromPIDFile(runDir, busy.iface); c != nil {
		t.Errorf("failed Open left companion pid %d behind", c.pid)
	}

	foreign := newNode(t, ns, "f", ModeAuto, runDir)
	run(t, "ip", "-n", ns, "link", "add", foreign.iface, "type", "bridge")
	inNetns(t, ns, func() { _, err = Open(context.Background(), foreign.cfg, testLogger(t)) })
	if err == nil || !strings.Contains(err.Error(), "not WireGuard") {
		t.Errorf("Open over a bridge link: err = %v, want 'not WireGuard'", err)
	}
	if out := run(t, "ip", "-n", ns, "link", "show", foreign.iface); !strings.Contains(out, foreign.iface) {
		t.Error("foreign link was removed")
	}

	kern := newNode(t, ns, "k", ModeKernel, runDir)
	var dev *Device
	inNetns(t, ns, func() { dev, err = Open(context.Background(), kern.cfg, testLogger(t)) })
	switch {
	case err == nil:
		t.Logf("kernel WireGuard available: mode %s", dev.Mode())
		if dev.Mode() != ModeKernel {
			t.Errorf("mode = %s, want kernel", dev.Mode())
		}
		if err := dev.Destroy(); err != nil {
			t.Error(err)
		}
	case !strings.Contains(err.Error(), "wireguard module"):
		t.Errorf("kernel mode without module: err = %v, want a hint about the wireguard module", err)
	default:
		t.Logf("kernel mode: %v", err)
	}
}
