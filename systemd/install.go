package systemd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/netloom/netloom/node/api"
)

// Where Install puts things, relative to the root it is given.
const (
	DefaultBinPath = "/usr/local/bin/netloom"
	UnitName       = "netloom.service"
	UnitPath       = "/etc/systemd/system/" + UnitName
	ConflistPath   = "/etc/cni/net.d/10-netloom.conflist"
	CNIBinPath     = "/opt/cni/bin/netloom"
	// EnvFile is read by the unit if present (NETLOOM_* variables for the
	// agent's flags); Install does not write it.
	EnvFile = "/etc/netloom/netloom.env"
	// wantsLink is what `systemctl enable netloom` creates.
	wantsLink = "/etc/systemd/system/multi-user.target.wants/" + UnitName
)

// InstallOptions shape the installed files.
type InstallOptions struct {
	// ConfigPath, when set, is passed to the agent as --config PATH.
	ConfigPath string
	// Socket is the agent's API socket written into the CNI conflist for
	// the plugin; empty means api.DefaultSocket.
	Socket string
	// ExtraArgs are appended to `netloom agent` in ExecStart.
	ExtraArgs []string
	// BinPath is where the binary is installed and run from (an absolute
	// path on the target system); empty means DefaultBinPath.
	BinPath string
	// AgentWritesConflist leaves the CNI conflist to the agent, which
	// writes it (--cni-conflist ConflistPath) once its pod network is up:
	// a kubelet keeps the node NotReady until then.
	AgentWritesConflist bool
}

func (o InstallOptions) withDefaults() InstallOptions {
	if o.BinPath == "" {
		o.BinPath = DefaultBinPath
	}
	if o.Socket == "" {
		o.Socket = api.DefaultSocket
	}
	return o
}

// UnitFile returns the text of netloom.service for opt.
func UnitFile(opt InstallOptions) string {
	opt = opt.withDefaults()
	args := []string{opt.BinPath, "agent"}
	if opt.ConfigPath != "" {
		args = append(args, "--config", opt.ConfigPath)
	}
	if opt.AgentWritesConflist {
		args = append(args, "--cni-conflist", ConflistPath)
	}
	args = append(args, opt.ExtraArgs...)
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = quoteExecArg(a)
	}

	var b strings.Builder
	b.WriteString(`# Installed by "netloom install"; "netloom uninstall" removes it.
[Unit]
Description=netloom cluster networking agent
After=network-online.target
Wants=network-online.target

[Service]
# The agent sends READY=1 once the pod network of this node is up.
Type=notify
EnvironmentFile=-` + EnvFile + `
ExecStart=` + strings.Join(quoted, " ") + `
Restart=on-failure
RestartSec=2
# The agent pings the watchdog at half this interval (RunWatchdog).
WatchdogSec=30
# Stopping or restarting the unit signals only the agent itself. The data
# plane it set up (bridge, veths, nftables table, routes) and the userspace
# WireGuard companion ("netloom wg-companion", started in its own session)
# keep running, so pods keep their connectivity while the agent restarts
# and the new agent adopts them. "netloom leave" tears them down.
KillMode=process
TimeoutStopSec=30
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
`)
	return b.String()
}

