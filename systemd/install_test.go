package systemd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got), run go test -update if intended:\n%s", path, diff)
	}
}

func TestUnitFileGolden(t *testing.T) {
	golden(t, "netloom.service.golden", []byte(UnitFile(InstallOptions{})))
	golden(t, "netloom-custom.service.golden", []byte(UnitFile(InstallOptions{
		ConfigPath: "/etc/netloom/config.yaml",
		BinPath:    "/opt/netloom/netloom",
		ExtraArgs:  []string{"--data-dir", "/var/lib/netloom", "--name", "node a", "--pct", "50%", "--x", "$HOME"},
	})))
}

func TestConflistGolden(t *testing.T) {
	golden(t, "10-netloom.conflist.golden", Conflist(InstallOptions{}))
	var conf struct {
		CNIVersion string
		Name       string
		Plugins    []map[string]any
	}
	custom := Conflist(InstallOptions{Socket: "/run/nl-a/netloom.sock"})
	if err := json.Unmarshal(custom, &conf); err != nil {
		t.Fatalf("conflist is not JSON: %v\n%s", err, custom)
	}
	want := []map[string]any{{"type": "netloom", "socket": "/run/nl-a/netloom.sock"}}
	if conf.CNIVersion != "1.0.0" || conf.Name != "netloom" {
		t.Errorf("conflist header = %q %q, want 1.0.0 netloom", conf.CNIVersion, conf.Name)
	}
	if diff := cmp.Diff(want, conf.Plugins); diff != "" {
		t.Errorf("plugins (-want +got):\n%s", diff)
	}
}

