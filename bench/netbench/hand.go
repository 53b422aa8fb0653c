package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The hand-built baselines copy the shape of the demo cluster (node/demo):
// a switch namespace with a bridge, two node namespaces on it by veth
// (eth0, 10.77.0.11 and .12/24, MTU 1500), and in each node a pod bridge
// (gateway .1 of the pod subnet, MTU 1420) with one pod namespace on it by
// veth (MTU 1420, default route via the gateway), as the netloom CNI
// plugin wires pods. Forwarding is on in the nodes. Only the path between
// the nodes differs:
//
//	plain:  a route to the other pod subnet via the other node's eth0
//	wggo:   the Debian wireguard-go on a TUN per node (MTU 1420), keys and
//	        peer set with wg, a route to the other pod subnet on it
//	wggo-mod: the same with wireguard-go built from the module version
//	        netloom embeds (go build golang.zx2c4.com/wireguard)
//	wggo-mod-sid: the same, started in a session of its own (setsid),
//	        as netloom's agent starts its companion and as a service
//	        manager starts daemons: the scheduler then weighs it apart
//	        from the pods' processes (autogroups), as it weighs netloom's
//	        companion
//	companion: the same with netloom's own engine process (netloom
//	        wg-companion), without an agent or nftables: what netloom's
//	        packaging of wireguard-go costs, apart from its node setup
const (
	podMTU = 1420
	wgPort = 51820
)

var (
	underlay = netip.MustParsePrefix("10.77.0.0/24")
	swAddr   = netip.MustParseAddr("10.77.0.1")
	nodeAddr = [2]netip.Addr{netip.MustParseAddr("10.77.0.11"), netip.MustParseAddr("10.77.0.12")}
	podNet   = [2]netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("10.244.2.0/24")}
)

// pair is two pods on two nodes, the thing iperf3 and ping run across.
type pair struct {
	name  string // configuration name in the tables
	pods  [2]string
	podIP [2]netip.Addr
	// wgPids are the processes doing the WireGuard work (for CPU time).
	wgPids []int
}

func addrIn(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	return a
}

// buildHand builds the baseline kind: "plain", or "wggo" / "wggo-mod"
// with the wireguard-go binary wgExe, or "companion" with wgExe the netloom
// binary.
func buildHand(ctx context.Context, e *env, kind, wgExe string) (*pair, error) {
	pre := e.id + "-" + kind
	sw := pre + "-sw"
	nodes := [2]string{pre + "-n1", pre + "-n2"}
	pods := [2]string{pre + "-n1-p1", pre + "-n2-p1"}
	bits := underlay.Bits()
	if err := e.addNS(ctx, sw); err != nil {
		return nil, err
	}
	steps := [][]string{
		{"-n", sw, "link", "add", "br0", "type", "bridge"},
		{"-n", sw, "addr", "add", netip.PrefixFrom(swAddr, bits).String(), "dev", "br0"},
		{"-n", sw, "link", "set", "br0", "up"},
	}
	for i := range 2 {
		if err := e.addNS(ctx, nodes[i]); err != nil {
			return nil, err
		}
		if err := e.addNS(ctx, pods[i]); err != nil {
			return nil, err
		}
		peer := fmt.Sprintf("node%d", i+1)
		gw := addrIn(podNet[i], 1)
		steps = append(steps,
			[]string{"-n", nodes[i], "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", sw},
			[]string{"-n", sw, "link", "set", peer, "master", "br0"},
			[]string{"-n", sw, "link", "set", peer, "up"},
			[]string{"-n", nodes[i], "addr", "add", netip.PrefixFrom(nodeAddr[i], bits).String(), "dev", "eth0"},
			[]string{"-n", nodes[i], "link", "set", "eth0", "up"},
			[]string{"-n", nodes[i], "route", "add", "default", "via", swAddr.String(), "dev", "eth0"},
			// the pod bridge and the pod, as the CNI plugin makes them
			[]string{"-n", nodes[i], "link", "add", "podbr0", "mtu", fmt.Sprint(podMTU), "type", "bridge"},
			[]string{"-n", nodes[i], "addr", "add", netip.PrefixFrom(gw, podNet[i].Bits()).String(), "dev", "podbr0"},
			[]string{"-n", nodes[i], "link", "set", "podbr0", "up"},
			[]string{"-n", nodes[i], "link", "add", "vpod1", "mtu", fmt.Sprint(podMTU), "type", "veth", "peer", "name", "eth0", "netns", pods[i]},
			[]string{"-n", nodes[i], "link", "set", "vpod1", "master", "podbr0"},
			[]string{"-n", nodes[i], "link", "set", "vpod1", "up"},
			[]string{"-n", pods[i], "link", "set", "eth0", "mtu", fmt.Sprint(podMTU)},
			[]string{"-n", pods[i], "addr", "add", netip.PrefixFrom(addrIn(podNet[i], 2), podNet[i].Bits()).String(), "dev", "eth0"},
			[]string{"-n", pods[i], "link", "set", "eth0", "up"},
			[]string{"-n", pods[i], "route", "add", "default", "via", gw.String()},
		)
	}
	for _, s := range steps {
		if err := e.ip(ctx, s...); err != nil {
			return nil, fmt.Errorf("build %s: %w", kind, err)
		}
	}
	for i := range 2 {
		if err := e.sysctl(ctx, nodes[i], "net.ipv4.ip_forward", "1"); err != nil {
			return nil, err
		}
	}
	p := &pair{name: kind, pods: pods, podIP: [2]netip.Addr{addrIn(podNet[0], 2), addrIn(podNet[1], 2)}}
	switch kind {
	case "plain":
		for i := range 2 {
			o := 1 - i
			if err := e.ip(ctx, "-n", nodes[i], "route", "add", podNet[o].String(), "via", nodeAddr[o].String(), "dev", "eth0"); err != nil {
				return nil, err
			}
		}
	case "wggo", "wggo-mod", "wggo-mod-sid", "companion":
		if err := wireWGGo(ctx, e, p, nodes, wgExe); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown baseline %q", kind)
	}
	return p, nil
}

