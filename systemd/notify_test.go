package systemd

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// fakeSystemd listens on a unixgram socket like systemd's notify socket and
// points NOTIFY_SOCKET at it.
func fakeSystemd(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

// recv reads one datagram, waiting at most 5 s.
func recv(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("read notify socket: %v", err)
	}
	return string(buf[:n])
}

// noDatagram asserts nothing is queued on conn.
func noDatagram(t *testing.T, conn *net.UnixConn) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 4096)
	if n, err := conn.Read(buf); err == nil {
		t.Errorf("unexpected datagram %q", buf[:n])
	}
}

func TestNotify(t *testing.T) {
	conn := fakeSystemd(t)
	for _, tt := range []struct {
		name string
		call func() error
		want string
	}{
		{"Ready", Ready, "READY=1"},
		{"Stopping", Stopping, "STOPPING=1"},
		{"Status", func() error { return Status("3 peers,\n2 pods") }, "STATUS=3 peers, 2 pods"},
	} {
		if err := tt.call(); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := recv(t, conn); got != tt.want {
			t.Errorf("%s sent %q, want %q", tt.name, got, tt.want)
		}
	}
	if os.Getenv("NOTIFY_SOCKET") == "" {
		t.Error("NOTIFY_SOCKET was unset; later notifications would be lost")
	}
}

func TestNotifyOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	for _, f := range []func() error{Ready, Stopping, func() error { return Status("x") }} {
		if err := f(); err != nil {
			t.Errorf("without NOTIFY_SOCKET: %v, want nil", err)
		}
	}
}

func TestNotifyBrokenSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone.sock"))
	if err := Ready(); err == nil {
		t.Error("Ready to a missing socket succeeded, want an error")
	}
}

func TestRunWatchdog(t *testing.T) {
	conn := fakeSystemd(t)
	t.Setenv("WATCHDOG_USEC", "20000") // 20 ms: pings every 10 ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunWatchdog(ctx) }()
	for i := 0; i < 3; i++ {
		if got := recv(t, conn); got != "WATCHDOG=1" {
			t.Fatalf("ping %d = %q, want WATCHDOG=1", i, got)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("RunWatchdog = %v, want nil after cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RunWatchdog did not return after cancel")
	}
}

func TestRunWatchdogCheckSkipsWhenUnhealthy(t *testing.T) {
	conn := fakeSystemd(t)
	t.Setenv("WATCHDOG_USEC", "20000")
	var healthy atomic.Bool
	var checks atomic.Int32
	check := func() error {
		checks.Add(1)
		if healthy.Load() {
			return nil
		}
		return errors.New("reconcile loop stuck")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunWatchdogCheck(ctx, check) }()
	// Wait (bounded) until several checks ran while unhealthy.
	for deadline := time.Now().Add(5 * time.Second); checks.Load() < 3; {
		if time.Now().After(deadline) {
			t.Fatal("health check not called")
		}
		time.Sleep(5 * time.Millisecond)
	}
	noDatagram(t, conn)
	healthy.Store(true)
	if got := recv(t, conn); got != "WATCHDOG=1" {
		t.Errorf("ping = %q, want WATCHDOG=1", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("RunWatchdogCheck = %v", err)
	}
}

func TestRunWatchdogDisabled(t *testing.T) {
	fakeSystemd(t)
	for _, tt := range []struct {
		name, usec, pid string
	}{
		{"no WATCHDOG_USEC", "", ""},
		{"watchdog for another process", "20000", strconv.Itoa(os.Getpid() + 1)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("WATCHDOG_USEC", tt.usec)
			t.Setenv("WATCHDOG_PID", tt.pid)
			done := make(chan error, 1)
			go func() { done <- RunWatchdog(context.Background()) }() // never cancelled
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("RunWatchdog = %v, want nil", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("RunWatchdog did not return at once when the watchdog is off")
			}
		})
	}
}

func TestRunWatchdogMalformed(t *testing.T) {
	fakeSystemd(t)
	t.Setenv("WATCHDOG_USEC", "soon")
	if err := RunWatchdog(context.Background()); err == nil {
		t.Error("RunWatchdog with WATCHDOG_USEC=soon succeeded, want an error")
	}
}
