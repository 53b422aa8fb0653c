package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/netloom/netloom/mesh/objects"
	"github.com/netloom/netloom/node/api"
	"github.com/urfave/cli/v2"
)

func printStatus(w io.Writer, st api.Status) {
	n := st.Node
	subnet := n.Subnet
	switch {
	case subnet == "":
		subnet = "none"
	case n.SubnetAssigned:
		subnet += " (spec.podCIDR)"
	}
	fmt.Fprintf(w, "node %s  address %s  subnet %s  wireguard %s %s port %d\n", n.Name, n.Address, subnet, n.WireGuard.Mode, n.WireGuard.Interface, n.WireGuard.Port)
	switch {
	case n.SubnetErr != "" && n.SubnetWaiting:
		fmt.Fprintf(w, "waiting: %s\n", n.SubnetErr)
	case n.SubnetErr != "":
		fmt.Fprintf(w, "problem: %s\n", n.SubnetErr)
	}
	if k := n.Kubernetes; k != nil {
		fmt.Fprintln(w, kubeLine(*k, time.Now()))
		if k.LastError != "" {
			fmt.Fprintf(w, "problem: %s\n", k.LastError)
		}
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tADDRESS\tSTATE\tSUBNET\tENDPOINT\tHANDSHAKE\tRX\tTX")
	for _, m := range st.Members {
		name := m.Name
		if m.Self {
			name += " (this node)"
		}
		hs, rx, tx := "-", "-", "-"
		if !m.Self {
			if m.WireGuard.LastHandshake != nil {
				hs = time.Since(*m.WireGuard.LastHandshake).Round(time.Second).String() + " ago"
			} else {
				hs = "never"
			}
			rx, tx = bytes(m.WireGuard.RxBytes), bytes(m.WireGuard.TxBytes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, m.Address, m.State, orDash(m.Subnet), orDash(m.WireGuard.Endpoint), hs, rx, tx)
	}
	tw.Flush()
	for _, is := range st.ServiceIssues {
		if is.Pending != "" {
			fmt.Fprintf(w, "service %s pending: %s\n", is.Service, is.Pending)
		}
		if is.Conflict != "" {
			fmt.Fprintf(w, "service %s address conflict: %s\n", is.Service, is.Conflict)
		}
	}
}

// kubeLine says how the agent reads the Kubernetes API server.
func kubeLine(k api.KubernetesStatus, now time.Time) string {
	ago := func(t *time.Time) string {
		if t == nil {
			return "never"
		}
		return now.Sub(*t).Round(time.Second).String() + " ago"
	}
	state := "synced " + ago(k.SyncedAt)
	switch {
	case !k.Synced && k.FromSaved:
		state = "not synced yet: working from the objects saved at the last sync"
	case !k.Synced:
		state = "not synced yet: nothing object-driven is programmed until it is"
	}
	return fmt.Sprintf("kubernetes %s  %s  last answer %s", k.Server, state, ago(k.LastContact))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func getCommand() *cli.Command {
	return &cli.Command{
		Name:        "get",
		Usage:       "list stored objects of a kind",
		ArgsUsage:   "KIND [NAME]",
		Description: kindsHelp(),
		Flags: []cli.Flag{
			socketFlag, outputFlag,
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Usage: "only this namespace (default: every namespace)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 || c.NArg() > 2 {
				return fmt.Errorf("get: give a kind and optionally a name, e.g. netloom get pods")
			}
			kind, err := objects.NormalizeKind(c.Args().Get(0))
			if err != nil {
				return err
			}
			if err := checkOutput(c.String("output")); err != nil {
				return err
			}
			q := url.Values{"kind": {kind}, "namespace": {c.String("namespace")}, "name": {c.Args().Get(1)}}
			var list []api.Object
			if err := client(c).Do(c.Context, "GET", api.PathObjects+"?"+q.Encode(), nil, &list); err != nil {
				return err
			}
			return writeObjects(os.Stdout, os.Stderr, kind, list, c.String("output"), c.NArg() == 2)
		},
	}
}

// kindsHelp is the description of `get`: every kind it takes, with the
// names it answers to, from the kind table.
func kindsHelp() string {
	var b strings.Builder
	b.WriteString("KIND is one of these (a plural, a short name or the kind, in any case):\n")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, k := range objects.Kinds() {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", k.Plural, strings.Join(k.ShortNames, ", "), k.Kind)
	}
	tw.Flush()
	b.WriteString("Without -o, a table; -o json|yaml prints the same objects in full (a v1 List, or the object named).")
	return b.String()
}

// checkOutput checks the value of --output: "" (a table), json or yaml.
func checkOutput(output string) error {
	switch output {
	case "", "json", "yaml":
		return nil
	}
	return fmt.Errorf("--output %q: use json or yaml", output)
}

// writeObjects writes to w what `netloom get` shows of list, the objects of
// one kind the agent sent: as a table (output ""), or as json or yaml (a v1
// List; the object alone when it was asked for by name, named). The table
// and the json or yaml come from the same documents, the objects' Object.
// Objects the agent sent without one (an agent older than this CLI) are
// left out, and errw says so; it also says when there is nothing to list.
func writeObjects(w, errw io.Writer, kind string, list []api.Object, output string, named bool) error {
	if err := checkOutput(output); err != nil {
		return err
	}
	docs := make([]json.RawMessage, 0, len(list))
	var bare []string
	for _, o := range list {
		if len(o.Object) == 0 {
			bare = append(bare, strings.ToLower(kind)+" "+path.Join(o.Namespace, o.Name))
			continue
		}
		docs = append(docs, o.Object)
	}
	if len(bare) > 0 {
		fmt.Fprintf(errw, "left out (the agent sent no document; restart it to run this version of netloom): %s\n", strings.Join(bare, ", "))
	}
	var doc json.RawMessage
	switch {
	case output == "":
		if len(docs) == 0 {
			fmt.Fprintf(errw, "no %s found\n", kindPlural(kind))
			return nil
		}
		rows, err := objects.Table(kind, docs)
		if err != nil {
			return err
		}
		return objects.WriteTable(w, rows)
	case named && len(docs) == 1:
		doc = docs[0]
	default:
		l, err := objects.List(docs)
		if err != nil {
			return err
		}
		doc = l
	}
	if output == "yaml" {
		y, err := objects.ToYAML(doc)
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	}
	return printJSON(w, doc)
}

// kindPlural is the plural of a kind, for messages: "pods".
func kindPlural(kind string) string {
	if info, ok := objects.Lookup(kind); ok {
		return info.Plural
	}
	return strings.ToLower(kind) + "s"
}
