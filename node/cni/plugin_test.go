package cni

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"github.com/netloom/netloom/node/api"
)

// The plugin binary, built once per test run from internal/plugintest.
var (
	pluginOnce sync.Once
	pluginPath string
	pluginErr  error
	pluginDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if pluginDir != "" {
		os.RemoveAll(pluginDir)
	}
	os.Exit(code)
}

func pluginBinary(t *testing.T) string {
	t.Helper()
	pluginOnce.Do(func() {
		pluginDir, pluginErr = os.MkdirTemp("", "netloom-cni-test-")
		if pluginErr != nil {
			return
		}
		pluginPath = filepath.Join(pluginDir, "netloom")
		out, err := exec.Command("go", "build", "-o", pluginPath, "github.com/netloom/netloom/node/cni/internal/plugintest").CombinedOutput()
		if err != nil {
			pluginErr = fmt.Errorf("build plugin: %v: %s", err, out)
		}
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	return pluginPath
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newNetns creates a named network namespace removed at cleanup.
func newNetns(t *testing.T) string {
	t.Helper()
	name := "nlt-" + randHex(4)
	mustRun(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name
}

func netnsPath(name string) string { return "/var/run/netns/" + name }

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// fakeAgent is a stand-in for the agent's CNI endpoints: it hands out
// 10.244.3.2, .3, ... and records the calls.
type fakeAgent struct {
	socket string
	bridge string
	mtu    int

	mu     sync.Mutex
	next   int
	allocs map[string]api.CNIResponse
	calls  []string // "ADD cid/if", "DEL cid/if", "CHECK cid/if"
}

func startFakeAgent(t *testing.T, bridge string, mtu int) *fakeAgent {
	t.Helper()
	a := &fakeAgent{
		socket: filepath.Join(t.TempDir(), "agent.sock"),
		bridge: bridge,
		mtu:    mtu,
		next:   2,
		allocs: map[string]api.CNIResponse{},
	}
	l, err := net.Listen("unix", a.socket)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.PathCNIAdd, a.handle("ADD"))
	mux.HandleFunc("POST "+api.PathCNIDel, a.handle("DEL"))
	mux.HandleFunc("POST "+api.PathCNICheck, a.handle("CHECK"))
	mux.HandleFunc("GET "+api.PathStatus, func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(api.Status{Node: api.NodeStatus{Name: "n1", Subnet: "10.244.3.0/24"}})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return a
}

func (a *fakeAgent) handle(op string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req api.CNIRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(api.Error{Error: err.Error()})
			return
		}
		id := req.ContainerID + "/" + req.IfName
		a.mu.Lock()
		defer a.mu.Unlock()
		a.calls = append(a.calls, op+" "+id)
		switch op {
		case "ADD":
			resp, ok := a.allocs[id]
			if !ok {
				resp = api.CNIResponse{
					IP:      fmt.Sprintf("10.244.3.%d/24", a.next),
					Gateway: "10.244.3.1",
					MTU:     a.mtu,
					Bridge:  a.bridge,
					Cluster: "10.244.0.0/16",
				}
				a.next++
				a.allocs[id] = resp
			}
			json.NewEncoder(w).Encode(resp)
		case "CHECK":
			resp, ok := a.allocs[id]
			if !ok {
				w.WriteHeader(http.StatusNotFound)
				json.NewEncoder(w).Encode(api.Error{Error: "no attachment " + id + " on this node"})
				return
			}
			json.NewEncoder(w).Encode(resp)
		case "DEL":
			delete(a.allocs, id)
			w.Write([]byte("{}"))
		}
	}
}

func (a *fakeAgent) Calls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...)
}

func (a *fakeAgent) Allocated() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.allocs)
}

// invocation is one run of the plugin.
type invocation struct {
	NodeNS      string // "" runs the plugin in the test's own netns (only for cases that fail early)
	Command     string
	ContainerID string
	Netns       string
	IfName      string
	Args        string
	Conf        string
}

type outcome struct {
	Stdout, Stderr string
	Err            error
}

