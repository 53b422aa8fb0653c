package wg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/netloom/netloom/systemd"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// CompanionCommand is the hidden subcommand of the netloom binary that runs
// RunCompanion. Open starts it as
//
//	<Config.Exe> wg-companion --iface NAME --mtu N --run-dir DIR --procs N
//
// and the CLI passes those four flags to RunCompanion.
const CompanionCommand = "wg-companion"

// uapiDir is where wireguard-go (ipc.UAPIOpen) and wgctrl meet. It is fixed
// by both libraries.
const uapiDir = "/var/run/wireguard"

// companionReadyTimeout bounds how long Open waits for a started companion
// to answer on its UAPI socket.
const companionReadyTimeout = 5 * time.Second

// RunCompanion is the body of `netloom wg-companion`: it creates the TUN
// link iface with the given MTU, runs wireguard-go on it, serves the UAPI
// socket /var/run/wireguard/<iface>.sock and writes its pid to
// runDir/<iface>.pid. procs, when above 0, sets its GOMAXPROCS (see
// CompanionProcs). It returns when ctx is done, on SIGTERM or SIGINT, when
// the link is deleted or when the device closes; the TUN link, the UAPI
// socket and the pid file go away with it.
//
// Offloads: tun.CreateTUN opens the TUN with IFF_VNET_HDR and enables TSO
// (and USO on Linux >= 6.2) with TUNSETOFFLOAD, so the kernel hands large
// TCP/UDP segments to wireguard-go, which coalesces (GRO) on the way back;
// conn.NewDefaultBind (StdNetBind) uses UDP_SEGMENT (GSO) for sending and
// UDP_GRO for receiving where the kernel has them. Both are on by default in
// wireguard-go; this function only has to use these two constructors and
// reports what it got in its first log line.
func RunCompanion(ctx context.Context, iface string, mtu int, runDir string, procs int, log *slog.Logger) error {
	if err := validIface(iface); err != nil {
		return fmt.Errorf("wg-companion: %w", err)
	}
	if mtu <= 0 {
		mtu = DefaultMTU
	}
	if runDir == "" {
		runDir = DefaultRunDir
	}
	if log == nil {
		log = slog.Default()
	}
	log = log.With("iface", iface)
	if procs > 0 {
		runtime.GOMAXPROCS(procs)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()

	tdev, err := tun.CreateTUN(iface, mtu)
	if err != nil {
		return fmt.Errorf("wg-companion: create TUN %s: %w", iface, err)
	}
	tso, tsoErr := linkTSO(iface)
	log.Info("TUN created", "mtu", mtu, "pid", os.Getpid(), "procs", runtime.GOMAXPROCS(0),
		"vnet_hdr", tdev.BatchSize() > 1, "batch", tdev.BatchSize(), "tso", tso, "tso_err", tsoErr)

	dev := device.NewDevice(tdev, conn.NewDefaultBind(), &device.Logger{
		Verbosef: func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...)) },
		Errorf:   func(format string, args ...any) { log.Error(fmt.Sprintf(format, args...)) },
	})
	defer dev.Close() // closes the TUN: the link disappears

	uapiFile, err := ipc.UAPIOpen(iface)
	if err != nil {
		return fmt.Errorf("wg-companion: open UAPI socket %s: %w", uapiPath(iface), err)
	}
	uapi, err := ipc.UAPIListen(iface, uapiFile)
	uapiFile.Close() // the listener holds its own descriptor
	if err != nil {
		return fmt.Errorf("wg-companion: listen on UAPI socket %s: %w", uapiPath(iface), err)
	}
	defer uapi.Close() // unlinks the socket

	pidPath := pidFile(runDir, iface)
	pid := os.Getpid()
	if err := writeFileAtomic(pidPath, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return fmt.Errorf("wg-companion: write pid file %s: %w", pidPath, err)
	}
	defer removePIDFile(pidPath, pid)

	acceptErr := make(chan error, 1)
	go func() {
		for {
			c, err := uapi.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			go dev.IpcHandle(c)
		}
	}()

	nl, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("wg-companion: netlink: %w", err)
	}
	defer nl.Close()
	link, err := nl.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("wg-companion: find link %s: %w", iface, err)
	}
	index := link.Attrs().Index
	linkGone := func() bool {
		l, err := nl.LinkByIndex(index)
		if err != nil {
			var nf netlink.LinkNotFoundError
			return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
		}
		return l.Attrs().Name != iface
	}

	log.Info("wg-companion running", "uapi", uapiPath(iface), "pid_file", pidPath)
	systemd.ReleaseStartupPagesLogged(log)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("wg-companion stopping", "reason", "signal")
			return nil
		case err := <-acceptErr:
			log.Info("wg-companion stopping", "reason", "UAPI socket gone", "err", err)
			return nil
		case <-dev.Wait():
			if linkGone() {
				log.Info("wg-companion stopping", "reason", "link deleted")
				return nil
			}
			return fmt.Errorf("wg-companion: wireguard-go device %s closed unexpectedly (see log above)", iface)
		case <-tick.C:
			if linkGone() {
				log.Info("wg-companion stopping", "reason", "link deleted")
				return nil
			}
		}
	}
}

// linkTSO reports whether TCP segmentation offload is on for the link in the
// current network namespace (ETHTOOL_GTSO).
func linkTSO(iface string) (bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	val := &struct{ cmd, data uint32 }{cmd: unix.ETHTOOL_GTSO}
	var req struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [24 - unsafe.Sizeof(uintptr(0))]byte
	}
	copy(req.name[:], iface)
	req.data = unsafe.Pointer(val)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&req))); errno != 0 {
		return false, errno
	}
	return val.data != 0, nil
}

