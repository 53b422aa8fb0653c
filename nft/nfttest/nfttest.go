// Package nfttest holds the test helpers of the packages that make
// nftables tables (nft, firewall, firewall/policy, lb/proxy): golden files
// of Model.String, and the kernel tests' network namespaces and listings.
// Every kernel test works in network namespaces it creates ("nlt-" +
// random) and deletes; nothing is ever added to the test process's own
// namespace.
//
// The package does not import nft, so that nft's own tests can use it.
package nfttest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netns"
)

// NeedRoot skips the test unless it runs as root with ip, nft and tools
// on the PATH.
func NeedRoot(tb testing.TB, tools ...string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (network namespaces, nftables)")
	}
	for _, tool := range append([]string{"ip", "nft"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Skipf("needs %s: %v", tool, err)
		}
	}
}

// NewNS creates a named network namespace "nlt-<random>" with its loopback
// up, and deletes it when the test ends.
func NewNS(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	name := "nlt-" + hex.EncodeToString(b)
	Run(tb, "ip", "netns", "add", name)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	Run(tb, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// Run runs a command and returns its output; it fails the test when the
// command fails.
func Run(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// NSHandle opens the namespace ns and returns its file descriptor (for
// nft.WithNetNS or nftables.WithNetNSFd), closed when the test ends: after
// the cleanups registered later, such as closing an Applier that uses it.
func NSHandle(tb testing.TB, ns string) int {
	tb.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		tb.Fatalf("open netns %s: %v", ns, err)
	}
	tb.Cleanup(func() { h.Close() })
	return int(h)
}

// ListTable is `nft list table family name` inside ns: the listing, or the
// error with nft's output.
func ListTable(ns, family, name string) (string, error) {
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", family, name).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("nft list table %s %s in %s: %w: %s", family, name, ns, err, out)
	}
	return string(out), nil
}

// InNS runs fn on an OS thread switched into ns. Sockets fn creates belong
// to ns and may be used from any goroutine afterwards. fn is not run when
// the thread cannot be shown to be in ns, and a thread that cannot be
// switched back dies with its goroutine (it stays locked).
func InNS(ns string, fn func() error) error {
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
		cur, err := netns.Get()
		in := err == nil && cur.Equal(target) && !cur.Equal(orig)
		if err == nil {
			cur.Close()
		}
		if !in {
			errc <- fmt.Errorf("thread is not in netns %s (err %v); not running", ns, err)
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

// CheckListing fails the test unless nft's listing of the table
// family/name in ns is want (Model.String, or a golden file) line by line,
// in order: the objects in the order they were created, which for a table
// created in one transaction is the model's. Trailing blanks and empty
// lines do not count.
func CheckListing(tb testing.TB, ns, family, name, want string) {
	tb.Helper()
	got, err := ListTable(ns, family, name)
	if err != nil {
		tb.Fatal(err)
	}
	if diff := cmp.Diff(normalize(want), normalize(got)); diff != "" {
		tb.Errorf("nft list table %s %s differs (-want +nft):\n%s", family, name, diff)
	}
}

// normalize drops trailing blanks and empty lines.
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

// CheckGolden fails the test unless got is the content of the golden file
// at path; with update (a test's -update flag) it first rewrites the file.
func CheckGolden(tb testing.TB, path, got string, update bool) {
	tb.Helper()
	if update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		tb.Errorf("%s differs (-want +got), run go test -update if intended:\n%s", path, diff)
	}
}
