package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/demo"
)

// Addresses on the demo underlay 10.77.0.0/24 (bridge .1, nodes .11-.13).
var (
	clientAddr = netip.MustParseAddr("10.77.0.100")
	poolRange  = "10.77.0.200-10.77.0.210"
)

const serverPort = 8080

// bench is one demo cluster with a client namespace and servers in its pods.
type bench struct {
	c        *demo.Cluster
	clientNS string
	macs     map[string]string // node -> eth0 MAC
	log      *slog.Logger

	mu      sync.Mutex
	closers []func()
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// newBench builds and starts an o.nodes-node cluster (2 pods per node) with the
// given extra agent flags, a client namespace on the switch and a TCP
// server on serverPort in every pod. close removes all of it.
func newBench(ctx context.Context, o options, dir string, log *slog.Logger, name string, extra []string) (*bench, error) {
	return newBenchFmt(ctx, o, dir, log, name, extra, "")
}

// newBenchFmt is newBench with the agents' --log-format (empty: text).
func newBenchFmt(ctx context.Context, o options, dir string, log *slog.Logger, name string, extra []string, logFormat string) (*bench, error) {
	prefix := "nlf" + randHex(2)
	state := filepath.Join(dir, name)
	c, err := demo.Build(ctx, demo.Options{Prefix: prefix, Nodes: o.nodes, PodsPerNode: 2, Exe: o.exe, StateDir: state,
		ExtraAgentArgs: extra, LogFormat: logFormat, Log: log})
	if err != nil {
		return nil, err
	}
	b := &bench{c: c, log: log, macs: map[string]string{}}
	ok := false
	defer func() {
		if !ok {
			b.close()
		}
	}()
	if err := c.StartAgents(ctx); err != nil {
		return nil, err
	}
	if err := c.WaitReady(ctx, 90*time.Second); err != nil {
		return nil, err
	}
	if err := c.AddPods(ctx); err != nil {
		return nil, err
	}
	for _, n := range c.Nodes {
		mac, err := macOf(n.NS, "eth0")
		if err != nil {
			return nil, err
		}
		b.macs[n.Name] = mac
	}
	if err := b.addClient(ctx); err != nil {
		return nil, err
	}
	for _, p := range c.Pods() {
		if err := b.serve(p); err != nil {
			return nil, err
		}
	}
	ok = true
	return b, nil
}

// close stops the servers, removes the client namespace and the cluster.
func (b *bench) close() error {
	b.mu.Lock()
	cl := b.closers
	b.closers = nil
	b.mu.Unlock()
	for i := len(cl) - 1; i >= 0; i-- {
		cl[i]()
	}
	var errs []error
	if b.clientNS != "" {
		if out, err := exec.Command("ip", "netns", "delete", b.clientNS).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns delete %s: %v: %s", b.clientNS, err, out))
		}
	}
	errs = append(errs, b.c.Down())
	return errors.Join(errs...)
}

func (b *bench) onClose(f func()) {
	b.mu.Lock()
	b.closers = append(b.closers, f)
	b.mu.Unlock()
}

// addClient creates <prefix>-cl, a host on the switch's bridge that is not
// a node.
func (b *bench) addClient(ctx context.Context) error {
	ns := b.c.Opts.Prefix + "-cl"
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %v: %s", ns, err, out)
	}
	b.clientNS = ns
	for _, s := range [][]string{
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "cl", "netns", b.c.Switch},
		{"-n", b.c.Switch, "link", "set", "cl", "master", demo.Bridge},
		{"-n", b.c.Switch, "link", "set", "cl", "up"},
		{"-n", ns, "addr", "add", netip.PrefixFrom(clientAddr, 24).String(), "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
	} {
		if out, err := exec.CommandContext(ctx, "ip", s...).CombinedOutput(); err != nil {
			return fmt.Errorf("client: ip %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := demo.PingContext(ctx, ns, b.c.SwitchAddr)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("client does not reach the switch: %w", err)
		}
	}
}

