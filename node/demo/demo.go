package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// Defaults of Options.
const (
	DefaultPrefix      = "nl-demo"
	DefaultNodes       = 3
	DefaultPodsPerNode = 2
	DefaultStateDir    = "/run/netloom-demo"
	DefaultGossipPort  = 7946
	DefaultWGPort      = 51820
	DefaultNodeMask    = 24
	DefaultWireGuard   = "auto"
	DefaultLogFormat   = "text"
)

// StateFile is the name of the state file inside the state directory.
const StateFile = "cluster.json"

// NetnsDir is where `ip netns` keeps its named namespaces.
const NetnsDir = "/var/run/netns"

// Bridge is the name of the bridge in the switch namespace.
const Bridge = "br0"

var (
	defaultUnderlay    = netip.MustParsePrefix("10.77.0.0/24")
	defaultClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	prefixRE           = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
)

// Options describe the cluster to build. The zero value of a field means its
// default.
type Options struct {
	// Prefix of every namespace name (default "nl-demo").
	Prefix string `json:"prefix"`
	// Nodes is the number of nodes, named node1..nodeN (default 3).
	Nodes int `json:"nodes"`
	// PodsPerNode is the number of pods AddPods adds to each node (default 2;
	// a negative value means none).
	PodsPerNode int `json:"podsPerNode"`
	// Exe is the netloom binary run for init, agent, status, leave and as the
	// CNI plugin. A name without a slash is looked up in PATH; Build turns it
	// into an absolute path.
	Exe string `json:"exe"`
	// DisplayExe is the binary as the user invoked it, shown by Describe
	// (default: Exe as given).
	DisplayExe string `json:"displayExe"`
	// StateDir holds the state file and every node's directories (default
	// /run/netloom-demo).
	StateDir string `json:"stateDir"`
	// Underlay is the L2 segment of the nodes (default 10.77.0.0/24): the
	// bridge gets the first address, node i the address 10+i.
	Underlay netip.Prefix `json:"underlay"`
	// ClusterCIDR is passed to the agents (default 10.244.0.0/16).
	ClusterCIDR netip.Prefix `json:"clusterCIDR"`
	// NodeMask is the prefix length of node subnets (default 24).
	NodeMask int `json:"nodeMask"`
	// Token is the join token; empty means StartAgents runs `netloom init`.
	Token string `json:"-"`
	// GossipPort and WGPort are passed to every agent (default 7946, 51820).
	GossipPort int `json:"gossipPort"`
	WGPort     int `json:"wgPort"`
	// WireGuard is the --wireguard mode: auto, kernel or userspace (default auto).
	WireGuard string `json:"wireguard"`
	// LogFormat is the agents' --log-format (default text).
	LogFormat string `json:"logFormat"`
	// NodeSysctls are written in every node namespace at Build, keys as
	// "net.ipv4.ip_forward" or "net/ipv4/ip_forward" (default none: a new
	// namespace starts with forwarding off, as a host may).
	NodeSysctls map[string]string `json:"nodeSysctls,omitempty"`
	// ExtraAgentArgs are appended to every agent's command line.
	ExtraAgentArgs []string `json:"extraAgentArgs,omitempty"`
	// Log receives structured progress and diagnostics (default: discarded).
	Log *slog.Logger `json:"-"`
	// Stdout, when not nil, receives short human progress lines.
	Stdout io.Writer `json:"-"`
}

