// Package devapi builds and runs a real Kubernetes control plane (etcd,
// kube-apiserver, kube-controller-manager) for tests and for
// `netloom demo --kubernetes`.
//
// Build compiles the binaries once from the Go module proxy and caches them
// by version; Start runs them, optionally inside a network namespace, with
// freshly generated certificates, a static token file and RBAC on.
//
// The cache directory is Options.CacheDir, else $NETLOOM_KUBE_CACHE, else
// /var/cache/netloom/kube. Its layout:
//
//	kube-v1.37.2/kube-apiserver            the binaries
//	kube-v1.37.2/kube-controller-manager
//	kube-v1.37.2/etcd                      a small main around go.etcd.io/etcd/server/v3/embed
//	kube-v1.37.2/go.mod, go.sum            the module they were built from
//	kube-v1.37.2.lock                      flock held while building
//	kube-v1.37.2.build.log                 output of the last build
package devapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// KubeVersion is the Kubernetes release Build compiles. The k8s.io staging
// modules are used at the matching v0 version (v0.37.2).
const KubeVersion = "v1.37.2"

// DefaultCacheDir is where built binaries are kept when neither
// Options.CacheDir nor $NETLOOM_KUBE_CACHE says otherwise.
const DefaultCacheDir = "/var/cache/netloom/kube"

// Options configure Build.
type Options struct {
	// CacheDir holds the built binaries; empty means $NETLOOM_KUBE_CACHE,
	// else DefaultCacheDir.
	CacheDir string
	// Progress, when set, receives one line before a build starts (and one
	// when waiting for another process's build).
	Progress func(string)
}

// Binaries are the paths of the built programs.
type Binaries struct {
	Dir               string // the directory holding all three
	APIServer         string // kube-apiserver
	ControllerManager string // kube-controller-manager
	Etcd              string // etcd (embedded server, flags --data-dir, --listen-client-urls, --listen-peer-urls)
}

func (o Options) cacheDir() string {
	if o.CacheDir != "" {
		return o.CacheDir
	}
	if d := os.Getenv("NETLOOM_KUBE_CACHE"); d != "" {
		return d
	}
	return DefaultCacheDir
}

func binariesIn(dir string) Binaries {
	return Binaries{
		Dir:               dir,
		APIServer:         filepath.Join(dir, "kube-apiserver"),
		ControllerManager: filepath.Join(dir, "kube-controller-manager"),
		Etcd:              filepath.Join(dir, "etcd"),
	}
}

// Cached returns the binaries when all of them are already in the cache.
func Cached(o Options) (Binaries, bool) {
	b := binariesIn(filepath.Join(o.cacheDir(), "kube-"+KubeVersion))
	for _, p := range []string{b.APIServer, b.ControllerManager, b.Etcd} {
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o100 == 0 {
			return Binaries{}, false
		}
	}
	return b, true
}

// Build returns the cached binaries, building them first when they are
// missing: it writes a module that requires k8s.io/kubernetes at
// KubeVersion, replaces each k8s.io staging module with its published
// version, and runs `go build` (with the go command from PATH or
// /usr/local/go/bin). A file lock keeps concurrent callers, in this or other
// processes, from building twice; the result appears in the cache
// atomically. A cold build takes about 10 minutes and 2 GB of memory.
func Build(ctx context.Context, o Options) (Binaries, error) {
	if b, ok := Cached(o); ok {
		return b, nil
	}
	dir := o.cacheDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Binaries{}, fmt.Errorf("build kube-apiserver: create cache dir %s: %w (set NETLOOM_KUBE_CACHE to a writable directory)", dir, err)
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, "kube-"+KubeVersion+".lock"), o.Progress)
	if err != nil {
		return Binaries{}, err
	}
	defer unlock()
	if b, ok := Cached(o); ok { // built by whoever held the lock
		return b, nil
	}
	goBin, err := findGo()
	if err != nil {
		return Binaries{}, err
	}
	if o.Progress != nil {
		o.Progress(fmt.Sprintf("building kube-apiserver %s from the Go module proxy into %s (first use, about 10 minutes)", KubeVersion, dir))
	}
	if err := build(ctx, goBin, dir); err != nil {
		return Binaries{}, err
	}
	b, ok := Cached(o)
	if !ok {
		return Binaries{}, fmt.Errorf("build kube-apiserver: the build finished but %s is incomplete", b.Dir)
	}
	return b, nil
}