// cniError decodes the error the plugin printed.
func (o outcome) cniError(t *testing.T) *types.Error {
	t.Helper()
	if o.Err == nil {
		t.Fatalf("plugin succeeded, want an error; stdout: %s", o.Stdout)
	}
	var e types.Error
	if err := json.Unmarshal([]byte(o.Stdout), &e); err != nil || e.Msg == "" {
		t.Fatalf("plugin failed (%v) without a CNI error on stdout: %q, stderr %q", o.Err, o.Stdout, o.Stderr)
	}
	return &e
}

func (o outcome) mustSucceed(t *testing.T) {
	t.Helper()
	if o.Err != nil {
		t.Fatalf("plugin failed: %v\nstdout: %s\nstderr: %s", o.Err, o.Stdout, o.Stderr)
	}
}

func runPlugin(t *testing.T, in invocation) outcome {
	t.Helper()
	bin := pluginBinary(t)
	var cmd *exec.Cmd
	if in.NodeNS != "" {
		cmd = exec.Command("ip", "netns", "exec", in.NodeNS, bin)
	} else {
		cmd = exec.Command(bin)
	}
	ifName := in.IfName
	if ifName == "" {
		ifName = "eth0"
	}
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"CNI_COMMAND=" + in.Command,
		"CNI_CONTAINERID=" + in.ContainerID,
		"CNI_NETNS=" + in.Netns,
		"CNI_IFNAME=" + ifName,
		"CNI_ARGS=" + in.Args,
		"CNI_PATH=" + filepath.Dir(bin),
	}
	cmd.Stdin = strings.NewReader(in.Conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return outcome{Stdout: stdout.String(), Stderr: stderr.String(), Err: err}
}

func netconf(version, socket string) string {
	return fmt.Sprintf(`{"cniVersion":%q,"name":"netloom","type":"netloom","socket":%q}`, version, socket)
}

// withPrev adds prevResult to a netconf.
func withPrev(t *testing.T, conf, result string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(conf), &m); err != nil {
		t.Fatal(err)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(result), &r); err != nil {
		t.Fatalf("result %q: %v", result, err)
	}
	m["prevResult"] = r
	b, _ := json.Marshal(m)
	return string(b)
}

// linkExists says whether a link of that name is in netns.
func linkExists(t *testing.T, netns, name string) bool {
	t.Helper()
	return exec.Command("ip", "-n", netns, "link", "show", "dev", name).Run() == nil
}

