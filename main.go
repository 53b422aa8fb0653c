// Command netloom is the netloom agent, its CLI and its CNI plugin in one
// binary. This file only parses the command line; the work is in node/.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/netloom/netloom/mesh"
	"github.com/netloom/netloom/mesh/wg"
	"github.com/netloom/netloom/node"
	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/cni"
	"github.com/netloom/netloom/systemd"
	"github.com/urfave/cli/v2"
	"sigs.k8s.io/yaml"
)

func main() {
	// The same binary is the CNI plugin: the runtime calls it with
	// CNI_COMMAND in the environment.
	if os.Getenv("CNI_COMMAND") != "" {
		cni.Main()
		return
	}
	app := newApp()
	if err := app.Run(interspersed(app, os.Args)); err != nil {
		fmt.Fprintln(os.Stderr, "netloom: "+oneLine(err.Error()))
		os.Exit(1)
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func env(name string) []string { return []string{"NETLOOM_" + name} }

var (
	socketFlag = &cli.StringFlag{Name: "socket", Value: api.DefaultSocket, EnvVars: env("SOCKET"), Usage: "the agent's API socket"}
	outputFlag = &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output format: json or yaml (default: a table)"}
)

func newApp() *cli.App {
	return &cli.App{
		Name:    "netloom",
		Usage:   "pod network, subnet agreement, load balancing and network policy for bare-metal clusters, in one binary",
		Version: node.Version,
		Flags:   logFlags(),
		Commands: []*cli.Command{
			initCommand(), agentCommand(), joinCommand(), leaveCommand(), statusCommand(),
			applyCommand(), deleteCommand(), getCommand(), installCommand(), uninstallCommand(),
			eventsCommand(), policyCommand(), demoCommand(), companionCommand(), k8sCommand(),
		},
	}
}

// logFlags are accepted before the command and by the commands that log.
func logFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: env("LOG_FORMAT"), Usage: "log format: text or json"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: env("LOG_LEVEL"), Usage: "log level: debug, info, warn, error"},
	}
}

func logger(c *cli.Context) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", c.String("log-level"))
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.String("log-format") {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", c.String("log-format"))
}

func initCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "create a new cluster secret and print its join token (last line of output)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Value: "/var/lib/netloom", EnvVars: env("DATA_DIR")},
		},
		Action: func(c *cli.Context) error {
			secret, created, err := node.InitSecret(c.String("data-dir"))
			if err != nil {
				return err
			}
			if created {
				fmt.Printf("created a new cluster secret in %s\n", c.String("data-dir"))
			} else {
				fmt.Printf("%s already holds a cluster secret; its token is below\n", c.String("data-dir"))
			}
			fmt.Println("start the agent here with 'netloom agent', and on other hosts with:")
			fmt.Println("  netloom agent --token <token> --join <this host's address>")
			fmt.Println(node.Token(secret))
			return nil
		},
	}
}

