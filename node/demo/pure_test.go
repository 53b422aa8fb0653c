package demo

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/node/api"
)

func TestUnderlayAddr(t *testing.T) {
	tests := []struct {
		prefix string
		i      int
		want   string // "" = error
	}{
		{"10.77.0.0/24", 0, "10.77.0.1"},
		{"10.77.0.0/24", 1, "10.77.0.11"},
		{"10.77.0.0/24", 3, "10.77.0.13"},
		{"10.77.0.0/24", 244, "10.77.0.254"},
		{"10.77.0.0/24", 245, ""}, // broadcast
		{"10.77.0.5/24", 1, "10.77.0.11"},
		{"10.77.0.0/28", 4, "10.77.0.14"},
		{"10.77.0.0/28", 5, ""},
		{"fd00:77::/64", 2, "fd00:77::c"},
	}
	for _, tt := range tests {
		got, err := underlayAddr(netip.MustParsePrefix(tt.prefix), tt.i)
		if tt.want == "" {
			if err == nil {
				t.Errorf("underlayAddr(%s, %d) = %s, want error", tt.prefix, tt.i, got)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("underlayAddr(%s, %d) = %s, %v, want %s", tt.prefix, tt.i, got, err, tt.want)
		}
	}
}

func TestWGIfaceName(t *testing.T) {
	if got := wgIfaceName(DefaultPrefix, "node1"); got != "nlwg-node1" {
		t.Errorf("default prefix: %q", got)
	}
	a, b := wgIfaceName("nlt-0a1b", "node1"), wgIfaceName("nlt-0a1c", "node1")
	if a == b || len(a) > 15 || !strings.HasSuffix(a, "-node1") {
		t.Errorf("test prefixes: %q, %q", a, b)
	}
	if got := wgIfaceName("nlt-0a1b", "node200"); len(got) > 15 {
		t.Errorf("%q is longer than 15", got)
	}
}

func TestOptionsDefaultsAndValidate(t *testing.T) {
	o := Options{StateDir: "/tmp/x"}
	if err := o.setDefaults(); err != nil {
		t.Fatal(err)
	}
	want := Options{Prefix: "nl-demo", Nodes: 3, PodsPerNode: 2, StateDir: "/tmp/x", DisplayExe: "netloom",
		Underlay: netip.MustParsePrefix("10.77.0.0/24"), ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
		NodeMask: 24, GossipPort: 7946, WGPort: 51820, WireGuard: "auto", LogFormat: "text"}
	if o.Log == nil {
		t.Error("no default logger")
	}
	o.Log = nil
	if diff := cmp.Diff(want, o, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	bad := []Options{
		{Prefix: "has space"},
		{Nodes: 300},
		{Underlay: netip.MustParsePrefix("10.77.0.0/29")},
		{Underlay: netip.MustParsePrefix("10.244.1.0/24")},
		{NodeMask: 8},
		{StateDir: "/" + strings.Repeat("d", 100)},
		{Exe: "/nonexistent/netloom"},
	}
	for _, o := range bad {
		if err := o.setDefaults(); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

func TestAgentArgs(t *testing.T) {
	c := &Cluster{Token: "TOK", Opts: Options{ExtraAgentArgs: []string{"--x", "1"}}}
	if err := c.Opts.setDefaults(); err != nil {
		t.Fatal(err)
	}
	n := &Node{Name: "node2", Addr: netip.MustParseAddr("10.77.0.12"), Socket: "/s/node2/netloom.sock",
		DataDir: "/s/node2/data", RunDir: "/s/node2/run", WGIface: "nlwg-node2", ExtraArgs: []string{"--y"}}
	got := c.AgentArgs(n, []netip.AddrPort{netip.MustParseAddrPort("10.77.0.11:7946"), netip.MustParseAddrPort("10.77.0.13:7946")})
	want := []string{"agent", "--name", "node2", "--data-dir", "/s/node2/data", "--socket", "/s/node2/netloom.sock",
		"--run-dir", "/s/node2/run", "--advertise-addr", "10.77.0.12", "--gossip-port", "7946", "--wg-port", "51820",
		"--wg-iface", "nlwg-node2", "--cluster-cidr", "10.244.0.0/16", "--node-mask", "24", "--token", "TOK",
		"--join", "10.77.0.11:7946,10.77.0.13:7946", "--wireguard", "auto", "--log-format", "text", "--x", "1", "--y"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
}

func TestCNIResult(t *testing.T) {
	ip, err := parseCNIResult([]byte(`{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.244.3.5/24","gateway":"10.244.3.1","interface":0}]}`))
	if err != nil || ip != netip.MustParseAddr("10.244.3.5") {
		t.Errorf("parse: %s, %v", ip, err)
	}
	if _, err := parseCNIResult([]byte(`{"cniVersion":"1.0.0"}`)); err == nil {
		t.Error("result without ips: no error")
	}
	msg := cniError([]byte(`{"code":11,"msg":"netloom agent is not running","details":"dial"}`), nil, errors.New("exit status 1"))
	if msg != "netloom agent is not running: dial (code 11)" {
		t.Errorf("cniError: %q", msg)
	}
	msg = cniError([]byte("panic\n"), []byte("boom"), errors.New("exit status 2"))
	if msg != "exit status 2: boom | panic" {
		t.Errorf("cniError without JSON: %q", msg)
	}
}

func status(name, subnet string, members ...api.MemberStatus) *api.Status {
	return &api.Status{Node: api.NodeStatus{Name: name, Subnet: subnet}, Members: members}
}

func member(name, state, subnet string) api.MemberStatus {
	return api.MemberStatus{Name: name, State: state, Subnet: subnet}
}

func TestCheckReady(t *testing.T) {
	names := []string{"node1", "node2"}
	m1 := member("node1", "alive", "10.244.1.0/24")
	m2 := member("node2", "alive", "10.244.2.0/24")
	tests := []struct {
		name string
		sts  map[string]*api.Status
		want string // "" = ready; else part of the error
	}{
		{"ready", map[string]*api.Status{
			"node1": status("node1", "10.244.1.0/24", m1, m2),
			"node2": status("node2", "10.244.2.0/24", m2, m1),
		}, ""},
		{"no status", map[string]*api.Status{
			"node1": status("node1", "10.244.1.0/24", m1, m2),
		}, "node node2: no status"},
		{"no subnet", map[string]*api.Status{
			"node1": status("node1", "10.244.1.0/24", m1, m2),
			"node2": {Node: api.NodeStatus{Name: "node2", SubnetErr: "cluster full"}},
		}, "node node2: has no subnet yet (cluster full)"},
		{"same subnet", map[string]*api.Status{
			"node1": status("node1", "10.244.1.0/24", m1, m2),
			"node2": status("node2", "10.244.1.0/24", m2, m1),
		}, "has subnet 10.244.1.0/24, like node node1"},
		{"member missing", map[string]*api.Status{
			"node1": status("node1", "10.244.1.0/24", m1),
			"node2": status("node2", "10.244.2.0/24", m2, m1),
		}, "node node1: does not see member node2"},
		{"member suspect", map[string]*api.Status{
			"node1": status("node1", "10.244.1.0/24", m1, m2),
			"node2": status("node2", "10.244.2.0/24", m2, member("node1", "suspect", "10.244.1.0/24")),
		}, "node node2: sees member node1 suspect"},
		{"stale subnet", map[string]*api.Status{
			"node1": status("node1", "10.244.1.0/24", m1, member("node2", "alive", "")),
			"node2": status("node2", "10.244.2.0/24", m2, m1),
		}, `sees subnet "" for member node2`},
		{"stranger", map[string]*api.Status{
			"node1": status("node1", "10.244.1.0/24", m1, m2, member("node9", "alive", "10.244.9.0/24")),
			"node2": status("node2", "10.244.2.0/24", m2, m1),
		}, "sees unknown member node9 alive"},
		{"left stranger is fine", map[string]*api.Status{
			"node1": status("node1", "10.244.1.0/24", m1, m2, member("node9", "left", "")),
			"node2": status("node2", "10.244.2.0/24", m2, m1),
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkReady(names, tt.sts)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("not ready: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("got %v, want an error with %q", err, tt.want)
			}
		})
	}
}
