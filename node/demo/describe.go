package demo

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Describe writes a human summary of the cluster: nodes, pods, and the
// commands to look at it and to remove it.
func (c *Cluster) Describe(w io.Writer) error {
	exe := c.Opts.DisplayExe
	if exe == "" {
		exe = "netloom"
	}
	pods := c.Pods()
	b := &strings.Builder{}
	fmt.Fprintf(b, "netloom demo cluster %q: %d nodes, %d pods on switch %s (%s, bridge %s %s)\n\n",
		c.Opts.Prefix, len(c.Nodes), len(pods), c.Switch, c.Opts.Underlay, Bridge, c.SwitchAddr)

	tw := tabwriter.NewWriter(b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNETNS\tADDRESS\tSUBNET\tAGENT\tSOCKET")
	for _, n := range c.Nodes {
		subnet := "-"
		if n.Subnet.IsValid() {
			subnet = n.Subnet.String()
		}
		agent := "not started"
		if n.Agent != nil {
			if n.Agent.Running() {
				agent = fmt.Sprintf("pid %d", n.Agent.Pid)
			} else {
				agent = "stopped"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.NS, n.Addr, subnet, agent, n.Socket)
	}
	tw.Flush()

	if len(pods) > 0 {
		b.WriteString("\n")
		tw = tabwriter.NewWriter(b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "POD\tNETNS\tNODE\tIP")
		for _, p := range pods {
			ip := "-"
			if p.IP.IsValid() {
				ip = p.IP.String()
			}
			fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\n", p.Namespace, p.Name, p.NS, p.Node, ip)
		}
		tw.Flush()
	}

	c.mu.Lock()
	dash, dashNode := c.dashboard, c.dashboardNode
	c.mu.Unlock()
	if dash != "" {
		fmt.Fprintf(b, "\nDashboard: %s (%s)\n", dash, dashNode)
	}
	if len(c.Nodes) > 0 {
		n := c.Nodes[0]
		fmt.Fprintf(b, "\nStatus of a node:\n  ip netns exec %s %s status --socket %s\n", n.NS, exe, n.Socket)
		fmt.Fprintf(b, "Agent log:\n  %s\n", n.LogPath)
	}
	if len(pods) > 1 {
		from, to := pods[0], pods[len(pods)-1]
		if to.IP.IsValid() {
			fmt.Fprintf(b, "Ping from pod %s to pod %s:\n  ip netns exec %s ping -c 3 %s\n", from.Name, to.Name, from.NS, to.IP)
		}
	}
	down := exe + " demo --down"
	if !samePath(c.Opts.StateDir, DefaultStateDir) {
		down += " --state-dir " + c.Opts.StateDir
	}
	fmt.Fprintf(b, "Remove everything:\n  %s\n", down)
	_, err := io.WriteString(w, b.String())
	return err
}