func agentFlags() []cli.Flag {
	host, _ := os.Hostname()
	t := mesh.DefaultTimers()
	return append(logFlags(),
		&cli.StringFlag{Name: "config", EnvVars: env("CONFIG"), Usage: "YAML file with any of these flags as keys (flags and environment win)"},
		&cli.StringFlag{Name: "name", Value: host, EnvVars: env("NAME"), Usage: "node name, unique in the cluster"},
		&cli.StringFlag{Name: "data-dir", Value: "/var/lib/netloom", EnvVars: env("DATA_DIR")},
		socketFlag,
		&cli.StringFlag{Name: "run-dir", Value: "/run/netloom", EnvVars: env("RUN_DIR"), Usage: "runtime files (the userspace WireGuard companion's pid and log)"},
		&cli.StringFlag{Name: "advertise-addr", EnvVars: env("ADVERTISE_ADDR"), Usage: "address other nodes reach this one at (default: the address of the interface holding the default route)"},
		&cli.IntFlag{Name: "gossip-port", Value: 7946, EnvVars: env("GOSSIP_PORT")},
		&cli.IntFlag{Name: "wg-port", Value: 51820, EnvVars: env("WG_PORT")},
		&cli.StringFlag{Name: "wg-iface", Value: "netloom0", EnvVars: env("WG_IFACE")},
		&cli.StringFlag{Name: "bridge", Value: "netloom-br0", EnvVars: env("BRIDGE"), Usage: "the pod bridge"},
		&cli.StringFlag{Name: "cluster-cidr", Value: "10.244.0.0/16", EnvVars: env("CLUSTER_CIDR")},
		&cli.StringFlag{Name: "service-cidr", Value: "10.96.0.0/16", EnvVars: env("SERVICE_CIDR"), Usage: "ClusterIPs of services"},
		&cli.StringFlag{Name: "service-node-port-range", Value: "30000-32767", EnvVars: env("SERVICE_NODE_PORT_RANGE"), Usage: "where nodePorts and healthCheckNodePorts come from (the same on every node)"},
		&cli.StringSliceFlag{Name: "nodeport-addresses", Value: cli.NewStringSlice("primary"), EnvVars: env("NODEPORT_ADDRESSES"), Usage: "where nodePorts are served: IPv4 CIDRs, primary (the advertise address's interface) or all"},
		&cli.IntFlag{Name: "node-mask", Value: 24, EnvVars: env("NODE_MASK")},
		&cli.StringSliceFlag{Name: "join", EnvVars: env("JOIN"), Usage: "host[:port] of members to join (comma separated)"},
		&cli.StringFlag{Name: "token", EnvVars: env("TOKEN"), Usage: "the cluster's join token (from 'netloom init')"},
		&cli.StringFlag{Name: "token-file", EnvVars: env("TOKEN_FILE")},
		&cli.StringFlag{Name: "wireguard", Value: "auto", EnvVars: env("WIREGUARD"), Usage: "auto, kernel or userspace"},
		&cli.IntFlag{Name: "wg-procs", EnvVars: env("WG_PROCS"), Usage: "userspace WireGuard: CPUs its companion encrypts on at once (0: half the CPUs, at least 1; takes effect when the companion next starts)"},
		&cli.DurationFlag{Name: "keepalive", Value: 25 * time.Second, EnvVars: env("KEEPALIVE"), Usage: "WireGuard persistent keepalive: keeps NAT mappings open, and makes a re-added peer shake hands at once; 0 = off"},
		&cli.DurationFlag{Name: "vip-drain-timeout", Value: 30 * time.Second, EnvVars: env("VIP_DRAIN_TIMEOUT"), Usage: "when a VIP moves gracefully (leave, restart, Local endpoints gone), how long the new owner forwards connections the old owner still carries, and how long a leaving node waits for them to end (0: off)"},
		&cli.DurationFlag{Name: "garp-interval", EnvVars: env("GARP_INTERVAL"), Usage: "keep repeating gratuitous ARP for owned VIPs at this interval (0: only a burst on takeover)"},
		&cli.BoolFlag{Name: "policy-log-drops", EnvVars: env("POLICY_LOG_DROPS"), Usage: "log packets NetworkPolicy drops (kernel log, 5/s per class, prefix netloom-pol)"},
		&cli.DurationFlag{Name: "resync-interval", Value: 30 * time.Second, EnvVars: env("RESYNC_INTERVAL"), Usage: "how often to re-read the kernel state netloom owns (nftables table, WireGuard peers, routes, pod bridge) and restore what someone changed"},
		&cli.DurationFlag{Name: "peer-grace", Value: 15 * time.Second, EnvVars: env("PEER_GRACE"), Usage: "how long a member that stopped answering keeps its WireGuard peer and route, so that an agent restart loses no pod traffic (0: drop at once)"},
		&cli.DurationFlag{Name: "subnet-grace", Value: 24 * time.Hour, EnvVars: env("SUBNET_GRACE"), Usage: "how long a node that died without leaving keeps its subnet"},
		&cli.DurationFlag{Name: "probe-interval", Value: t.ProbeInterval, EnvVars: env("PROBE_INTERVAL"), Usage: "gossip failure-detection probe interval"},
		&cli.DurationFlag{Name: "probe-timeout", Value: t.ProbeTimeout, EnvVars: env("PROBE_TIMEOUT")},
		&cli.IntFlag{Name: "suspicion-mult", Value: t.SuspicionMult, EnvVars: env("SUSPICION_MULT"), Usage: "suspicion timeout in probe intervals (scaled by log of cluster size)"},
		&cli.DurationFlag{Name: "gossip-interval", Value: t.GossipInterval, EnvVars: env("GOSSIP_INTERVAL")},
		&cli.DurationFlag{Name: "push-pull-interval", Value: t.PushPullInterval, EnvVars: env("PUSH_PULL_INTERVAL")},
		&cli.StringFlag{Name: "ui-addr", Value: "127.0.0.1:7947", EnvVars: env("UI_ADDR"), Usage: "dashboard and /metrics (host:port; empty turns them off); a non-loopback address asks for the cluster token"},
		&cli.StringFlag{Name: "kubeconfig", EnvVars: env("KUBECONFIG"), Usage: "Kubernetes mode: pods, namespaces, services and policies come from this API server (a kubeconfig for netloom's ServiceAccount; see 'netloom k8s manifests'); --name must be the Node's name"},
		&cli.StringFlag{Name: "cni-conflist", EnvVars: env("CNI_CONFLIST"), Usage: "write the CNI conflist here once the pod network is up, and remove it on leave (what 'netloom install --kubernetes' sets: a kubelet keeps the node NotReady until then)"},
		&cli.StringFlag{Name: "service-proxy", Value: "replace", EnvVars: env("SERVICE_PROXY"), Usage: "Kubernetes mode: replace (no kube-proxy: netloom proxies every service), labelled (only services labelled service.kubernetes.io/service-proxy-name=netloom; others get VIPs only) or off"},
	)
}