// serve runs a TCP server on serverPort in pod p's namespace (in this
// process) that answers every connection with the pod's name and closes it
// once the client has: the client resets it (abort), so neither side keeps
// the connection in TIME_WAIT and fast loops do not run into reused ports.
func (b *bench) serve(p *demo.Pod) error {
	var ln net.Listener
	if err := demo.Do(p.NS, func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", serverPort))
		return err
	}); err != nil {
		return fmt.Errorf("server in pod %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.Write([]byte(p.Name + "\n"))
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	b.onClose(func() { ln.Close(); <-done })
	return nil
}

// apply runs `netloom apply -f` (or delete) with manifest on node n.
func (b *bench) apply(ctx context.Context, n *demo.Node, verb, manifest string) error {
	f, err := os.CreateTemp(b.c.Opts.StateDir, "manifest-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(manifest); err != nil {
		return err
	}
	f.Close()
	if _, err := demo.ExecContext(ctx, n.NS, b.c.Opts.Exe, verb, "--socket", n.Socket, "-f", f.Name()); err != nil {
		return fmt.Errorf("%s on %s: %w", verb, n.Name, err)
	}
	return nil
}

// podsManifest labels every pod app=web, plus extra labels by pod name.
func podsManifest(pods []*demo.Pod, extra map[string]string) string {
	var s strings.Builder
	for _, p := range pods {
		fmt.Fprintf(&s, "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n  labels:\n    app: web\n", p.Name, p.Namespace)
		if l := extra[p.Name]; l != "" {
			fmt.Fprintf(&s, "    %s\n", l)
		}
		s.WriteString("spec:\n  containers:\n  - name: c\n    image: none\n")
	}
	return s.String()
}

// service is a one-port TCP service manifest.
func service(name, typ, selector string, port, target int, local bool) string {
	s := fmt.Sprintf("---\napiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: default\nspec:\n  type: %s\n  selector:\n    %s\n  ports:\n  - protocol: TCP\n    port: %d\n    targetPort: %d\n",
		name, typ, selector, port, target)
	if local {
		s += "  externalTrafficPolicy: Local\n"
	}
	return s
}

const poolManifest = "apiVersion: netloom.io/v1alpha1\nkind: AddressPool\nmetadata:\n  name: lan\nspec:\n  addresses: [" + "10.77.0.200-10.77.0.210" + "]\n"

// vip waits until every node reports the same VIP and owner for service
// default/name (status -o json) and returns them. not, when set, is a node
// that must not be the owner (the survivors of a kill).
func (b *bench) vip(ctx context.Context, name string, nodes []*demo.Node, not string, timeout time.Duration) (netip.Addr, string, error) {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		var ip, owner string
		agreed := true
		for _, n := range nodes {
			st, err := b.c.Status(ctx, n)
			if err != nil {
				last, agreed = err.Error(), false
				break
			}
			v, ok := vipOf(st, "default/"+name)
			if !ok || v.Owner == "" || v.Owner == not || (ip != "" && (v.IP != ip || v.Owner != owner)) {
				last, agreed = fmt.Sprintf("%s sees %+v", n.Name, v), false
				break
			}
			ip, owner = v.IP, v.Owner
		}
		if agreed {
			a, err := netip.ParseAddr(ip)
			return a, owner, err
		}
		if time.Now().After(deadline) {
			return netip.Addr{}, "", fmt.Errorf("service %s: nodes do not agree on a VIP after %s: %s", name, timeout, last)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return netip.Addr{}, "", err
		}
	}
}

func vipOf(st *api.Status, svc string) (api.VIPStatus, bool) {
	for _, v := range st.VIPs {
		if v.Service == svc {
			return v, true
		}
	}
	return api.VIPStatus{}, false
}

func macOf(ns, iface string) (string, error) {
	out, err := demo.Exec(ns, "cat", "/sys/class/net/"+iface+"/address")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

// node returns the node called name.
func (b *bench) node(name string) *demo.Node { return b.c.Node(name) }

// others are the nodes other than name.
func (b *bench) others(name string) []*demo.Node {
	var out []*demo.Node
	for _, n := range b.c.Nodes {
		if n.Name != name {
			out = append(out, n)
		}
	}
	return out
}

// percentile of sorted durations (nearest rank).
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p*float64(len(s)) + 0.5)
	if i < 1 {
		i = 1
	}
	if i > len(s) {
		i = len(s)
	}
	return s[i-1]
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// abort closes c with a reset (SO_LINGER 0): no TIME_WAIT on either side.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