func TestQuoteExecArg(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/usr/local/bin/netloom", "/usr/local/bin/netloom"},
		{"--name=a", "--name=a"},
		{"node a", `"node a"`},
		{"", `""`},
		{"50%", "50%%"},
		{"$HOME", "$$HOME"},
		{`say "hi"`, `"say \"hi\""`},
		{`a\b`, `"a\\b"`},
		{"a\nb", `"a\nb"`},
		{";", `\;`},
	}
	for _, tt := range tests {
		if got := quoteExecArg(tt.in); got != tt.want {
			t.Errorf("quoteExecArg(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// tree lists the regular files and links under root with their modes.
func tree(t *testing.T, root string) map[string]fs.FileMode {
	t.Helper()
	out := map[string]fs.FileMode{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out["/"+filepath.ToSlash(rel)] = info.Mode()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func fakeExe(t *testing.T) (string, []byte) {
	t.Helper()
	content := []byte("\x7fELF fake netloom binary\n")
	p := filepath.Join(t.TempDir(), "netloom-build")
	if err := os.WriteFile(p, content, 0o700); err != nil {
		t.Fatal(err)
	}
	return p, content
}

func TestInstallUninstall(t *testing.T) {
	root := t.TempDir()
	exe, content := fakeExe(t)
	opt := InstallOptions{ConfigPath: "/etc/netloom/config.yaml"}

	// Data and configuration of the agent that Uninstall must keep.
	keep := map[string]string{
		"/etc/netloom/config.yaml":     "name: a\n",
		"/etc/netloom/netloom.env":     "NETLOOM_NAME=a\n",
		"/var/lib/netloom/store.json":  "{}\n",
		"/etc/cni/net.d/99-other.conf": "{}\n",
		"/opt/cni/bin/bridge":          "other plugin\n",
	}
	for p, c := range keep {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := tree(t, root)

	for i := 0; i < 2; i++ { // installing again (an upgrade) is fine
		if err := Install(root, exe, opt); err != nil {
			t.Fatalf("Install #%d: %v", i+1, err)
		}
	}

	got := tree(t, root)
	want := map[string]fs.FileMode{
		"/etc/cni/net.d/10-netloom.conflist":  0o644,
		"/opt/cni/bin/netloom":                0o755,
		"/usr/local/bin/netloom":              0o755,
		"/etc/systemd/system/netloom.service": 0o644,
	}
	for p, m := range before {
		want[p] = m
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files after Install (-want +got), no temporary files may remain:\n%s", diff)
	}
	read := func(p string) []byte {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, p := range []string{"/opt/cni/bin/netloom", "/usr/local/bin/netloom"} {
		if !bytes.Equal(read(p), content) {
			t.Errorf("%s is not a copy of the executable", p)
		}
	}
	if diff := cmp.Diff(string(Conflist(opt)), string(read(ConflistPath))); diff != "" {
		t.Errorf("conflist (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(UnitFile(opt), string(read(UnitPath))); diff != "" {
		t.Errorf("unit (-want +got):\n%s", diff)
	}

	// systemctl enable would add this link; Uninstall removes it too.
	link := filepath.Join(root, wantsLink)
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(UnitPath, link); err != nil {
		t.Fatal(err)
	}

	for i := 0; i < 2; i++ { // Uninstall twice is fine
		if err := Uninstall(root); err != nil {
			t.Fatalf("Uninstall #%d: %v", i+1, err)
		}
	}
	if diff := cmp.Diff(before, tree(t, root)); diff != "" {
		t.Errorf("files after Uninstall (-want +got):\n%s", diff)
	}
}

func TestUninstallCustomBinPath(t *testing.T) {
	root := t.TempDir()
	exe, _ := fakeExe(t)
	opt := InstallOptions{BinPath: "/opt/netloom/bin/netloom"}
	if err := Install(root, exe, opt); err != nil {
		t.Fatalf("Install: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "/opt/netloom/bin/netloom")); err != nil {
		t.Fatalf("binary not at BinPath: %v", err)
	}
	if err := Uninstall(root); err != nil {
		t.Fatalf("Uninstall: %v", err)
	}
	var left []string
	for p := range tree(t, root) {
		left = append(left, p)
	}
	sort.Strings(left)
	if len(left) != 0 {
		t.Errorf("files left after Uninstall: %v", left)
	}
}

func TestUninstallEmptyRoot(t *testing.T) {
	if err := Uninstall(t.TempDir()); err != nil {
		t.Errorf("Uninstall of nothing: %v", err)
	}
}

func TestInstallErrors(t *testing.T) {
	root := t.TempDir()
	err := Install(root, filepath.Join(root, "missing-exe"), InstallOptions{})
	if err == nil || !strings.Contains(err.Error(), "missing-exe") {
		t.Errorf("Install with a missing exe = %v, want an error naming it", err)
	}
	err = Install(root, "", InstallOptions{BinPath: "bin/netloom"})
	if err == nil || !strings.Contains(err.Error(), "not absolute") {
		t.Errorf("Install with a relative BinPath = %v, want an error", err)
	}
	// Nothing half-written.
	if left := tree(t, root); len(left) != 0 {
		t.Errorf("files left after failed Install: %v", left)
	}
}

func TestExecStartBinary(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ unit, want string }{
		{"[Service]\nExecStart=/opt/x/netloom agent\n", "/opt/x/netloom"},
		{"[Service]\nExecStart=-/usr/bin/netloom agent --config a\n", "/usr/bin/netloom"},
		{"[Service]\nExecStart=/usr/bin/bash -c rm\n", ""},
		{"[Service]\nExecStart=netloom agent\n", ""},
		{"[Service]\n", ""},
	}
	for i, tt := range tests {
		p := filepath.Join(dir, "u"+string(rune('0'+i)))
		if err := os.WriteFile(p, []byte(tt.unit), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := execStartBinary(p); got != tt.want {
			t.Errorf("execStartBinary(%q) = %q, want %q", tt.unit, got, tt.want)
		}
	}
}

// systemd's own parser accepts the unit (where systemd-analyze exists).
func TestUnitFileVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("no systemd-analyze")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "netloom")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dir, UnitName)
	text := UnitFile(InstallOptions{BinPath: bin, ConfigPath: "/etc/netloom/a b.yaml", ExtraArgs: []string{"50%", "$X", `q"`}})
	if err := os.WriteFile(unit, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, analyze, "verify", unit).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s\nunit:\n%s", err, out, text)
	}
}

// For a Kubernetes node the agent writes the conflist once its network is
// up: install leaves it out and tells the agent where it goes.
func TestInstallAgentWritesConflist(t *testing.T) {
	root := t.TempDir()
	exe, _ := fakeExe(t)
	if err := Install(root, exe, InstallOptions{AgentWritesConflist: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, ConflistPath)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("install wrote %s (err %v); the agent must write it once ready", ConflistPath, err)
	}
	unit, err := os.ReadFile(filepath.Join(root, UnitPath))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "agent --cni-conflist "+ConflistPath) {
		t.Errorf("the unit does not pass --cni-conflist:\n%s", unit)
	}
}