// loadConfigFile sets, from the YAML file named by --config, every flag the
// command line and the environment left unset.
func loadConfigFile(c *cli.Context) error {
	path := c.String("config")
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read --config: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	known := map[string]bool{}
	for _, f := range agentFlags() {
		known[f.Names()[0]] = true
	}
	for k, v := range m {
		if !known[k] || k == "config" {
			return fmt.Errorf("config file %s: unknown key %q (keys are the agent's flag names, e.g. cluster-cidr)", path, k)
		}
		if c.IsSet(k) {
			continue
		}
		var vals []string
		switch v := v.(type) {
		case []any:
			for _, x := range v {
				vals = append(vals, fmt.Sprint(x))
			}
		default:
			vals = []string{fmt.Sprint(v)}
		}
		for _, s := range vals {
			if err := c.Set(k, s); err != nil {
				return fmt.Errorf("config file %s: %s: %w", path, k, err)
			}
		}
	}
	return nil
}

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "run the netloom agent (the daemon systemd starts)",
		Flags: agentFlags(),
		Action: func(c *cli.Context) error {
			if err := loadConfigFile(c); err != nil {
				return err
			}
			log, err := logger(c)
			if err != nil {
				return err
			}
			agentGC()
			var join []string
			for _, j := range c.StringSlice("join") {
				join = append(join, strings.Split(j, ",")...)
			}
			a, err := node.New(node.Config{
				Name: c.String("name"), DataDir: c.String("data-dir"), Socket: c.String("socket"), RunDir: c.String("run-dir"),
				AdvertiseAddr: c.String("advertise-addr"), GossipPort: c.Int("gossip-port"), WGPort: c.Int("wg-port"),
				WGIface: c.String("wg-iface"), Bridge: c.String("bridge"), ClusterCIDR: c.String("cluster-cidr"), ServiceCIDR: c.String("service-cidr"), GARPInterval: c.Duration("garp-interval"), VIPDrainTimeout: c.Duration("vip-drain-timeout"), PolicyLogDrops: c.Bool("policy-log-drops"),
				NodeMask: c.Int("node-mask"), Join: join, Token: c.String("token"), TokenFile: c.String("token-file"),
				WireGuard: c.String("wireguard"), WGProcs: c.Int("wg-procs"), Keepalive: c.Duration("keepalive"), PeerGrace: c.Duration("peer-grace"), ResyncInterval: c.Duration("resync-interval"), SubnetGrace: c.Duration("subnet-grace"),
				UIAddr: c.String("ui-addr"), NodePortRange: c.String("service-node-port-range"), NodePortAddresses: c.StringSlice("nodeport-addresses"),
				Kubeconfig: c.String("kubeconfig"), ServiceProxy: c.String("service-proxy"), CNIConflist: c.String("cni-conflist"),
				Timers: mesh.Timers{
					ProbeInterval: c.Duration("probe-interval"), ProbeTimeout: c.Duration("probe-timeout"),
					SuspicionMult: c.Int("suspicion-mult"), GossipInterval: c.Duration("gossip-interval"),
					PushPullInterval: c.Duration("push-pull-interval"),
				},
			}, log)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return a.Run(ctx)
		},
	}
}

