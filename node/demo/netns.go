package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netns"
)

// ipRun runs `ip args...` and returns an error holding its output.
func ipRun(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, oneLine(out))
	}
	return nil
}

// Exec runs args inside the named network namespace (`ip netns exec`) and
// returns the combined output.
func Exec(ns string, args ...string) (string, error) {
	return ExecContext(context.Background(), ns, args...)
}

// ExecContext is Exec with a context.
func ExecContext(ctx context.Context, ns string, args ...string) (string, error) {
	if ns == "" || len(args) == 0 {
		return "", errors.New("demo exec: a namespace and a command are needed")
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("in netns %s: %s: %w: %s", ns, strings.Join(args, " "), err, oneLine(out.Bytes()))
	}
	return out.String(), nil
}

// Ping sends echo requests from namespace fromNS to addr until one is
// answered, for at most 3 seconds.
func Ping(fromNS string, addr netip.Addr) error {
	return PingContext(context.Background(), fromNS, addr)
}

// PingContext is Ping with a context.
func PingContext(ctx context.Context, fromNS string, addr netip.Addr) error {
	if !addr.IsValid() {
		return fmt.Errorf("ping from %s: no address", fromNS)
	}
	_, err := ExecContext(ctx, fromNS, "ping", "-n", "-q", "-c", "1", "-i", "0.2", "-w", "3", addr.String())
	return err
}

// oneLine shortens command output to one line for an error message.
func oneLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	s = strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " | ")), " ")
	if len(s) > 600 {
		s = s[:600] + "..."
	}
	if s == "" {
		return "(no output)"
	}
	return s
}

// joinOutput puts stderr and stdout of a command together, on separate lines.
func joinOutput(stderr, stdout []byte) []byte {
	return bytes.Join([][]byte{bytes.TrimSpace(stderr), bytes.TrimSpace(stdout)}, []byte("\n"))
}

// childEnv is the environment for processes started in the demo: ours
// without CNI variables and without systemd's notify, watchdog and socket
// activation variables, which belong to the process that runs the demo.
func childEnv(extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(s string) bool {
		for _, p := range []string{"CNI_", "NOTIFY_SOCKET=", "WATCHDOG_", "LISTEN_"} {
			if strings.HasPrefix(s, p) {
				return true
			}
		}
		return false
	})
	return append(env, extra...)
}

// netnsExists reports whether the named namespace is mounted.
func netnsExists(name string) bool {
	_, err := os.Stat(filepath.Join(NetnsDir, name))
	return err == nil
}

// nsID identifies a namespace by the device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

func statNS(path string) (nsID, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nsID{}, false
	}
	return nsID{uint64(st.Dev), st.Ino}, true
}

// netnsPids lists the processes whose network namespace is the named one.
func netnsPids(name string) []int {
	want, ok := statNS(filepath.Join(NetnsDir, name))
	if !ok {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if id, ok := statNS(fmt.Sprintf("/proc/%d/ns/net", pid)); ok && id == want {
			pids = append(pids, pid)
		}
	}
	return pids
}

// inNetns reports whether pid lives in the named namespace.
func inNetns(pid int, name string) bool {
	want, ok := statNS(filepath.Join(NetnsDir, name))
	if !ok {
		return false
	}
	id, ok := statNS(fmt.Sprintf("/proc/%d/ns/net", pid))
	return ok && id == want
}

// Do runs f on an OS thread switched into the named network namespace, so
// that the sockets f opens live there (they stay there when the thread
// moves back). A thread that cannot be switched back is thrown away (it
// ends with its goroutine) rather than reused.
func Do(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			// leave the thread locked: it ends with this goroutine
			errc <- errors.Join(ferr, fmt.Errorf("return from netns %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// writeSysctl writes /proc/sys/<key> inside the named namespace.
func writeSysctl(ns, key, value string) error {
	if err := Do(ns, func() error {
		return os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644)
	}); err != nil {
		return fmt.Errorf("set %s in netns %s: %w", key, ns, err)
	}
	return nil
}