func (o *Options) setDefaults() error {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Nodes == 0 {
		o.Nodes = DefaultNodes
	}
	if o.PodsPerNode == 0 {
		o.PodsPerNode = DefaultPodsPerNode
	}
	if o.PodsPerNode < 0 {
		o.PodsPerNode = 0
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if !o.Underlay.IsValid() {
		o.Underlay = defaultUnderlay
	}
	if !o.ClusterCIDR.IsValid() {
		o.ClusterCIDR = defaultClusterCIDR
	}
	if o.NodeMask == 0 {
		o.NodeMask = DefaultNodeMask
	}
	if o.GossipPort == 0 {
		o.GossipPort = DefaultGossipPort
	}
	if o.WGPort == 0 {
		o.WGPort = DefaultWGPort
	}
	if o.WireGuard == "" {
		o.WireGuard = DefaultWireGuard
	}
	if o.LogFormat == "" {
		o.LogFormat = DefaultLogFormat
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.DisplayExe == "" {
		o.DisplayExe = o.Exe
	}
	if o.DisplayExe == "" {
		o.DisplayExe = "netloom"
	}
	if o.Exe != "" {
		exe, err := resolveExe(o.Exe)
		if err != nil {
			return err
		}
		o.Exe = exe
	}
	abs, err := filepath.Abs(o.StateDir)
	if err != nil {
		return fmt.Errorf("demo state directory %s: %w", o.StateDir, err)
	}
	o.StateDir = abs
	return o.validate()
}

func (o *Options) validate() error {
	if len(o.Prefix) > 32 || !prefixRE.MatchString(o.Prefix) {
		return fmt.Errorf("demo prefix %q is not valid: use up to 32 letters, digits, '-', '_' or '.'", o.Prefix)
	}
	if o.Nodes < 1 || o.Nodes > 200 {
		return fmt.Errorf("demo with %d nodes is not possible: use 1 to 200 nodes", o.Nodes)
	}
	if _, err := underlayAddr(o.Underlay, 0); err != nil {
		return err
	}
	if _, err := underlayAddr(o.Underlay, o.Nodes); err != nil {
		return err
	}
	if !o.ClusterCIDR.IsValid() || o.NodeMask < o.ClusterCIDR.Bits() || o.NodeMask > o.ClusterCIDR.Addr().BitLen() {
		return fmt.Errorf("demo node mask /%d does not fit cluster CIDR %s", o.NodeMask, o.ClusterCIDR)
	}
	if o.ClusterCIDR.Overlaps(o.Underlay) {
		return fmt.Errorf("demo underlay %s overlaps cluster CIDR %s: pick another underlay", o.Underlay, o.ClusterCIDR)
	}
	for i := 1; i <= o.Nodes; i++ {
		if n := wgIfaceName(o.Prefix, nodeName(i)); len(n) > 15 {
			return fmt.Errorf("demo WireGuard interface name %q is longer than 15 characters: use fewer nodes", n)
		}
		if s := filepath.Join(o.StateDir, nodeName(i), "netloom.sock"); len(s) > 107 {
			return fmt.Errorf("demo socket path %s is too long for a unix socket: use a shorter state directory", s)
		}
	}
	return nil
}

func resolveExe(exe string) (string, error) {
	p, err := exec.LookPath(exe)
	if err != nil {
		return "", fmt.Errorf("find netloom binary %q: %w", exe, err)
	}
	p, err = filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("find netloom binary %q: %w", exe, err)
	}
	return p, nil
}

// Cluster is a demo cluster: its namespaces, nodes, agents and pods.
type Cluster struct {
	Opts Options `json:"options"`
	// Switch is the name of the switch namespace holding the bridge.
	Switch string `json:"switch"`
	// SwitchAddr is the bridge's address, the nodes' default gateway.
	SwitchAddr netip.Addr `json:"switchAddr"`
	Nodes      []*Node    `json:"nodes"`
	// Token is the join token the agents were started with.
	Token string `json:"token,omitempty"`

	// Namespaces created so far, in order of creation; only these are
	// ever deleted.
	Namespaces []string `json:"namespaces"`
	// Pods and Procs as recorded; Node.Pods hold the same *Pod values.
	PodList []*Pod     `json:"pods"`
	Procs   []*Process `json:"processes"`

	mu sync.Mutex
	// dashboard is the host URL of a node's dashboard (ForwardDashboard),
	// served by this process only, so it is not recorded.
	dashboard, dashboardNode string
}

// Node is one node of the cluster.
type Node struct {
	Name    string     `json:"name"`
	NS      string     `json:"netns"`
	Addr    netip.Addr `json:"addr"` // underlay address of eth0
	Socket  string     `json:"socket"`
	DataDir string     `json:"dataDir"`
	RunDir  string     `json:"runDir"`
	WGIface string     `json:"wgIface"`
	LogPath string     `json:"log"` // the agent's stdout and stderr (appended)
	// ExtraArgs are appended to this node's agent command line after
	// Options.ExtraAgentArgs.
	ExtraArgs []string `json:"extraArgs,omitempty"`
	// Agent is the running (or last started) agent process, nil before
	// the first start.
	Agent *Process `json:"agent,omitempty"`
	// Subnet as the node last reported it in WaitReady.
	Subnet netip.Prefix `json:"subnet"`
	Pods   []*Pod       `json:"-"`
}

// Pod is one pod: a network namespace wired by the CNI plugin.
type Pod struct {
	Name        string     `json:"name"`      // k8s pod name, e.g. node1-p1
	Namespace   string     `json:"namespace"` // k8s namespace, "default"
	NS          string     `json:"netns"`     // network namespace name
	Node        string     `json:"node"`
	ContainerID string     `json:"containerID"`
	IP          netip.Addr `json:"ip"`
	// UID is the pod's Kubernetes UID, for a pod of the API server.
	UID string `json:"uid,omitempty"`
}

// Netns is the path of the pod's network namespace (CNI_NETNS).
func (p *Pod) Netns() string { return filepath.Join(NetnsDir, p.NS) }

// sysctlPath turns "net.ipv4.ip_forward" into "net/ipv4/ip_forward".
func sysctlPath(key string) string {
	if strings.Contains(key, "/") {
		return strings.TrimPrefix(key, "/proc/sys/")
	}
	return strings.ReplaceAll(key, ".", "/")
}

func nodeName(i int) string { return fmt.Sprintf("node%d", i) }

// wgIfaceName gives the WireGuard interface of a node. The default prefix
// gets readable names (nlwg-node1); any other prefix a short hash of it, so
// that clusters built side by side (tests) never share a UAPI socket path.
func wgIfaceName(prefix, node string) string {
	if prefix == DefaultPrefix {
		return "nlwg-" + node
	}
	h := fnv.New32a()
	h.Write([]byte(prefix))
	return fmt.Sprintf("wg%05x-%s", h.Sum32()&0xfffff, node)
}

// underlayAddr is the bridge address for i == 0 and node i's address else.
func underlayAddr(p netip.Prefix, i int) (netip.Addr, error) {
	if !p.IsValid() {
		return netip.Addr{}, errors.New("demo underlay prefix is not set")
	}
	a := p.Masked().Addr()
	n := 1
	if i > 0 {
		n = 10 + i
	}
	for range n {
		a = a.Next()
	}
	last := a.Next()
	if !a.IsValid() || !p.Contains(a) || (a.Is4() && !p.Contains(last)) {
		return netip.Addr{}, fmt.Errorf("demo underlay %s is too small for %d nodes: use a /24 or larger", p, i)
	}
	return a, nil
}

// Node returns the node with the given name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Pods returns all pods, node by node.
func (c *Cluster) Pods() []*Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Pod(nil), c.PodList...)
}

