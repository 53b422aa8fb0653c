package demo

import (
	"context"
	"errors"
	"fmt"
)

// AddPodIn is AddPod for a pod of Kubernetes namespace namespace (AddPod's
// pods are all in PodNamespace): it creates network namespace
// <prefix>-<namespace>-<name> and runs the CNI ADD with
// K8S_POD_NAMESPACE=namespace inside node n's namespace. Pod names need
// only be unique within their namespace; on failure the network namespace
// is removed again.
func (c *Cluster) AddPodIn(ctx context.Context, n *Node, namespace, name string) (*Pod, error) {
	return c.AddKubePod(ctx, n, namespace, name, "")
}

// AddKubePod is AddPodIn for a pod of the Kubernetes API with uid: the
// CNI ADD gets the CNI_ARGS containerd passes (K8S_POD_UID and
// K8S_POD_INFRA_CONTAINER_ID too).
func (c *Cluster) AddKubePod(ctx context.Context, n *Node, namespace, name, uid string) (*Pod, error) {
	if err := c.needExe(); err != nil {
		return nil, err
	}
	if namespace == "" {
		namespace = PodNamespace
	}
	c.mu.Lock()
	for _, q := range c.PodList {
		if q.Namespace == namespace && q.Name == name {
			c.mu.Unlock()
			return nil, fmt.Errorf("add pod %s/%s: a pod of that name exists already", namespace, name)
		}
	}
	c.mu.Unlock()
	p := &Pod{Name: name, Namespace: namespace, NS: c.Opts.Prefix + "-" + namespace + "-" + name, Node: n.Name, UID: uid}
	p.ContainerID = p.NS
	if err := c.addNetns(ctx, p.NS); err != nil {
		return nil, fmt.Errorf("add pod %s/%s: %w", namespace, name, err)
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
			err = fmt.Errorf("CNI ADD for pod %s/%s on node %s: %w", namespace, name, n.Name, err)
		}
	}
	if err != nil {
		return nil, errors.Join(err, c.forgetPod(ctx, n, p, true))
	}
	if err := c.save(); err != nil {
		return nil, err
	}
	c.Opts.Log.Info("pod added", "pod", namespace+"/"+name, "node", n.Name, "netns", p.NS, "ip", p.IP)
	c.say("added pod %s/%s on %s: %s", namespace, name, n.Name, p.IP)
	return p, nil
}