// agentGCPercent is the agent's GOGC unless the environment sets one. The
// agent is a long-lived daemon on small boxes whose passes over thousands
// of objects make garbage in bursts; Go's default (100) lets the heap grow
// to twice what is live before it collects, and the resident memory keeps
// that peak. At 50 the heap grows by half: less memory for a little more
// collector CPU while objects change (BENCHMARKS.md section 5).
const agentGCPercent = 50

func agentGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(agentGCPercent)
	}
}

func client(c *cli.Context) *api.Client { return api.NewClient(c.String("socket")) }

func joinCommand() *cli.Command {
	return &cli.Command{
		Name:      "join",
		Usage:     "make the local agent join a cluster through a member's address",
		ArgsUsage: "ADDR[:PORT]...",
		Flags:     []cli.Flag{socketFlag},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return errors.New("join: give the address of a cluster member, e.g. netloom join 192.168.1.10")
			}
			var resp api.JoinResponse
			if err := client(c).Do(c.Context, "POST", api.PathJoin, api.JoinRequest{Addresses: c.Args().Slice()}, &resp); err != nil {
				return err
			}
			fmt.Printf("joined: %d member(s) contacted\n", resp.Contacted)
			return nil
		},
	}
}

func leaveCommand() *cli.Command {
	return &cli.Command{
		Name:  "leave",
		Usage: "leave the cluster: give back the subnet, remove netloom's links, routes and nftables table, stop the agent",
		Flags: []cli.Flag{socketFlag},
		Action: func(c *cli.Context) error {
			cl := client(c)
			var answer struct {
				DrainTimeout string `json:"drainTimeout"`
			}
			if err := cl.Do(c.Context, "POST", api.PathLeave, nil, &answer); err != nil {
				return err
			}
			// Wait for the agent to finish and close its socket: it first
			// waits for the connections it forwards to VIPs to end.
			wait := 30 * time.Second
			if d, err := time.ParseDuration(answer.DrainTimeout); err == nil && d > 0 {
				wait += d
				fmt.Printf("leaving: connections through this node to VIPs may take up to %s to end\n", d)
			}
			deadline := time.Now().Add(wait)
			for time.Now().Before(deadline) {
				if err := cl.Do(c.Context, "GET", api.PathStatus, nil, nil); errors.Is(err, api.ErrNotRunning) {
					fmt.Println("left the cluster")
					return nil
				}
				time.Sleep(200 * time.Millisecond)
			}
			return fmt.Errorf("leave: the agent is still running after %s; see its log", wait)
		},
	}
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show this node and the cluster's members",
		Flags: []cli.Flag{socketFlag, outputFlag},
		Action: func(c *cli.Context) error {
			var st api.Status
			if err := client(c).Do(c.Context, "GET", api.PathStatus, nil, &st); err != nil {
				return err
			}
			switch c.String("output") {
			case "json":
				return printJSON(os.Stdout, st)
			case "yaml":
				return printYAML(os.Stdout, st)
			case "":
				printStatus(os.Stdout, st)
				return nil
			}
			return fmt.Errorf("--output %q: use json or yaml", c.String("output"))
		},
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printYAML(w io.Writer, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func readManifest(c *cli.Context) (string, error) {
	f := c.String("filename")
	if f == "" {
		return "", errors.New("give the file with -f FILE (or -f - for standard input)")
	}
	var b []byte
	var err error
	if f == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(f)
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", f, err)
	}
	return string(b), nil
}

func manifestCommand(name, usage, path string) *cli.Command {
	return &cli.Command{
		Name:  name,
		Usage: usage,
		Flags: []cli.Flag{socketFlag, &cli.StringFlag{Name: "filename", Aliases: []string{"f"}, Usage: "YAML or JSON file, - for standard input"}},
		Action: func(c *cli.Context) error {
			m, err := readManifest(c)
			if err != nil {
				return err
			}
			var resp api.ApplyResponse
			if err := client(c).Do(c.Context, "POST", path, api.ApplyRequest{Manifest: m}, &resp); err != nil {
				return err
			}
			for _, r := range resp.Results {
				fmt.Println(r)
			}
			return nil
		},
	}
}

func applyCommand() *cli.Command {
	return manifestCommand("apply", "store the objects of a manifest file cluster-wide (all or nothing)", api.PathApply)
}

func deleteCommand() *cli.Command {
	return manifestCommand("delete", "delete the objects named in a manifest file", api.PathDelete)
}

func installCommand() *cli.Command {
	return &cli.Command{
		Name:  "install",
		Usage: "install the binary, the CNI config and the systemd unit",
		Flags: []cli.Flag{&cli.StringFlag{Name: "root", Value: "/", Usage: "install below this directory (for staging)"}, socketFlag,
			&cli.BoolFlag{Name: "kubernetes", Usage: "for a Kubernetes node: the agent writes the CNI conflist once its pod network is up (the kubelet keeps the node NotReady until then)"}},
		Action: func(c *cli.Context) error {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find own binary: %w", err)
			}
			if err := systemd.Install(c.String("root"), exe, systemd.InstallOptions{Socket: c.String("socket"), AgentWritesConflist: c.Bool("kubernetes")}); err != nil {
				return err
			}
			fmt.Printf("installed below %s; start with: systemctl enable --now netloom\n", c.String("root"))
			fmt.Println("for a Kubernetes cluster: 'netloom k8s manifests' (apply once) and 'netloom k8s kubeconfig' (the agents' kubeconfig)")
			return nil
		},
	}
}

func uninstallCommand() *cli.Command {
	return &cli.Command{
		Name:  "uninstall",
		Usage: "remove what install wrote (the data dir is kept)",
		Flags: []cli.Flag{&cli.StringFlag{Name: "root", Value: "/"}},
		Action: func(c *cli.Context) error {
			if err := systemd.Uninstall(c.String("root")); err != nil {
				return err
			}
			fmt.Printf("uninstalled from %s\n", c.String("root"))
			return nil
		},
	}
}

func companionCommand() *cli.Command {
	return &cli.Command{
		Name:   "wg-companion",
		Hidden: true,
		Usage:  "hold a userspace WireGuard device across agent restarts (started by the agent)",
		Flags: append(logFlags(),
			&cli.StringFlag{Name: "iface", Required: true},
			&cli.IntFlag{Name: "mtu", Value: 1420},
			&cli.StringFlag{Name: "run-dir", Value: "/run/netloom"},
			&cli.IntFlag{Name: "procs", Usage: "GOMAXPROCS (0: Go's default)"},
		),
		Action: func(c *cli.Context) error {
			log, err := logger(c)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return wg.RunCompanion(ctx, c.String("iface"), c.Int("mtu"), c.String("run-dir"), c.Int("procs"), log)
		},
	}
}