// Build creates the switch namespace with its bridge and one namespace per
// node, wired to the bridge, and records them in StateDir/cluster.json. It
// refuses to reuse a namespace that exists already. On failure it removes what
// it created.
func Build(ctx context.Context, opts Options) (*Cluster, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	o := opts
	c := &Cluster{Opts: o, Switch: o.Prefix + "-sw"}
	c.SwitchAddr, _ = underlayAddr(o.Underlay, 0)
	for i := 1; i <= o.Nodes; i++ {
		name := nodeName(i)
		dir := filepath.Join(o.StateDir, name)
		addr, _ := underlayAddr(o.Underlay, i)
		c.Nodes = append(c.Nodes, &Node{
			Name:    name,
			NS:      o.Prefix + "-" + name,
			Addr:    addr,
			Socket:  filepath.Join(dir, "netloom.sock"),
			DataDir: filepath.Join(dir, "data"),
			RunDir:  filepath.Join(dir, "run"),
			WGIface: wgIfaceName(o.Prefix, name),
			LogPath: filepath.Join(dir, "agent.log"),
		})
	}
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create demo state directory: %w", err)
	}
	if _, err := os.Stat(c.statePath()); err == nil {
		return nil, fmt.Errorf("a demo cluster already exists (state in %s): remove it with '%s demo --down' first", c.statePath(), o.DisplayExe)
	}
	for _, n := range c.Nodes {
		for _, d := range []string{n.DataDir, n.RunDir} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return nil, fmt.Errorf("create demo directory: %w", err)
			}
		}
	}
	c.mu.Lock()
	err := c.saveLocked()
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := c.build(ctx); err != nil {
		return nil, errors.Join(err, c.Down())
	}
	c.say("built %d nodes on switch %s (%s)", len(c.Nodes), c.Switch, o.Underlay)
	return c, nil
}