func uapiPath(iface string) string { return filepath.Join(uapiDir, iface+".sock") }

func pidFile(runDir, iface string) string { return filepath.Join(runDir, iface+".pid") }

func logFile(runDir, iface string) string { return filepath.Join(runDir, iface+".log") }

// uapiAnswers reports whether a process answers a UAPI "get" on the
// iface's socket within the timeout.
func uapiAnswers(iface string, timeout time.Duration) bool {
	c, err := net.DialTimeout("unix", uapiPath(iface), timeout)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("get=1\n\n")); err != nil {
		return false
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "errno="); ok {
			return v == "0"
		}
	}
	return false
}

// companion is the wg-companion process serving a userspace device.
type companion struct {
	pid int
	// exited is closed when the process has exited and was reaped; nil for
	// an adopted companion, which is not our child.
	exited chan struct{}
}

// startCompanion starts `Exe wg-companion ...` in a new session, so it
// survives the agent, and waits until its UAPI socket answers.
func startCompanion(ctx context.Context, cfg Config, log *slog.Logger) (*companion, error) {
	if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("start wg-companion for %s: create run dir: %w", cfg.Iface, err)
	}
	logPath := logFile(cfg.RunDir, cfg.Iface)
	lf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start wg-companion for %s: open log: %w", cfg.Iface, err)
	}
	defer lf.Close() // the child has its own copy
	// Not CommandContext: the companion must outlive ctx and the agent.
	cmd := exec.Command(cfg.Exe, CompanionCommand,
		"--iface", cfg.Iface, "--mtu", strconv.Itoa(cfg.MTU), "--run-dir", cfg.RunDir, "--procs", strconv.Itoa(cfg.Procs))
	cmd.Stdout = lf
	cmd.Stderr = lf
	cmd.Dir = "/"
	// The companion is no service of its own: systemd's notify and watchdog
	// variables belong to the agent.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NOTIFY_SOCKET=") && !strings.HasPrefix(kv, "WATCHDOG_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start wg-companion for %s: %w (check the netloom binary path %s)", cfg.Iface, err, cfg.Exe)
	}
	c := &companion{pid: cmd.Process.Pid, exited: make(chan struct{})}
	// Reap the child when it exits; it is ours until the agent exits.
	go func() {
		_ = cmd.Wait()
		close(c.exited)
	}()
	log.Info("wg-companion started", "pid", c.pid, "log", logPath)

	deadline := time.NewTimer(companionReadyTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for {
		if uapiAnswers(cfg.Iface, time.Second) {
			return c, nil
		}
		select {
		case <-c.exited:
			return nil, fmt.Errorf("start wg-companion for %s: exited early: %s (see %s)", cfg.Iface, lastLine(logPath), logPath)
		case <-ctx.Done():
			c.kill()
			return nil, fmt.Errorf("start wg-companion for %s: %w", cfg.Iface, ctx.Err())
		case <-deadline.C:
			c.kill()
			return nil, fmt.Errorf("start wg-companion for %s: UAPI socket %s not answering after %s (see %s)",
				cfg.Iface, uapiPath(cfg.Iface), companionReadyTimeout, logPath)
		case <-poll.C:
		}
	}
}

func (c *companion) kill() {
	_ = syscall.Kill(c.pid, syscall.SIGKILL)
}

// stop sends SIGTERM and waits up to timeout for the process to exit, then
// sends SIGKILL.
func (c *companion) stop(timeout time.Duration) error {
	if err := syscall.Kill(c.pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("stop wg-companion pid %d: %w", c.pid, err)
	}
	if c.waitExit(timeout) {
		return nil
	}
	c.kill()
	if c.waitExit(timeout) {
		return nil
	}
	return fmt.Errorf("stop wg-companion pid %d: still running after SIGKILL", c.pid)
}

// waitExit waits until the process is gone (or a zombie that is not ours).
func (c *companion) waitExit(timeout time.Duration) bool {
	if c.exited != nil {
		select {
		case <-c.exited:
			return true
		case <-time.After(timeout):
			return false
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		if processGone(c.pid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processGone reports whether pid no longer runs (absent or a zombie).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// state is the field after the parenthesised command name
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] == 'Z' || b[i+2] == 'X'
	}
	return false
}

// companionFromPIDFile returns the companion recorded in the pid file when
// that process is a wg-companion for iface, else nil.
func companionFromPIDFile(runDir, iface string) *companion {
	b, err := os.ReadFile(pidFile(runDir, iface))
	if err != nil {
		return nil
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return nil
	}
	if !isCompanion(pid, iface) {
		return nil
	}
	return &companion{pid: pid}
}

// isCompanion reports whether /proc/<pid>/cmdline is a wg-companion for
// iface, so a stale pid file never makes us signal an unrelated process.
func isCompanion(pid int, iface string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	hasCmd, hasIface := false, false
	for i, a := range args {
		switch {
		case a == CompanionCommand:
			hasCmd = true
		case (a == "--iface" || a == "-iface") && i+1 < len(args) && args[i+1] == iface:
			hasIface = true
		case a == "--iface="+iface || a == "-iface="+iface:
			hasIface = true
		}
	}
	return hasCmd && hasIface
}

// removePIDFile removes path if it still names pid.
func removePIDFile(path string, pid int) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if strings.TrimSpace(string(b)) == strconv.Itoa(pid) {
		_ = os.Remove(path)
	}
}

// lastLine returns the last non-empty line of a (log) file, shortened.
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "no log"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	if l == "" {
		return "no output"
	}
	if len(l) > 300 {
		l = l[len(l)-300:]
	}
	return l
}