// quoteExecArg quotes one ExecStart argument for systemd: "%" and "$" are
// doubled (specifiers, variable expansion), and an argument with blanks,
// quotes, backslashes or control characters is double-quoted with C escapes.
func quoteExecArg(a string) string {
	a = strings.NewReplacer("%", "%%", "$", "$$").Replace(a)
	if a == ";" {
		return `\;`
	}
	if a != "" && !strings.ContainsAny(a, " \t\n\r\"'\\") {
		return a
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range a {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Conflist returns the CNI network configuration list for opt: one plugin,
// netloom, that asks the agent on its socket.
func Conflist(opt InstallOptions) []byte {
	opt = opt.withDefaults()
	type plugin struct {
		Type   string `json:"type"`
		Socket string `json:"socket"`
	}
	conf := struct {
		CNIVersion string   `json:"cniVersion"`
		Name       string   `json:"name"`
		Plugins    []plugin `json:"plugins"`
	}{
		CNIVersion: "1.0.0",
		Name:       "netloom",
		Plugins:    []plugin{{Type: "netloom", Socket: opt.Socket}},
	}
	out, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		panic(err) // plain strings always marshal
	}
	return append(out, '\n')
}

// Install writes, under root ("" means "/"):
//
//	etc/cni/net.d/10-netloom.conflist  (0644)
//	opt/cni/bin/netloom                (0755, a copy of exe)
//	BinPath (usr/local/bin/netloom)    (0755, a copy of exe)
//	etc/systemd/system/netloom.service (0644)
//
// Every file is written to a temporary file in its directory and renamed
// into place, so a running binary or a reading runtime never sees half a
// file. exe "" means the running executable. Install may be run again (an
// upgrade). On the live system (root "/") it then runs `systemctl
// daemon-reload` when systemctl exists; enabling and starting the unit are
// left to the operator.
func Install(root, exe string, opt InstallOptions) error {
	opt = opt.withDefaults()
	if !path.IsAbs(opt.BinPath) {
		return fmt.Errorf("install netloom: binary path %q is not absolute; pass an absolute path", opt.BinPath)
	}
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("install netloom: find own executable: %w", err)
		}
	}
	root = normRoot(root)

	for _, dst := range []string{CNIBinPath, opt.BinPath} {
		if err := copyFile(exe, under(root, dst), 0o755); err != nil {
			return fmt.Errorf("install netloom: %w", err)
		}
	}
	if !opt.AgentWritesConflist {
		if err := writeFile(under(root, ConflistPath), Conflist(opt), 0o644); err != nil {
			return fmt.Errorf("install netloom: %w", err)
		}
	}
	if err := writeFile(under(root, UnitPath), []byte(UnitFile(opt)), 0o644); err != nil {
		return fmt.Errorf("install netloom: %w", err)
	}
	if err := daemonReload(root); err != nil {
		return fmt.Errorf("install netloom: %w", err)
	}
	return nil
}

// Uninstall removes under root ("" means "/") the files Install writes:
// the unit, the conflist, the CNI plugin binary and the agent binary (the
// one the installed unit runs, when it is named netloom, else
// DefaultBinPath), and the enablement link `systemctl enable` made. Missing
// files are fine, so Uninstall may run twice. Data and configuration
// directories (/var/lib/netloom, /etc/netloom) are left alone. On the live
// system it runs `systemctl daemon-reload` when systemctl exists; stopping
// the service first is the caller's business.
func Uninstall(root string) error {
	root = normRoot(root)
	bin := DefaultBinPath
	if p := execStartBinary(under(root, UnitPath)); p != "" {
		bin = p
	}
	var errs []string
	for _, p := range []string{UnitPath, wantsLink, ConflistPath, CNIBinPath, bin} {
		if fi, err := os.Lstat(under(root, p)); p == wantsLink && err == nil && fi.Mode()&os.ModeSymlink == 0 {
			continue // not a link systemctl made: not ours
		}
		if err := os.Remove(under(root, p)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("uninstall netloom: %s", strings.Join(errs, "; "))
	}
	if err := daemonReload(root); err != nil {
		return fmt.Errorf("uninstall netloom: %w", err)
	}
	return nil
}

func normRoot(root string) string {
	if root == "" {
		return "/"
	}
	return filepath.Clean(root)
}

// under joins an absolute target-system path below root.
func under(root, p string) string {
	return filepath.Join(root, filepath.FromSlash(p))
}

// execStartBinary returns the program of ExecStart= in the unit at
// unitPath when it is an absolute path to a file named "netloom", else "".
func execStartBinary(unitPath string) string {
	data, err := os.ReadFile(unitPath)
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		v, ok := strings.CutPrefix(line, "ExecStart=")
		if !ok {
			continue
		}
		v = strings.TrimLeft(v, "-@:+!")
		prog, _, _ := strings.Cut(v, " ")
		if path.IsAbs(prog) && path.Base(prog) == "netloom" && !strings.ContainsAny(prog, `"\$%`) {
			return prog
		}
		return ""
	}
	return ""
}

// daemonReload runs `systemctl daemon-reload` on the live system only.
func daemonReload(root string) error {
	if root != "/" {
		return nil
	}
	systemctl, err := exec.LookPath("systemctl")
	if err != nil {
		return nil // no systemd here (a container, a build chroot)
	}
	if out, err := exec.Command(systemctl, "daemon-reload").CombinedOutput(); err != nil {
		return fmt.Errorf("systemctl daemon-reload: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// writeFile atomically replaces path with data.
func writeFile(path string, data []byte, mode os.FileMode) error {
	return writeAtomic(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// copyFile atomically replaces dst with a copy of src. src may be dst
// itself (reinstalling the running binary): it is read fully into the
// temporary file before the rename.
func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	return writeAtomic(dst, mode, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

func writeAtomic(path string, mode os.FileMode, fill func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := fill(f); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