func (c *Cluster) build(ctx context.Context) error {
	o := c.Opts
	bits := o.Underlay.Bits()
	sw := c.Switch
	if err := c.addNetns(ctx, sw); err != nil {
		return err
	}
	if err := writeSysctl(sw, "net/ipv4/ip_forward", "0"); err != nil {
		return err
	}
	if err := ipRun(ctx, "-n", sw, "link", "add", Bridge, "type", "bridge"); err != nil {
		return err
	}
	if err := ipRun(ctx, "-n", sw, "addr", "add", netip.PrefixFrom(c.SwitchAddr, bits).String(), "dev", Bridge); err != nil {
		return err
	}
	if err := ipRun(ctx, "-n", sw, "link", "set", Bridge, "up"); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		if err := c.addNetns(ctx, n.NS); err != nil {
			return err
		}
		steps := [][]string{
			// created inside the node namespace, the peer moved to the switch
			{"-n", n.NS, "link", "add", "eth0", "type", "veth", "peer", "name", n.Name, "netns", sw},
			{"-n", sw, "link", "set", n.Name, "master", Bridge},
			{"-n", sw, "link", "set", n.Name, "up"},
			{"-n", n.NS, "addr", "add", netip.PrefixFrom(n.Addr, bits).String(), "dev", "eth0"},
			{"-n", n.NS, "link", "set", "eth0", "up"},
			{"-n", n.NS, "route", "add", "default", "via", c.SwitchAddr.String(), "dev", "eth0"},
		}
		for _, s := range steps {
			if err := ipRun(ctx, s...); err != nil {
				return fmt.Errorf("wire node %s: %w", n.Name, err)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(o.NodeSysctls)) {
			if err := writeSysctl(n.NS, sysctlPath(k), o.NodeSysctls[k]); err != nil {
				return err
			}
		}
		c.Opts.Log.Debug("node namespace ready", "node", n.Name, "netns", n.NS, "addr", n.Addr)
	}
	return nil
}

// addNetns creates a named namespace with lo up and records it. A namespace
// that exists already is an error and is not recorded.
func (c *Cluster) addNetns(ctx context.Context, name string) error {
	if _, err := os.Stat(filepath.Join(NetnsDir, name)); err == nil {
		return fmt.Errorf("network namespace %s exists already: remove the old demo with '%s demo --down' or pick another prefix", name, c.Opts.DisplayExe)
	}
	if err := ipRun(ctx, "netns", "add", name); err != nil {
		return err
	}
	c.mu.Lock()
	c.Namespaces = append(c.Namespaces, name)
	err := c.saveLocked()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return ipRun(ctx, "-n", name, "link", "set", "lo", "up")
}

func (c *Cluster) statePath() string { return filepath.Join(c.Opts.StateDir, StateFile) }

// saveLocked writes the state file atomically. c.mu must be held.
func (c *Cluster) saveLocked() error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode demo state: %w", err)
	}
	path := c.statePath()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write demo state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write demo state: %w", err)
	}
	return nil
}

func (c *Cluster) save() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.saveLocked()
}

// Load reads the cluster recorded in stateDir/cluster.json. Processes are
// known by pid only (no exec.Cmd). A missing state file gives an error
// wrapping fs.ErrNotExist. log may be nil.
func Load(stateDir string, log *slog.Logger) (*Cluster, error) {
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		return nil, fmt.Errorf("demo state directory %s: %w", stateDir, err)
	}
	path := filepath.Join(abs, StateFile)
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no demo cluster recorded in %s: %w", abs, err)
		}
		return nil, fmt.Errorf("read demo state: %w", err)
	}
	c := &Cluster{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, fmt.Errorf("read demo state %s: %w", path, err)
	}
	c.Opts.StateDir = abs
	c.Opts.Log = log
	if c.Opts.Log == nil {
		c.Opts.Log = slog.New(slog.DiscardHandler)
	}
	for _, p := range c.PodList {
		if n := c.Node(p.Node); n != nil {
			n.Pods = append(n.Pods, p)
		}
	}
	return c, nil
}

func (c *Cluster) say(format string, args ...any) {
	if c.Opts.Stdout != nil {
		fmt.Fprintf(c.Opts.Stdout, format+"\n", args...)
	}
}
