package demo

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Down removes the demo cluster recorded in stateDir (default
// /run/netloom-demo), e.g. from `netloom demo --down`. Nothing recorded there
// is not an error. See Cluster.Down.
func Down(stateDir string) error {
	c, err := Load(stateDir, nil)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return c.Down()
}

// Down removes everything the cluster created: it runs the CNI DEL for every
// pod whose agent still runs (best effort), stops the processes it started
// and the agents (SIGTERM, SIGKILL after 5 seconds), stops the WireGuard
// companions the agents left behind, deletes the namespaces it created and
// finally the state file (the whole state directory when it is the default
// one). It only signals processes it recorded (checked by start time) and
// companions (command line with "wg-companion") living in one of its node
// namespaces. Down may be called again; errors are joined.
func (c *Cluster) Down() error {
	ctx := context.Background()
	var errs []error

	// 1. CNI DEL while the agents still answer.
	for _, p := range c.Pods() {
		n := c.Node(p.Node)
		if n == nil || !n.Agent.Running() || c.Opts.Exe == "" {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if _, err := c.cni(dctx, "DEL", n, p); err != nil {
			c.Opts.Log.Warn("CNI DEL failed", "pod", p.Name, "err", err)
		}
		cancel()
	}

	// 2. Our processes and the agents, together.
	c.mu.Lock()
	procs := slices.Clone(c.Procs)
	for _, n := range c.Nodes {
		if n.Agent != nil {
			procs = append(procs, n.Agent)
		}
	}
	c.mu.Unlock()
	if err := stopAll(procs, 5*time.Second); err != nil {
		errs = append(errs, err)
	}

	// 3. WireGuard companions, which outlive their agent on purpose.
	var comps []*Process
	var uapi []string
	for _, n := range c.Nodes {
		found := c.companions(n)
		comps = append(comps, found...)
		if len(found) > 0 {
			uapi = append(uapi, filepath.Join("/var/run/wireguard", n.WGIface+".sock"))
		}
	}
	if err := stopAll(comps, 5*time.Second); err != nil {
		errs = append(errs, err)
	}
	for _, s := range uapi {
		// a companion that had to be killed leaves its UAPI socket behind
		if fi, err := os.Lstat(s); err == nil && fi.Mode()&fs.ModeSocket != 0 {
			if err := os.Remove(s); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove %s: %w", s, err))
			}
		}
	}

	// 4. Namespaces, newest first: pods, nodes, switch.
	c.mu.Lock()
	nss := slices.Clone(c.Namespaces)
	c.mu.Unlock()
	slices.Reverse(nss)
	for _, ns := range nss {
		if err := c.delNetns(ctx, ns); err != nil {
			errs = append(errs, err)
		}
	}

	// 5. The state, unless something is left to retry.
	if len(errs) == 0 {
		_, err := os.Stat(c.statePath())
		recorded := err == nil
		if samePath(c.Opts.StateDir, DefaultStateDir) {
			if err := os.RemoveAll(c.Opts.StateDir); err != nil {
				errs = append(errs, fmt.Errorf("remove demo state: %w", err))
			}
		} else if err := os.Remove(c.statePath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove demo state: %w", err))
		}
		if recorded {
			c.say("removed demo cluster %s", c.Opts.Prefix)
		}
	}
	return errors.Join(errs...)
}

// companions finds the WireGuard companions of node n: pids from the pid
// files in its run directory and the processes in its namespace, whose
// command line names wg-companion and which live in the node's namespace
// (or, when that is gone, name the pid file's interface).
func (c *Cluster) companions(n *Node) []*Process {
	cands := map[int]string{} // pid -> interface from the pid file, if any
	files, _ := filepath.Glob(filepath.Join(n.RunDir, "*.pid"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			cands[pid] = strings.TrimSuffix(filepath.Base(f), ".pid")
		}
	}
	for _, pid := range netnsPids(n.NS) {
		if _, ok := cands[pid]; !ok {
			cands[pid] = ""
		}
	}
	var out []*Process
	for pid, iface := range cands {
		cmdline := procCmdline(pid)
		if !strings.Contains(cmdline, "wg-companion") || !procAlive(pid, 0) {
			continue
		}
		ours := inNetns(pid, n.NS)
		if !ours && !netnsExists(n.NS) && iface != "" && strings.Contains(cmdline, iface) {
			ours = true
		}
		if !ours {
			continue
		}
		start, err := procStart(pid)
		if err != nil {
			continue
		}
		out = append(out, &Process{Name: "wg-companion " + n.Name, NS: n.NS, Pid: pid, Start: start})
	}
	return out
}

func samePath(a, b string) bool {
	return filepath.Clean(a) == filepath.Clean(b)
}
