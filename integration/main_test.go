package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// exe is the netloom binary built once for the whole package (or the one
// named by $NETLOOM_IT_EXE); empty when the tests skip.
var exe string

// skipReason is set when the tests cannot run here.
var skipReason string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		skipReason = "integration tests need root (network namespaces, TUN, nftables)"
		return m.Run()
	}
	if e := os.Getenv("NETLOOM_IT_EXE"); e != "" {
		// Test a binary built elsewhere (e.g. a release build).
		abs, err := filepath.Abs(e)
		if err != nil {
			fmt.Fprintln(os.Stderr, "integration: NETLOOM_IT_EXE:", err)
			return 1
		}
		exe = abs
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "netloom-it-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: create a directory for the binary:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	exe = filepath.Join(dir, "netloom")
	goTool := "go"
	if _, err := exec.LookPath(goTool); err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goTool, "build", "-o", exe, "github.com/netloom/netloom")
	// Static, as the README builds it for hosts.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: go build of netloom failed:", err)
		return 1
	}
	return m.Run()
}

// needRoot skips the test when the package cannot run here.
func needRoot(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}
