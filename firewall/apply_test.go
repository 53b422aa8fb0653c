package firewall

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/vishvananda/netns"
)

// Kernel tests: every one works in network namespaces it creates and
// deletes; nothing is ever added to the test process's own namespace.

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

// newNS creates a named network namespace "nlt-<random>" and deletes it
// when the test ends.
func newNS(t testing.TB) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "nlt-" + hex.EncodeToString(b)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// nsApplier returns an Applier whose connection works inside ns.
func nsApplier(t *testing.T, ns string) *Applier {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatalf("open netns %s: %v", ns, err)
	}
	t.Cleanup(func() { h.Close() })
	c, err := nftables.New(nftables.WithNetNSFd(int(h)), nftables.AsLasting(), nftables.WithSockOptions(LargeBuffers))
	if err != nil {
		t.Fatalf("nftables conn in %s: %v", ns, err)
	}
	t.Cleanup(func() { c.CloseLasting() })
	return NewApplier(WithConn(c))
}

// listTable is `nft list table inet netloom` inside ns.
func listTable(ns string) (string, error) {
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "netloom").CombinedOutput()
	return string(out), err
}

// normalize drops trailing blanks and empty lines so that nft's listing and
// Model.String compare line by line.
func normalize(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimRight(l, " \t")
		if l != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// checkKernelMatches asserts that nft's own listing of the table is the
// model's String: the expressions we send decode to the text we claim.
func checkKernelMatches(t *testing.T, ns string, m Model) {
	t.Helper()
	got, err := listTable(ns)
	if err != nil {
		t.Fatalf("nft list table in %s: %v: %s", ns, err, got)
	}
	if diff := cmp.Diff(normalize(m.String()), normalize(got)); diff != "" {
		t.Errorf("nft list table differs from the model (-model +nft):\n%s", diff)
	}
}

func TestApplyInNetns(t *testing.T) {
	needRoot(t)
	ns := newNS(t)
	a := nsApplier(t, ns)

	m := Ruleset(Config{
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
		PodSubnet:   netip.MustParsePrefix("10.244.3.0/24"),
		Bridge:      "netloom-br", WGIface: "netloom0",
	})
	if err := a.Apply(m); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	checkKernelMatches(t, ns, m)
	got, _ := listTable(ns)
	if !strings.Contains(got, "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade") {
		t.Errorf("masquerade rule missing:\n%s", got)
	}

	// Idempotent: same listing, still one table.
	if err := a.Apply(m); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	checkKernelMatches(t, ns, m)
	tables := run(t, "ip", "netns", "exec", ns, "nft", "list", "tables")
	if n := strings.Count(tables, "table inet netloom"); n != 1 {
		t.Errorf("nft list tables has %d netloom tables:\n%s", n, tables)
	}

	// Anything added by hand is gone after the next Apply; a changed
	// model replaces the old content.
	run(t, "ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "netloom", "forward", "iifname", "stray0", "drop")
	m2 := Ruleset(Config{ClusterCIDR: netip.MustParsePrefix("10.250.0.0/16"), Bridge: "other-br"})
	if err := a.Apply(m2); err != nil {
		t.Fatalf("Apply changed model: %v", err)
	}
	checkKernelMatches(t, ns, m2)
	if got, _ := listTable(ns); normalize(got) == normalize(m.String()) {
		t.Errorf("listing still shows the first model after applying another")
	}

	// IPv6 cluster CIDR: ip6 payload offsets decode as ip6 saddr/daddr.
	m6 := Ruleset(Config{ClusterCIDR: netip.MustParsePrefix("fd00:10:244::/56"), WGIface: "netloom0"})
	if err := a.Apply(m6); err != nil {
		t.Fatalf("Apply ipv6 model: %v", err)
	}
	checkKernelMatches(t, ns, m6)

	// Remove, and Remove again.
	if err := a.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if out, err := listTable(ns); err == nil {
		t.Errorf("table still there after Remove:\n%s", out)
	}
	if err := a.Remove(); err != nil {
		t.Errorf("Remove of a missing table: %v", err)
	}
}

func TestApplySetsAndJumps(t *testing.T) {
	needRoot(t)
	ns := newNS(t)
	a := nsApplier(t, ns)
	m := testSetModel()
	// Twice: set IDs are fresh in each transaction.
	for i := 0; i < 2; i++ {
		if err := a.Apply(m); err != nil {
			t.Fatalf("Apply %d: %v", i, err)
		}
	}
	checkKernelMatches(t, ns, m)
}

// A model the kernel refuses leaves the previous table untouched: the
// transaction is all or nothing.
func TestApplyFailureKeepsOldTable(t *testing.T) {
	needRoot(t)
	ns := newNS(t)
	a := nsApplier(t, ns)
	m := Ruleset(Config{ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"), Bridge: "br0"})
	if err := a.Apply(m); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	bad := Ruleset(Config{ClusterCIDR: netip.MustParsePrefix("10.99.0.0/16")})
	// masquerade is only valid in nat chains: move it into forward.
	post, _ := bad.Chain(ChainPostrouting)
	for i := range bad.Chains {
		if bad.Chains[i].Name == ChainForward {
			bad.Chains[i].Rules = append(bad.Chains[i].Rules, post.Rules...)
		}
	}
	err := a.Apply(bad)
	if err == nil {
		t.Fatal("Apply of masquerade in a filter chain succeeded, want an error")
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
	checkKernelMatches(t, ns, m)
	// The connection is still usable after a refused transaction.
	if err := a.Apply(m); err != nil {
		t.Fatalf("Apply after a refused one: %v", err)
	}
	checkKernelMatches(t, ns, m)
}

// Without WithConn the Applier opens its connection in the namespace of the
// calling thread at first use.
func TestApplyDefaultConnUsesCurrentNetns(t *testing.T) {
	needRoot(t)
	ns := newNS(t)
	m := Ruleset(Config{ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16")})

	errc := make(chan error, 1)
	go func() {
		// A thread that may end up in the wrong namespace must die with
		// its goroutine: unlock only after switching back succeeded.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		cur, err := netns.Get()
		if err != nil || !cur.Equal(target) || cur.Equal(orig) {
			errc <- fmt.Errorf("thread is not in %s (err %v); not applying", ns, err)
			return // never apply in the original namespace
		}
		cur.Close()
		a := NewApplier()
		applyErr := a.Apply(m)
		a.Close()
		if err := netns.Set(orig); err != nil {
			errc <- err
			return
		}
		runtime.UnlockOSThread()
		errc <- applyErr
	}()
	if err := <-errc; err != nil {
		t.Fatalf("Apply in %s: %v", ns, err)
	}
	checkKernelMatches(t, ns, m)
}

// Real packets: a pod-like address in the cluster CIDR pings an outside
// host that has no route back to the cluster CIDR. Only masquerading on the
// router makes the reply come back.
//
//	pod (10.244.1.5/24) --veth-- router (10.244.1.1, 192.0.2.1) --veth-- outside (192.0.2.2/24)
func TestMasqueradePackets(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skipf("needs ping: %v", err)
	}
	pod, router, outside := newNS(t), newNS(t), newNS(t)
	run(t, "ip", "-n", pod, "link", "add", "p0", "type", "veth", "peer", "name", "r0", "netns", router)
	run(t, "ip", "-n", router, "link", "add", "r1", "type", "veth", "peer", "name", "o0", "netns", outside)
	run(t, "ip", "-n", pod, "addr", "add", "10.244.1.5/24", "dev", "p0")
	run(t, "ip", "-n", pod, "link", "set", "p0", "up")
	run(t, "ip", "-n", pod, "route", "add", "default", "via", "10.244.1.1")
	run(t, "ip", "-n", router, "addr", "add", "10.244.1.1/24", "dev", "r0")
	run(t, "ip", "-n", router, "addr", "add", "192.0.2.1/24", "dev", "r1")
	run(t, "ip", "-n", router, "link", "set", "r0", "up")
	run(t, "ip", "-n", router, "link", "set", "r1", "up")
	run(t, "ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	run(t, "ip", "-n", outside, "addr", "add", "192.0.2.2/24", "dev", "o0")
	run(t, "ip", "-n", outside, "link", "set", "o0", "up")

	ping := func(wait string) error {
		return exec.Command("ip", "netns", "exec", pod, "ping", "-c", "1", "-W", wait, "192.0.2.2").Run()
	}
	// Control: without the table the outside host cannot answer.
	if err := ping("1"); err == nil {
		t.Fatal("ping went through without masquerading; the test topology is wrong")
	}

	a := nsApplier(t, router)
	if err := a.Apply(Ruleset(Config{ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"), Bridge: "r0"})); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if err = ping("2"); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("ping from pod to outside with masquerading: %v", err)
	}
	if _, lookErr := exec.LookPath("conntrack"); lookErr == nil {
		out, _ := exec.Command("ip", "netns", "exec", router, "conntrack", "-L", "-p", "icmp").CombinedOutput()
		// original src is the pod, the reply goes to the router's address.
		if !strings.Contains(string(out), "src=10.244.1.5 dst=192.0.2.2") || !strings.Contains(string(out), "src=192.0.2.2 dst=192.0.2.1") {
			t.Errorf("conntrack shows no masqueraded flow:\n%s", out)
		}
	}
}
