package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/netloom/netloom/node/api"
)

// execSplit runs args inside namespace ns with stdin and extra environment,
// keeping stdout and stderr apart.
func execSplit(ctx context.Context, ns string, env []string, stdin io.Reader, args ...string) (stdout, stderr []byte, err error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &o, &e, stdin
	cmd.Env = env
	err = cmd.Run()
	return o.Bytes(), e.Bytes(), err
}

func (c *Cluster) needExe() error {
	if c.Opts.Exe == "" {
		return errors.New("demo: no netloom binary given (Options.Exe)")
	}
	return nil
}

// AgentArgs is the command line (after the binary) of node n's agent; join
// lists the gossip addresses to join through.
func (c *Cluster) AgentArgs(n *Node, join []netip.AddrPort) []string {
	o := c.Opts
	args := []string{"agent",
		"--name", n.Name,
		"--data-dir", n.DataDir,
		"--socket", n.Socket,
		"--run-dir", n.RunDir,
		"--advertise-addr", n.Addr.String(),
		"--gossip-port", strconv.Itoa(o.GossipPort),
		"--wg-port", strconv.Itoa(o.WGPort),
		"--wg-iface", n.WGIface,
		"--cluster-cidr", o.ClusterCIDR.String(),
		"--node-mask", strconv.Itoa(o.NodeMask),
		"--token", c.Token,
	}
	if len(join) > 0 {
		s := make([]string, len(join))
		for i, j := range join {
			s[i] = j.String()
		}
		args = append(args, "--join", strings.Join(s, ","))
	}
	args = append(args, "--wireguard", o.WireGuard, "--log-format", o.LogFormat)
	args = append(args, o.ExtraAgentArgs...)
	return append(args, n.ExtraArgs...)
}

// GossipAddr is the node's memberlist address.
func (c *Cluster) GossipAddr(n *Node) netip.AddrPort {
	return netip.AddrPortFrom(n.Addr, uint16(c.Opts.GossipPort))
}