// wireWGGo starts wireguard-go (exe) in both nodes and configures it
// with wg, the way a person would by hand.
func wireWGGo(ctx context.Context, e *env, p *pair, nodes [2]string, exe string) error {
	var keys [2]wgtypes.Key
	var ifaces [2]string
	for i := range 2 {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return err
		}
		keys[i] = k
		// unique on the machine: the UAPI socket path is global
		letter := map[string]string{"wggo": "w", "wggo-mod": "m", "wggo-mod-sid": "s", "companion": "c"}[p.name]
		ifaces[i] = fmt.Sprintf("%s%s%d", e.id, letter, i+1)
	}
	for i := range 2 {
		sock := filepath.Join("/var/run/wireguard", ifaces[i]+".sock")
		e.mu.Lock()
		e.sockets = append(e.sockets, sock)
		e.mu.Unlock()
		args := []string{exe, "-f", ifaces[i]}
		if p.name == "companion" {
			args = []string{exe, "wg-companion", "--iface", ifaces[i], "--mtu", fmt.Sprint(podMTU), "--run-dir", e.dir}
		}
		wp, err := e.startIn(nodes[i], "wireguard-go "+ifaces[i], p.name == "wggo-mod-sid", []string{"WG_PROCESS_FOREGROUND=1", "LOG_LEVEL=error"}, args...)
		if err != nil {
			return err
		}
		p.wgPids = append(p.wgPids, wp.pid())
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			if !wp.running() || time.Now().After(deadline) {
				return fmt.Errorf("wireguard-go %s did not open %s (see its log in %s)", ifaces[i], sock, e.dir)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for i := range 2 {
		o := 1 - i
		keyFile := filepath.Join(e.dir, ifaces[i]+".key")
		if err := os.WriteFile(keyFile, []byte(keys[i].String()+"\n"), 0o600); err != nil {
			return err
		}
		if _, err := e.exec(ctx, nodes[i], "wg", "set", ifaces[i], "listen-port", fmt.Sprint(wgPort), "private-key", keyFile,
			"peer", keys[o].PublicKey().String(), "allowed-ips", podNet[o].String(),
			"endpoint", netip.AddrPortFrom(nodeAddr[o], wgPort).String()); err != nil {
			return err
		}
		for _, s := range [][]string{
			{"-n", nodes[i], "link", "set", ifaces[i], "mtu", fmt.Sprint(podMTU), "up"},
			{"-n", nodes[i], "route", "add", podNet[o].String(), "dev", ifaces[i]},
		} {
			if err := e.ip(ctx, s...); err != nil {
				return err
			}
		}
	}
	return nil
}