// linkNames lists the links of netns.
func linkNames(t *testing.T, netns string) []string {
	t.Helper()
	var links []struct {
		Name string `json:"ifname"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "ip", "-n", netns, "-j", "link", "show")), &links); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Name)
	}
	return names
}

func TestVersionAndAbout(t *testing.T) {
	o := runPlugin(t, invocation{Command: "VERSION"})
	o.mustSucceed(t)
	var v struct {
		Supported []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal([]byte(o.Stdout), &v); err != nil {
		t.Fatalf("VERSION output %q: %v", o.Stdout, err)
	}
	if d := cmp.Diff(SupportedVersions, v.Supported); d != "" {
		t.Errorf("supportedVersions (-want +got):\n%s", d)
	}

	cmd := exec.Command(pluginBinary(t))
	cmd.Env = []string{}
	out, _ := cmd.CombinedOutput()
	if !strings.HasPrefix(string(out), About) {
		t.Errorf("plugin without CNI_COMMAND printed %q, want the about string %q first", out, About)
	}
}

func TestMalformedNetconf(t *testing.T) {
	tests := []struct {
		name    string
		conf    string
		wantMsg string
	}{
		{"socket type", `{"cniVersion":"1.0.0","name":"netloom","type":"netloom","socket":5}`, `field "socket"`},
		{"socket relative", `{"cniVersion":"1.0.0","name":"netloom","type":"netloom","socket":"x.sock"}`, `field "socket"`},
		{"ipam type", `{"cniVersion":"1.0.0","name":"netloom","type":"netloom","ipam":"host-local"}`, `field "ipam"`},
		{"no name", `{"cniVersion":"1.0.0","type":"netloom"}`, `field "name" is missing`},
		{"no cniVersion", `{"name":"netloom","type":"netloom"}`, `field "cniVersion" is missing`},
		{"not json", `{"cniVersion":`, "netloom netconf: not valid JSON"},
	}
	for _, tt := range tests {
		for _, cmd := range []string{"ADD", "DEL", "CHECK"} {
			t.Run(tt.name+"/"+cmd, func(t *testing.T) {
				o := runPlugin(t, invocation{Command: cmd, ContainerID: "c1", Netns: "/var/run/netns/nlt-none", Conf: tt.conf})
				e := o.cniError(t)
				if !strings.Contains(e.Msg, tt.wantMsg) || strings.Contains(e.Msg, "\n") {
					t.Errorf("%s error = %q, want one line containing %q", cmd, e.Msg, tt.wantMsg)
				}
			})
		}
	}
}

func TestAddCheckDel(t *testing.T) {
	requireRoot(t)
	node, pod1, pod2 := newNetns(t), newNetns(t), newNetns(t)
	agent := startFakeAgent(t, "nltbr0", 1400)
	conf := netconf("1.0.0", agent.socket)
	cid1, cid2 := "c1"+randHex(8), "c2"+randHex(8)

	add1 := runPlugin(t, invocation{NodeNS: node, Command: "ADD", ContainerID: cid1, Netns: netnsPath(pod1),
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0", Conf: conf})
	add1.mustSucceed(t)

	var res types100.Result
	if err := json.Unmarshal([]byte(add1.Stdout), &res); err != nil {
		t.Fatalf("ADD result %q: %v", add1.Stdout, err)
	}
	host := HostVethName(cid1, "eth0")
	if len(res.Interfaces) != 2 || res.Interfaces[0].Name != host || res.Interfaces[1].Name != "eth0" ||
		res.Interfaces[1].Sandbox != netnsPath(pod1) || res.Interfaces[0].Mac == "" || res.Interfaces[1].Mac == "" {
		t.Errorf("ADD interfaces = %+v, want host veth %s and eth0 in %s with MACs", res.Interfaces, host, netnsPath(pod1))
	}
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.244.3.2/24" || res.IPs[0].Gateway.String() != "10.244.3.1" ||
		res.IPs[0].Interface == nil || *res.IPs[0].Interface != 1 {
		t.Errorf("ADD ips = %+v, want 10.244.3.2/24 gw 10.244.3.1 on interface 1", res.IPs)
	}
	if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "0.0.0.0/0" || res.Routes[0].GW.String() != "10.244.3.1" {
		t.Errorf("ADD routes = %+v, want default via 10.244.3.1", res.Routes)
	}
	if res.CNIVersion != "1.0.0" {
		t.Errorf("ADD cniVersion = %q, want the conf's 1.0.0", res.CNIVersion)
	}
	if d := cmp.Diff([]string{"ADD " + cid1 + "/eth0"}, agent.Calls()); d != "" {
		t.Errorf("agent calls (-want +got):\n%s", d)
	}

	// The kernel state.
	if out := mustRun(t, "ip", "-n", pod1, "-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(out, "10.244.3.2/24") {
		t.Errorf("pod eth0 addresses: %s, want 10.244.3.2/24", out)
	}
	if out := mustRun(t, "ip", "-n", pod1, "link", "show", "dev", "eth0"); !strings.Contains(out, "mtu 1400") || !strings.Contains(out, ",UP") {
		t.Errorf("pod eth0: %s, want mtu 1400 and UP", out)
	}
	if out := mustRun(t, "ip", "-n", pod1, "link", "show", "dev", "lo"); !strings.Contains(out, ",UP") {
		t.Errorf("pod lo: %s, want UP", out)
	}
	if out := mustRun(t, "ip", "-n", pod1, "route", "show", "default"); !strings.Contains(out, "default via 10.244.3.1 dev eth0") {
		t.Errorf("pod default route: %q, want via 10.244.3.1 dev eth0", out)
	}
	if out := mustRun(t, "ip", "-n", node, "link", "show", "dev", host); !strings.Contains(out, "master nltbr0") || !strings.Contains(out, "mtu 1400") || !strings.Contains(out, ",UP") {
		t.Errorf("host veth: %s, want mtu 1400, master nltbr0, UP", out)
	}
	if out := mustRun(t, "ip", "-n", node, "-4", "-o", "addr", "show", "dev", "nltbr0"); !strings.Contains(out, "10.244.3.1/24") {
		t.Errorf("bridge addresses: %s, want 10.244.3.1/24", out)
	}

	// Packets: node to pod through the bridge, and pod to pod.
	mustRun(t, "ip", "netns", "exec", node, "ping", "-c1", "-W5", "10.244.3.2")
	add2 := runPlugin(t, invocation{NodeNS: node, Command: "ADD", ContainerID: cid2, Netns: netnsPath(pod2), Conf: conf})
	add2.mustSucceed(t)
	mustRun(t, "ip", "netns", "exec", pod2, "ping", "-c1", "-W5", "10.244.3.2")
	mustRun(t, "ip", "netns", "exec", pod1, "ping", "-c1", "-W5", "10.244.3.1")

	// CHECK with and without prevResult.
	runPlugin(t, invocation{NodeNS: node, Command: "CHECK", ContainerID: cid1, Netns: netnsPath(pod1), Conf: withPrev(t, conf, add1.Stdout)}).mustSucceed(t)
	runPlugin(t, invocation{NodeNS: node, Command: "CHECK", ContainerID: cid1, Netns: netnsPath(pod1), Conf: conf}).mustSucceed(t)
	// A prevResult of another pod does not match.
	e := runPlugin(t, invocation{NodeNS: node, Command: "CHECK", ContainerID: cid1, Netns: netnsPath(pod1), Conf: withPrev(t, conf, add2.Stdout)}).cniError(t)
	if !strings.Contains(e.Msg, "prevResult") {
		t.Errorf("CHECK with a foreign prevResult: %q, want it to name prevResult", e.Msg)
	}
	// Broken state is reported.
	mustRun(t, "ip", "-n", pod1, "addr", "del", "10.244.3.2/24", "dev", "eth0")
	e = runPlugin(t, invocation{NodeNS: node, Command: "CHECK", ContainerID: cid1, Netns: netnsPath(pod1), Conf: conf}).cniError(t)
	if !strings.Contains(e.Msg, "lacks address 10.244.3.2/24") {
		t.Errorf("CHECK without the address: %q, want it to name the missing address", e.Msg)
	}
	mustRun(t, "ip", "-n", node, "link", "set", "dev", HostVethName(cid2, "eth0"), "nomaster")
	e = runPlugin(t, invocation{NodeNS: node, Command: "CHECK", ContainerID: cid2, Netns: netnsPath(pod2), Conf: conf}).cniError(t)
	if !strings.Contains(e.Msg, "not a port of bridge") {
		t.Errorf("CHECK with the veth off the bridge: %q, want it to say so", e.Msg)
	}
	// CHECK of an attachment the agent does not know.
	e = runPlugin(t, invocation{NodeNS: node, Command: "CHECK", ContainerID: "nope", Netns: netnsPath(pod1), Conf: conf}).cniError(t)
	if !strings.Contains(e.Msg, "no attachment nope/eth0") {
		t.Errorf("CHECK of an unknown attachment: %q, want the agent's message", e.Msg)
	}

	// DEL, twice.
	for i := 0; i < 2; i++ {
		runPlugin(t, invocation{NodeNS: node, Command: "DEL", ContainerID: cid1, Netns: netnsPath(pod1), Conf: conf}).mustSucceed(t)
		if linkExists(t, pod1, "eth0") || linkExists(t, node, host) {
			t.Fatalf("DEL #%d left the veth behind", i+1)
		}
	}
	if agent.Allocated() != 1 {
		t.Errorf("agent holds %d attachments after DEL of one of two, want 1", agent.Allocated())
	}
	runPlugin(t, invocation{NodeNS: node, Command: "DEL", ContainerID: cid2, Netns: netnsPath(pod2), Conf: conf}).mustSucceed(t)
	if d := cmp.Diff([]string{"lo", "nltbr0"}, linkNames(t, node)); d != "" {
		t.Errorf("node links after DEL of all pods (-want +got):\n%s", d)
	}
}

func TestOlderSpecVersion(t *testing.T) {
	requireRoot(t)
	node, pod := newNetns(t), newNetns(t)
	agent := startFakeAgent(t, "nltbr0", 0)
	conf := netconf("0.4.0", agent.socket)
	cid := "c" + randHex(8)
	add := runPlugin(t, invocation{NodeNS: node, Command: "ADD", ContainerID: cid, Netns: netnsPath(pod), Conf: conf})
	add.mustSucceed(t)
	if !strings.Contains(add.Stdout, `"cniVersion": "0.4.0"`) || !strings.Contains(add.Stdout, `"version": "4"`) {
		t.Errorf("ADD with a 0.4.0 conf printed %s, want a 0.4.0 result", add.Stdout)
	}
	runPlugin(t, invocation{NodeNS: node, Command: "CHECK", ContainerID: cid, Netns: netnsPath(pod), Conf: withPrev(t, conf, add.Stdout)}).mustSucceed(t)
	runPlugin(t, invocation{NodeNS: node, Command: "DEL", ContainerID: cid, Netns: netnsPath(pod), Conf: conf}).mustSucceed(t)
}

func TestDelWithoutNetns(t *testing.T) {
	requireRoot(t)
	node, pod := newNetns(t), newNetns(t)
	agent := startFakeAgent(t, "nltbr0", 1400)
	conf := netconf("1.0.0", agent.socket)
	cid := "c" + randHex(8)
	runPlugin(t, invocation{NodeNS: node, Command: "ADD", ContainerID: cid, Netns: netnsPath(pod), Conf: conf}).mustSucceed(t)

	mustRun(t, "ip", "netns", "del", pod)
	runPlugin(t, invocation{NodeNS: node, Command: "DEL", ContainerID: cid, Netns: netnsPath(pod), Conf: conf}).mustSucceed(t)
	runPlugin(t, invocation{NodeNS: node, Command: "DEL", ContainerID: cid, Netns: "", Conf: conf}).mustSucceed(t)
	if linkExists(t, node, HostVethName(cid, "eth0")) {
		t.Error("host veth still there after the pod netns was deleted")
	}
	if agent.Allocated() != 0 {
		t.Errorf("agent holds %d attachments after DEL, want 0", agent.Allocated())
	}
	// A netns path that exists but is no netns any more (unmounted bind mount).
	stale := filepath.Join(t.TempDir(), "netns")
	os.WriteFile(stale, nil, 0o644)
	runPlugin(t, invocation{NodeNS: node, Command: "DEL", ContainerID: cid, Netns: stale, Conf: conf}).mustSucceed(t)
}

func TestAgentNotRunning(t *testing.T) {
	requireRoot(t)
	node, pod := newNetns(t), newNetns(t)
	socket := filepath.Join(t.TempDir(), "absent.sock")
	conf := netconf("1.0.0", socket)
	cid := "c" + randHex(8)

	o := runPlugin(t, invocation{NodeNS: node, Command: "ADD", ContainerID: cid, Netns: netnsPath(pod), Conf: conf})
	e := o.cniError(t)
	if e.Code != types.ErrTryAgainLater || !strings.Contains(e.Msg, socket) || !strings.Contains(e.Msg, "not running") {
		t.Errorf("ADD without agent: code %d %q, want code 11 naming %s", e.Code, e.Msg, socket)
	}
	if d := cmp.Diff([]string{"lo"}, linkNames(t, node)); d != "" {
		t.Errorf("node links after failed ADD (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"lo"}, linkNames(t, pod)); d != "" {
		t.Errorf("pod links after failed ADD (-want +got):\n%s", d)
	}

	// DEL without agent: the veth goes, the error asks to retry.
	agent := startFakeAgent(t, "nltbr0", 1400)
	runPlugin(t, invocation{NodeNS: node, Command: "ADD", ContainerID: cid, Netns: netnsPath(pod), Conf: netconf("1.0.0", agent.socket)}).mustSucceed(t)
	e = runPlugin(t, invocation{NodeNS: node, Command: "DEL", ContainerID: cid, Netns: netnsPath(pod), Conf: conf}).cniError(t)
	if e.Code != types.ErrTryAgainLater || !strings.Contains(e.Msg, socket) {
		t.Errorf("DEL without agent: code %d %q, want code 11 naming %s", e.Code, e.Msg, socket)
	}
	if linkExists(t, pod, "eth0") || linkExists(t, node, HostVethName(cid, "eth0")) {
		t.Error("DEL without agent left the veth behind")
	}

	// STATUS (1.1.0) says the plugin is not available.
	e = runPlugin(t, invocation{NodeNS: node, Command: "STATUS", Conf: netconf("1.1.0", socket)}).cniError(t)
	if e.Code != types.ErrPluginNotAvailable || !strings.Contains(e.Msg, socket) {
		t.Errorf("STATUS without agent: code %d %q, want code 50 naming %s", e.Code, e.Msg, socket)
	}
	runPlugin(t, invocation{NodeNS: node, Command: "STATUS", Conf: netconf("1.1.0", agent.socket)}).mustSucceed(t)
}

func TestAddMissingNetns(t *testing.T) {
	requireRoot(t)
	node := newNetns(t)
	agent := startFakeAgent(t, "nltbr0", 1400)
	path := netnsPath("nlt-absent-" + randHex(4))
	e := runPlugin(t, invocation{NodeNS: node, Command: "ADD", ContainerID: "c1", Netns: path, Conf: netconf("1.0.0", agent.socket)}).cniError(t)
	if e.Code != types.ErrInvalidNetNS || !strings.Contains(e.Msg, path) || !strings.Contains(e.Msg, "does not exist") {
		t.Errorf("ADD with a missing netns: code %d %q, want code 8 naming %s", e.Code, e.Msg, path)
	}
	if len(agent.Calls()) != 0 {
		t.Errorf("agent was called: %v, want no allocation for a missing netns", agent.Calls())
	}
}

// TestAddUndo makes ADD fail after the agent allocated and the veth exists:
// everything must be undone.
func TestAddUndo(t *testing.T) {
	requireRoot(t)
	node, pod := newNetns(t), newNetns(t)
	agent := startFakeAgent(t, "nltbr0", 1400)
	conf := netconf("1.0.0", agent.socket)
	cid := "c" + randHex(8)

	// The pod already has a default route, so ours cannot be added.
	mustRun(t, "ip", "-n", pod, "link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1") // no dummy module on every machine
	mustRun(t, "ip", "-n", pod, "addr", "add", "192.0.2.2/24", "dev", "dummy0")
	mustRun(t, "ip", "-n", pod, "link", "set", "dummy0", "up")
	mustRun(t, "ip", "-n", pod, "route", "add", "default", "via", "192.0.2.1")

	e := runPlugin(t, invocation{NodeNS: node, Command: "ADD", ContainerID: cid, Netns: netnsPath(pod), Conf: conf}).cniError(t)
	if !strings.Contains(e.Msg, "default route") {
		t.Errorf("ADD error %q, want it to name the default route", e.Msg)
	}
	if d := cmp.Diff([]string{"lo", "dummy1", "dummy0"}, linkNames(t, pod)); d != "" {
		t.Errorf("pod links after failed ADD (-want +got):\n%s", d)
	}
	if linkExists(t, node, HostVethName(cid, "eth0")) {
		t.Error("host veth left behind by a failed ADD")
	}
	if d := cmp.Diff([]string{"ADD " + cid + "/eth0", "DEL " + cid + "/eth0"}, agent.Calls()); d != "" {
		t.Errorf("agent calls (-want +got):\n%s", d)
	}

	// An interface of the wanted name that is not ours stays.
	mustRun(t, "ip", "-n", pod, "route", "del", "default")
	e = runPlugin(t, invocation{NodeNS: node, Command: "ADD", ContainerID: cid, Netns: netnsPath(pod), IfName: "dummy0", Conf: conf}).cniError(t)
	if !strings.Contains(e.Msg, `"dummy0" already exists`) {
		t.Errorf("ADD onto an existing interface: %q, want it to say so", e.Msg)
	}
	if !linkExists(t, pod, "dummy0") || agent.Allocated() != 0 {
		t.Errorf("failed ADD removed the pod's own interface or kept the address (allocated %d)", agent.Allocated())
	}

	// An ADD repeated without DEL replaces the stale veth.
	runPlugin(t, invocation{NodeNS: node, Command: "ADD", ContainerID: cid, Netns: netnsPath(pod), Conf: conf}).mustSucceed(t)
	runPlugin(t, invocation{NodeNS: node, Command: "ADD", ContainerID: cid, Netns: netnsPath(pod), Conf: conf}).mustSucceed(t)
	runPlugin(t, invocation{NodeNS: node, Command: "CHECK", ContainerID: cid, Netns: netnsPath(pod), Conf: conf}).mustSucceed(t)
}

func TestEnsureBridge(t *testing.T) {
	requireRoot(t)
	node := newNetns(t)
	gw := netip.MustParsePrefix("10.244.7.1/24")
	err := ns.WithNetNSPath(netnsPath(node), func(ns.NetNS) error {
		fixed, err := EnsureBridge("nltbr1", gw, 1380)
		if err != nil {
			return err
		}
		if len(fixed) == 0 || fixed[0] != "created bridge nltbr1" {
			return fmt.Errorf("first EnsureBridge fixed %q, want the bridge created first", fixed)
		}
		br, err := netlink.LinkByName("nltbr1")
		if err != nil {
			return err
		}
		mac := br.Attrs().HardwareAddr.String()
		// Someone else's address stays; calling again changes nothing.
		other := &netlink.Addr{IPNet: ptr(ipNet(netip.MustParsePrefix("192.0.2.1/24")))}
		if err := netlink.AddrAdd(br, other); err != nil {
			return err
		}
		for i := 0; i < 2; i++ {
			fixed, err := EnsureBridge("nltbr1", gw, 1380)
			if err != nil {
				return fmt.Errorf("second EnsureBridge: %w", err)
			}
			if len(fixed) != 0 {
				return fmt.Errorf("EnsureBridge on a bridge as it should be fixed %q, want nothing", fixed)
			}
		}
		br, err = netlink.LinkByName("nltbr1")
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(br, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		var got []string
		for _, a := range addrs {
			got = append(got, a.IPNet.String())
		}
		if d := cmp.Diff([]string{"10.244.7.1/24", "192.0.2.1/24"}, got); d != "" {
			return fmt.Errorf("bridge addresses (-want +got):\n%s", d)
		}
		if br.Attrs().MTU != 1380 || br.Attrs().Flags&net.FlagUp == 0 || br.Attrs().HardwareAddr.String() != mac {
			return fmt.Errorf("bridge = mtu %d flags %v mac %s, want mtu 1380, up, mac %s", br.Attrs().MTU, br.Attrs().Flags, br.Attrs().HardwareAddr, mac)
		}
		// A new MTU is applied to an adopted bridge.
		if fixed, err := EnsureBridge("nltbr1", gw, 1300); err != nil || len(fixed) != 1 {
			return fmt.Errorf("EnsureBridge with a new MTU fixed %q, %v; want the MTU set", fixed, err)
		}
		if br, _ = netlink.LinkByName("nltbr1"); br.Attrs().MTU != 1300 {
			return fmt.Errorf("bridge mtu %d after EnsureBridge(1300)", br.Attrs().MTU)
		}
		// A link of that name that is no bridge is an error.
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "nltdummy"}, PeerName: "nltdummy1"}); err != nil {
			return err
		}
		_, err = EnsureBridge("nltdummy", gw, 0)
		if err == nil || !strings.Contains(err.Error(), "not a bridge") {
			return fmt.Errorf("EnsureBridge on a veth = %v, want a not-a-bridge error", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var nf netlink.LinkNotFoundError
	if _, err := netlink.LinkByName("nltbr1"); !errors.As(err, &nf) {
		t.Errorf("bridge visible in the test's own netns: %v", err)
	}
}

// TestHostNetnsRefused: a CNI_NETNS that is the plugin's own netns must not
// get a veth (ADD) or lose an interface (DEL).
func TestHostNetnsRefused(t *testing.T) {
	requireRoot(t)
	node := newNetns(t)
	agent := startFakeAgent(t, "nltbr0", 1400)
	conf := netconf("1.0.0", agent.socket)
	mustRun(t, "ip", "-n", node, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1")

	for _, cmd := range []string{"ADD", "DEL"} {
		e := runPlugin(t, invocation{NodeNS: node, Command: cmd, ContainerID: "c1", Netns: netnsPath(node), IfName: "uplink0", Conf: conf}).cniError(t)
		if e.Code != types.ErrInvalidNetNS || !strings.Contains(e.Msg, "host's network namespace") {
			t.Errorf("%s into the host netns: code %d %q, want code 8 saying so", cmd, e.Code, e.Msg)
		}
	}
	if d := cmp.Diff([]string{"lo", "uplink1", "uplink0"}, linkNames(t, node)); d != "" {
		t.Errorf("node links (-want +got):\n%s", d)
	}
	if len(agent.Calls()) != 0 {
		t.Errorf("agent calls %v, want none", agent.Calls())
	}
}