// Init runs `netloom init` once (in node1's namespace, with node1's data
// directory) and returns the token it printed last, unless the cluster has a
// token already (Options.Token or an earlier Init).
func (c *Cluster) Init(ctx context.Context) (string, error) {
	if err := c.needExe(); err != nil {
		return "", err
	}
	c.mu.Lock()
	tok := c.Token
	if tok == "" {
		tok = c.Opts.Token
	}
	c.mu.Unlock()
	if tok == "" {
		n := c.Nodes[0]
		out, errOut, err := execSplit(ctx, n.NS, nil, nil, c.Opts.Exe, "init", "--data-dir", n.DataDir)
		if err != nil {
			return "", fmt.Errorf("netloom init for the demo cluster: %w: %s", err, oneLine(joinOutput(errOut, out)))
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		tok = strings.TrimSpace(lines[len(lines)-1])
		if tok == "" {
			return "", errors.New("netloom init for the demo cluster printed no token")
		}
	}
	c.mu.Lock()
	c.Token = tok
	err := c.saveLocked()
	c.mu.Unlock()
	return tok, err
}

// StartAgents gets a token (Init), starts node1's agent, waits until its API
// socket answers, then starts the others, which join through the agents
// already running.
func (c *Cluster) StartAgents(ctx context.Context) error {
	if _, err := c.Init(ctx); err != nil {
		return err
	}
	for i, n := range c.Nodes {
		if n.Agent.Running() {
			continue
		}
		if err := c.StartAgent(n); err != nil {
			return err
		}
		if i == 0 && len(c.Nodes) > 1 {
			if err := c.WaitSocket(ctx, n, 30*time.Second); err != nil {
				return err
			}
		}
	}
	return nil
}

// StartAgent starts node n's agent in the background; it joins through every
// other node whose agent runs (none: it starts alone). Output is appended to
// n.LogPath.
func (c *Cluster) StartAgent(n *Node) error {
	if err := c.needExe(); err != nil {
		return err
	}
	if n.Agent.Running() {
		return fmt.Errorf("start agent %s: already running (pid %d)", n.Name, n.Agent.Pid)
	}
	if c.Token == "" {
		return fmt.Errorf("start agent %s: no join token: call StartAgents or Init first", n.Name)
	}
	var join []netip.AddrPort
	for _, o := range c.Nodes {
		if o != n && o.Agent.Running() {
			join = append(join, c.GossipAddr(o))
		}
	}
	args := append([]string{c.Opts.Exe}, c.AgentArgs(n, join)...)
	p, err := startProcess("agent "+n.Name, n.NS, n.LogPath, nil, args...)
	if err != nil {
		return err
	}
	c.mu.Lock()
	n.Agent = p
	err = c.saveLocked()
	c.mu.Unlock()
	c.Opts.Log.Info("agent started", "node", n.Name, "pid", p.Pid, "log", n.LogPath)
	c.say("started agent %s (pid %d, log %s)", n.Name, p.Pid, n.LogPath)
	return err
}

// StopAgent sends sig (SIGTERM or SIGKILL) to node n's agent and waits for it
// to end; after 10 seconds it kills it. The WireGuard companion is left
// alone, as after a real crash or restart. Not running is not an error.
func (c *Cluster) StopAgent(n *Node, sig syscall.Signal) error {
	if err := n.Agent.Stop(sig, 10*time.Second); err != nil {
		return fmt.Errorf("stop agent %s: %w", n.Name, err)
	}
	return nil
}

// Restart stops node n's agent with SIGTERM and starts it again.
func (c *Cluster) Restart(n *Node) error {
	if err := c.StopAgent(n, syscall.SIGTERM); err != nil {
		return err
	}
	return c.StartAgent(n)
}

// Leave runs `netloom leave` against node n and waits up to 20 seconds for
// the agent to exit; an exit status other than 0 is an error.
func (c *Cluster) Leave(ctx context.Context, n *Node) error {
	if err := c.needExe(); err != nil {
		return err
	}
	if out, err := ExecContext(ctx, n.NS, c.Opts.Exe, "leave", "--socket", n.Socket); err != nil {
		return fmt.Errorf("leave node %s: %w (%s)", n.Name, err, oneLine([]byte(out)))
	}
	if n.Agent == nil {
		return nil
	}
	if !n.Agent.wait(20 * time.Second) {
		return fmt.Errorf("leave node %s: agent (pid %d) still runs 20s after leave; see %s", n.Name, n.Agent.Pid, n.LogPath)
	}
	if err := n.Agent.ExitErr(); err != nil {
		return fmt.Errorf("leave node %s: agent exited with %w; last log lines: %s", n.Name, err, logTail(n.LogPath, 5))
	}
	return nil
}

// WaitSocket waits until node n's API socket accepts connections.
func (c *Cluster) WaitSocket(ctx context.Context, n *Node, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		conn, err := net.DialTimeout("unix", n.Socket, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if err := c.agentGone(n); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent %s: API socket %s not answering after %s: %w; see %s", n.Name, n.Socket, timeout, err, n.LogPath)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// agentGone returns an error when node n's agent is not running.
func (c *Cluster) agentGone(n *Node) error {
	if n.Agent == nil {
		return fmt.Errorf("agent %s was not started", n.Name)
	}
	if n.Agent.Running() {
		return nil
	}
	why := "exited"
	if err := n.Agent.ExitErr(); err != nil {
		why = "exited with " + err.Error()
	}
	return fmt.Errorf("agent %s (pid %d) %s; last log lines: %s (log %s)", n.Name, n.Agent.Pid, why, logTail(n.LogPath, 5), n.LogPath)
}

// Status runs `netloom status -o json` against node n inside its namespace.
func (c *Cluster) Status(ctx context.Context, n *Node) (*api.Status, error) {
	if err := c.needExe(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, errOut, err := execSplit(ctx, n.NS, nil, nil, c.Opts.Exe, "status", "--socket", n.Socket, "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("status of node %s: %w: %s", n.Name, err, oneLine(joinOutput(errOut, out)))
	}
	var st api.Status
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("status of node %s: decode: %w: %s", n.Name, err, oneLine(out))
	}
	return &st, nil
}

// WaitReady polls every node's status until all of them see every node alive
// with a subnet, the subnets distinct and all nodes agreeing on them. It
// fails early when an agent exits, and on timeout with the last problem and
// status seen.
func (c *Cluster) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	names := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		names[i] = n.Name
	}
	var lastErr error
	var lastRaw []byte
	for {
		sts := map[string]*api.Status{}
		lastErr = nil
		for _, n := range c.Nodes {
			if err := c.agentGone(n); err != nil {
				return fmt.Errorf("demo cluster not ready: %w", err)
			}
			st, err := c.Status(ctx, n)
			if err != nil {
				lastErr = err
				break
			}
			sts[n.Name] = st
		}
		if lastErr == nil {
			if lastErr = checkReady(names, sts); lastErr == nil {
				c.mu.Lock()
				for _, n := range c.Nodes {
					n.Subnet, _ = netip.ParsePrefix(sts[n.Name].Node.Subnet)
				}
				err := c.saveLocked()
				c.mu.Unlock()
				c.say("cluster ready: %d nodes", len(c.Nodes))
				return err
			}
			var re *readyError
			if errors.As(lastErr, &re) {
				lastRaw, _ = json.Marshal(sts[re.node])
			}
		}
		select {
		case <-ctx.Done():
			msg := fmt.Sprintf("demo cluster not ready after %s: %v", timeout, lastErr)
			if lastRaw != nil {
				msg += "; last status: " + string(lastRaw)
			}
			return errors.New(msg)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// readyError says what node saw that is not ready yet.
type readyError struct {
	node string
	msg  string
}

func (e *readyError) Error() string { return "node " + e.node + ": " + e.msg }

// checkReady decides from one status per node whether the cluster has
// converged (see WaitReady).
func checkReady(names []string, sts map[string]*api.Status) error {
	own := map[string]netip.Prefix{}
	owner := map[netip.Prefix]string{}
	for _, name := range names {
		st := sts[name]
		if st == nil {
			return &readyError{name, "no status"}
		}
		if st.Node.Name != name {
			return &readyError{name, fmt.Sprintf("reports itself as %q", st.Node.Name)}
		}
		p, err := netip.ParsePrefix(st.Node.Subnet)
		if err != nil {
			msg := "has no subnet yet"
			if st.Node.SubnetErr != "" {
				msg += " (" + st.Node.SubnetErr + ")"
			}
			return &readyError{name, msg}
		}
		if o, dup := owner[p]; dup {
			return &readyError{name, fmt.Sprintf("has subnet %s, like node %s", p, o)}
		}
		own[name], owner[p] = p, name
	}
	for _, name := range names {
		st := sts[name]
		seen := map[string]api.MemberStatus{}
		for _, m := range st.Members {
			seen[m.Name] = m
			if m.State == "alive" && !slices.Contains(names, m.Name) {
				return &readyError{name, fmt.Sprintf("sees unknown member %s alive", m.Name)}
			}
		}
		for _, other := range names {
			m, ok := seen[other]
			if !ok {
				return &readyError{name, "does not see member " + other}
			}
			if m.State != "alive" {
				return &readyError{name, fmt.Sprintf("sees member %s %s", other, m.State)}
			}
			if m.Subnet != own[other].String() {
				return &readyError{name, fmt.Sprintf("sees subnet %q for member %s, which has %s", m.Subnet, other, own[other])}
			}
		}
	}
	return nil
}
