package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"time"
)

// PodNamespace is the Kubernetes namespace of demo pods.
const PodNamespace = "default"

// AddPods adds Options.PodsPerNode pods to every node, named <node>-p<i>,
// each in network namespace <prefix>-<node>-p<i>. Pods that exist already
// are kept.
func (c *Cluster) AddPods(ctx context.Context) error {
	for _, n := range c.Nodes {
		for i := 1; i <= c.Opts.PodsPerNode; i++ {
			name := fmt.Sprintf("%s-p%d", n.Name, i)
			if c.Pod(name) != nil {
				continue
			}
			if _, err := c.AddPod(ctx, n, name); err != nil {
				return err
			}
		}
	}
	return nil
}

// Pod returns the pod with the given name, or nil.
func (c *Cluster) Pod(name string) *Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.PodList {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// AddPod creates network namespace <prefix>-<name> and runs the CNI ADD for
// it inside node n's namespace; Pod.IP is the first address of the result.
// On failure the namespace is removed again.
func (c *Cluster) AddPod(ctx context.Context, n *Node, name string) (*Pod, error) {
	if err := c.needExe(); err != nil {
		return nil, err
	}
	if c.Pod(name) != nil {
		return nil, fmt.Errorf("add pod %s: a pod of that name exists already", name)
	}
	p := &Pod{Name: name, Namespace: PodNamespace, NS: c.Opts.Prefix + "-" + name, Node: n.Name}
	p.ContainerID = p.NS
	if err := c.addNetns(ctx, p.NS); err != nil {
		return nil, fmt.Errorf("add pod %s: %w", name, err)
	}
	c.mu.Lock()
	c.PodList = append(c.PodList, p)
	n.Pods = append(n.Pods, p)
	err := c.saveLocked()
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	out, err := c.cni(ctx, "ADD", n, p)
	if err == nil {
		p.IP, err = parseCNIResult(out)
		if err != nil {
			err = fmt.Errorf("CNI ADD for pod %s on node %s: %w", name, n.Name, err)
		}
	}
	if err != nil {
		return nil, errors.Join(err, c.forgetPod(ctx, n, p, true))
	}
	if err := c.save(); err != nil {
		return nil, err
	}
	c.Opts.Log.Info("pod added", "pod", name, "node", n.Name, "netns", p.NS, "ip", p.IP)
	c.say("added pod %s on %s: %s", name, n.Name, p.IP)
	return p, nil
}

// DelPod runs the CNI DEL for p and removes its namespace.
func (c *Cluster) DelPod(ctx context.Context, p *Pod) error {
	n := c.Node(p.Node)
	if n == nil {
		return fmt.Errorf("delete pod %s: unknown node %s", p.Name, p.Node)
	}
	return c.forgetPod(ctx, n, p, false)
}

// forgetPod runs CNI DEL (ignoring its failure when quiet), deletes the pod's
// namespace and drops the record.
func (c *Cluster) forgetPod(ctx context.Context, n *Node, p *Pod, quiet bool) error {
	var errs []error
	if _, err := c.cni(ctx, "DEL", n, p); err != nil {
		if quiet {
			c.Opts.Log.Warn("CNI DEL failed", "pod", p.Name, "err", err)
		} else {
			errs = append(errs, err)
		}
	}
	if err := c.delNetns(ctx, p.NS); err != nil {
		errs = append(errs, err)
	}
	c.mu.Lock()
	c.PodList = slices.DeleteFunc(c.PodList, func(q *Pod) bool { return q == p })
	n.Pods = slices.DeleteFunc(n.Pods, func(q *Pod) bool { return q == p })
	if !netnsExists(p.NS) {
		c.Namespaces = slices.DeleteFunc(c.Namespaces, func(s string) bool { return s == p.NS })
	}
	errs = append(errs, c.saveLocked())
	c.mu.Unlock()
	return errors.Join(errs...)
}

// delNetns deletes a namespace this cluster created, if it still exists.
func (c *Cluster) delNetns(ctx context.Context, name string) error {
	if !c.ownsNetns(name) || !netnsExists(name) {
		return nil
	}
	if pids := netnsPids(name); len(pids) > 0 {
		c.Opts.Log.Warn("processes left in namespace; it lives on until they end", "netns", name, "pids", pids)
	}
	return ipRun(ctx, "netns", "delete", name)
}

// NetConf is the CNI network configuration for node n.
func (c *Cluster) NetConf(n *Node) []byte {
	b, _ := json.Marshal(map[string]string{
		"cniVersion": "1.0.0",
		"name":       "netloom",
		"type":       "netloom",
		"socket":     n.Socket,
	})
	return b
}

// cni runs the netloom binary as CNI plugin with command (ADD, DEL, CHECK)
// for pod p inside node n's namespace and returns its stdout.
func (c *Cluster) cni(ctx context.Context, command string, n *Node, p *Pod) ([]byte, error) {
	if err := c.needExe(); err != nil {
		return nil, err
	}
	if !netnsExists(n.NS) {
		return nil, fmt.Errorf("CNI %s for pod %s: node namespace %s does not exist", command, p.Name, n.NS)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	args := "K8S_POD_NAMESPACE=" + p.Namespace + ";K8S_POD_NAME=" + p.Name
	if p.UID != "" {
		// As containerd passes them.
		args = "IgnoreUnknown=1;" + args + ";K8S_POD_INFRA_CONTAINER_ID=" + p.ContainerID + ";K8S_POD_UID=" + p.UID
	}
	env := childEnv(
		"CNI_COMMAND="+command,
		"CNI_CONTAINERID="+p.ContainerID,
		"CNI_NETNS="+p.Netns(),
		"CNI_IFNAME=eth0",
		"CNI_PATH="+filepath.Dir(c.Opts.Exe),
		"CNI_ARGS="+args,
	)
	out, errOut, err := execSplit(ctx, n.NS, env, bytes.NewReader(c.NetConf(n)), c.Opts.Exe)
	if err != nil {
		return out, fmt.Errorf("CNI %s for pod %s on node %s: %s", command, p.Name, n.Name, cniError(out, errOut, err))
	}
	return out, nil
}

// cniError makes one line of a failed plugin run: the CNI error's message
// when it printed one, else the output.
func cniError(stdout, stderr []byte, err error) string {
	var e struct {
		Code    int    `json:"code"`
		Msg     string `json:"msg"`
		Details string `json:"details"`
	}
	if json.Unmarshal(stdout, &e) == nil && e.Msg != "" {
		s := e.Msg
		if e.Details != "" {
			s += ": " + e.Details
		}
		return fmt.Sprintf("%s (code %d)", s, e.Code)
	}
	return fmt.Sprintf("%v: %s", err, oneLine(joinOutput(stderr, stdout)))
}

// parseCNIResult returns the first address of a CNI 1.0.0 result.
func parseCNIResult(out []byte) (netip.Addr, error) {
	var r struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return netip.Addr{}, fmt.Errorf("decode result: %w: %s", err, oneLine(out))
	}
	if len(r.IPs) == 0 {
		return netip.Addr{}, fmt.Errorf("result has no IP: %s", oneLine(out))
	}
	p, err := netip.ParsePrefix(r.IPs[0].Address)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("result address: %w", err)
	}
	return p.Addr(), nil
}
