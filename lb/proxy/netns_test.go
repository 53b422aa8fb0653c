package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/firewall"
	"github.com/vishvananda/netns"
)

// Helpers of the kernel tests. Every test works in network namespaces it
// creates ("nlt-" + random) and deletes; nothing is ever added to the test
// process's own namespace.

func needRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (network namespaces, nftables)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Skipf("needs %s: %v", tool, err)
		}
	}
}

// newNS creates a named network namespace and deletes it when the test ends.
func newNS(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	name := "nlt-" + hex.EncodeToString(b)
	run(tb, "ip", "netns", "add", name)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	run(tb, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

func run(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// nsApplier returns a firewall.Applier working inside ns.
func nsApplier(tb testing.TB, ns string) *firewall.Applier {
	tb.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		tb.Fatalf("open netns %s: %v", ns, err)
	}
	a := firewall.NewApplier(firewall.WithNetNS(int(h)))
	tb.Cleanup(func() {
		a.Close()
		h.Close()
	})
	return a
}

// inNS runs fn on an OS thread switched into ns. Sockets fn creates belong
// to ns and may be used from any goroutine afterwards. A thread that cannot
// be switched back dies with its goroutine (it stays locked).
func inNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
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
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(fnErr, fmt.Errorf("leave netns %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

// checkListing asserts that nft's listing of table inet netloom in ns has
// the model's content (after firewall.Canonical: nft orders objects by
// creation and elements its own way).
func checkListing(t *testing.T, ns string, m firewall.Model) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "netloom").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list table in %s: %v: %s", ns, err, out)
	}
	// Model.String does not render a set's size (nft prints "size N" for
	// the affinity sets), and the kernel fills the dynamic affinity sets
	// (elements with "expires"): drop both.
	var lines []string
	for _, l := range strings.Split(firewall.Canonical(string(out)), "\n") {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "size ") && !(strings.HasPrefix(l, "elements = ") && strings.Contains(l, " expires ")) {
			lines = append(lines, l)
		}
	}
	got := strings.Join(lines, "\n")
	if diff := cmp.Diff(firewall.Canonical(m.String()), got); diff != "" {
		t.Errorf("nft list table differs from the model (-model +nft):\n%s", diff)
	}
}