// findGo returns the go command: from PATH, else /usr/local/go/bin/go.
func findGo() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/local/go/bin/go"); err == nil {
		return "/usr/local/go/bin/go", nil
	}
	return "", errors.New("build kube-apiserver: the go command is in neither PATH nor /usr/local/go/bin; install Go 1.26 from https://go.dev/dl")
}

// lockFile takes an exclusive flock on path, polling so that ctx can cancel
// the wait. The returned function releases it.
func lockFile(ctx context.Context, path string, progress func(string)) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("build kube-apiserver: open lock file %s: %w", path, err)
	}
	told := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("build kube-apiserver: lock %s: %w", path, err)
		}
		if !told && progress != nil {
			progress(fmt.Sprintf("waiting for another process building kube-apiserver %s (lock %s)", KubeVersion, path))
			told = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("build kube-apiserver: wait for lock %s: %w", path, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// etcdMain is the source of the etcd binary: the embedded server with the
// few flags Start uses.
const etcdMain = `package main

import (
	"flag"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	dir := flag.String("data-dir", "default.etcd", "data directory")
	client := flag.String("listen-client-urls", "http://127.0.0.1:2379", "client URL")
	peer := flag.String("listen-peer-urls", "http://127.0.0.1:2380", "peer URL")
	noFsync := flag.Bool("unsafe-no-fsync", false, "do not fsync (tests)")
	flag.Parse()
	cfg := embed.NewConfig()
	cfg.Dir = *dir
	cu, err := url.Parse(*client)
	if err != nil {
		log.Fatal(err)
	}
	pu, err := url.Parse(*peer)
	if err != nil {
		log.Fatal(err)
	}
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.UnsafeNoFsync = *noFsync
	cfg.LogLevel = "warn"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatal(err)
	}
	<-e.Server.ReadyNotify()
	log.Print("etcd ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case err := <-e.Err():
		log.Print(err)
	}
	e.Close()
}
`

// stagingReplace matches a replace of a k8s.io staging module to its
// directory in the kubernetes repository, inside or outside a block.
var stagingReplace = regexp.MustCompile(`(?m)^\s*(?:replace\s+)?(k8s\.io/[A-Za-z0-9._-]+)\s+=>\s+\./staging/`)

// goModText returns the go.mod of the build module, given the go.mod of
// k8s.io/kubernetes at version: every staging module it replaces with a
// directory is replaced here with the published module at v0.<minor>.<patch>.
func goModText(kubeGoMod []byte, version string) (string, error) {
	if !strings.HasPrefix(version, "v1.") {
		return "", fmt.Errorf("kubernetes version %q does not start with v1.", version)
	}
	staging := "v0." + strings.TrimPrefix(version, "v1.")
	mods := stagingReplace.FindAllSubmatch(kubeGoMod, -1)
	if len(mods) == 0 {
		return "", fmt.Errorf("k8s.io/kubernetes %s go.mod replaces no staging modules", version)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "module netloom.local/kubebuild\n\ngo %s\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n", goDirective(kubeGoMod), version)
	for _, m := range mods {
		fmt.Fprintf(&b, "\t%s => %s %s\n", m[1], m[1], staging)
	}
	b.WriteString(")\n")
	return b.String(), nil
}

var goLine = regexp.MustCompile(`(?m)^go\s+(\S+)\s*$`)

// goDirective is the go line of a go.mod, or 1.26 when it has none.
func goDirective(gomod []byte) string {
	if m := goLine.FindSubmatch(gomod); m != nil {
		return string(m[1])
	}
	return "1.26"
}

// build runs the build in a temporary directory inside cacheDir and renames
// its output to cacheDir/kube-<version>.
func build(ctx context.Context, goBin, cacheDir string) error {
	logPath := filepath.Join(cacheDir, "kube-"+KubeVersion+".build.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("build kube-apiserver: create %s: %w", logPath, err)
	}
	defer logf.Close()
	work, err := os.MkdirTemp(cacheDir, ".build-")
	if err != nil {
		return fmt.Errorf("build kube-apiserver: %w", err)
	}
	defer os.RemoveAll(work)

	run := func(stdout *bytes.Buffer, args ...string) error {
		cmd := exec.CommandContext(ctx, goBin, args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS="+strings.TrimSpace(os.Getenv("GOFLAGS")+" -mod=mod"))
		cmd.Stderr = logf
		cmd.Stdout = logf
		if stdout != nil {
			cmd.Stdout = stdout
		}
		// the go command's own children (compile, link) die with it
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 10 * time.Second
		fmt.Fprintf(logf, "$ go %s\n", strings.Join(args, " "))
		if err := cmd.Run(); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("build kube-apiserver: go %s: %w", args[0], ctx.Err())
			}
			return fmt.Errorf("build kube-apiserver: go %s failed (%v); see %s:\n%s", strings.Join(args, " "), err, logPath, tail(logPath, 15))
		}
		return nil
	}

	write := func(name, text string) error {
		p := filepath.Join(work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, []byte(text), 0o644)
	}
	// A bare module first, to fetch k8s.io/kubernetes and read its go.mod.
	if err := write("go.mod", "module netloom.local/kubebuild\n"); err != nil {
		return fmt.Errorf("build kube-apiserver: %w", err)
	}
	var out bytes.Buffer
	if err := run(&out, "mod", "download", "-json", "k8s.io/kubernetes@"+KubeVersion); err != nil {
		return err
	}
	var dl struct{ GoMod, Error string }
	if err := json.Unmarshal(out.Bytes(), &dl); err != nil || dl.GoMod == "" {
		return fmt.Errorf("build kube-apiserver: go mod download k8s.io/kubernetes@%s: %s %v", KubeVersion, dl.Error, err)
	}
	kubeMod, err := os.ReadFile(dl.GoMod)
	if err != nil {
		return fmt.Errorf("build kube-apiserver: %w", err)
	}
	gomod, err := goModText(kubeMod, KubeVersion)
	if err != nil {
		return fmt.Errorf("build kube-apiserver: %w", err)
	}
	if err := errors.Join(write("go.mod", gomod), write("etcd/main.go", etcdMain)); err != nil {
		return fmt.Errorf("build kube-apiserver: %w", err)
	}
	outDir := filepath.Join(work, "out")
	ldflags := "-s -w" +
		" -X k8s.io/component-base/version.gitVersion=" + KubeVersion +
		" -X k8s.io/client-go/pkg/version.gitVersion=" + KubeVersion +
		" -X k8s.io/component-base/version.gitMajor=1" +
		" -X k8s.io/component-base/version.gitMinor=" + strings.Split(KubeVersion, ".")[1] +
		" -X k8s.io/component-base/version.gitTreeState=clean"
	if err := run(nil, "build", "-trimpath", "-ldflags="+ldflags, "-o", outDir+"/",
		"k8s.io/kubernetes/cmd/kube-apiserver",
		"k8s.io/kubernetes/cmd/kube-controller-manager",
		"./etcd"); err != nil {
		return err
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		if err := os.Rename(filepath.Join(work, f), filepath.Join(outDir, f)); err != nil {
			return fmt.Errorf("build kube-apiserver: %w", err)
		}
	}
	final := filepath.Join(cacheDir, "kube-"+KubeVersion)
	if err := os.RemoveAll(final); err != nil { // an incomplete earlier result
		return fmt.Errorf("build kube-apiserver: remove %s: %w", final, err)
	}
	if err := os.Rename(outDir, final); err != nil {
		return fmt.Errorf("build kube-apiserver: %w", err)
	}
	return nil
}

// tail returns the last n lines of the file at path, indented.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "  (" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}
