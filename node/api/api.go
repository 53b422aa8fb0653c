// Package api holds the wire types of the agent's local HTTP+JSON API (served
// on a unix socket) and a small client for it. The CLI and the CNI plugin are
// its clients.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"
)

// DefaultSocket is where the agent listens unless told otherwise.
const DefaultSocket = "/run/netloom/netloom.sock"

// Paths of the API.
const (
	PathStatus   = "/v1/status"
	PathApply    = "/v1/apply"        // POST ApplyRequest -> ApplyResponse
	PathDelete   = "/v1/delete"       // POST ApplyRequest -> ApplyResponse
	PathObjects  = "/v1/objects"      // GET ?kind=&namespace=&name= -> []json.RawMessage
	PathJoin     = "/v1/join"         // POST JoinRequest
	PathLeave    = "/v1/leave"        // POST, the agent leaves and exits
	PathEvents   = "/v1/events"       // GET -> []events.Event; ?follow=1 streams JSON lines
	PathTrace    = "/v1/policy/trace" // POST TraceRequest -> TraceResponse
	PathCNIAdd   = "/v1/cni/add"
	PathCNIDel   = "/v1/cni/del"
	PathCNICheck = "/v1/cni/check"
	// PathDebug serves Go's pprof profiles: heap, goroutine, allocs, profile
	// (CPU, ?seconds=N), e.g. GET /debug/pprof/heap.
	PathDebug = "/debug/pprof/"
)

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// Status is what `netloom status -o json` prints. Keep it stable: it is
// documented in the README.
type Status struct {
	Node    NodeStatus     `json:"node"`
	Members []MemberStatus `json:"members"`
	VIPs    []VIPStatus    `json:"vips"`
	// ServiceIssues are the services that lack an address (pending) or
	// lost one they asked for or held to an older service (conflict).
	ServiceIssues []ServiceIssue `json:"serviceIssues"`
}

// ServiceIssue says why a service is not served as asked.
type ServiceIssue struct {
	Service string `json:"service"`           // namespace/name
	Pending string `json:"pending,omitempty"` // why an address is missing
	// Conflict is the last address the service asked for or held and lost
	// to an older service (it got another one), kept for a day.
	Conflict   string     `json:"conflict,omitempty"`
	ConflictAt *time.Time `json:"conflictAt,omitempty"`
}

// VIPStatus is a LoadBalancer address and the node announcing it ("" while
// no node can: e.g. externalTrafficPolicy Local without a ready endpoint).
type VIPStatus struct {
	IP      string `json:"ip"`
	Service string `json:"service"` // namespace/name
	Owner   string `json:"owner"`
	// Recorded: the address is recorded for the service where every node
	// reads it (the gossip store, or the Service's
	// status.loadBalancer.ingress in Kubernetes mode), so it survives
	// restarts; until then it is only this node's plan.
	Recorded bool `json:"recorded"`
}

// NodeStatus describes the local node.
type NodeStatus struct {
	Name      string `json:"name"`
	Address   string `json:"address"`
	Subnet    string `json:"subnet"`
	SubnetErr string `json:"subnetError,omitempty"`
	// SubnetAssigned: the cluster assigned the subnet (Kubernetes
	// spec.podCIDR); otherwise the nodes agreed on it by gossip.
	SubnetAssigned bool `json:"subnetAssigned,omitempty"`
	// SubnetWaiting: SubnetErr says what the node waits for (the
	// cluster assigning it a subnet), not a fault.
	SubnetWaiting bool           `json:"subnetWaiting,omitempty"`
	Version       string         `json:"version"`
	WireGuard     LocalWireGuard `json:"wireguard"`
	// PolicyRules is the number of nftables rules NetworkPolicy compiled to
	// on this node.
	PolicyRules int `json:"policyRules"`
	// Kubernetes is the link to the API server in Kubernetes mode.
	Kubernetes *KubernetesStatus `json:"kubernetes,omitempty"`
}

// KubernetesStatus is how an agent in Kubernetes mode reads the API
// server.
type KubernetesStatus struct {
	Server string `json:"server"`
	// Synced: the caches have synced since the agent started. Before,
	// FromSaved says the agent works from the objects it saved last.
	Synced    bool       `json:"synced"`
	FromSaved bool       `json:"fromSaved,omitempty"`
	SyncedAt  *time.Time `json:"syncedAt,omitempty"`
	// LastContact is when the API server last answered; LastError is the
	// last failed watch or probe since then.
	LastContact *time.Time `json:"lastContact,omitempty"`
	LastError   string     `json:"lastError,omitempty"`
	LastErrorAt *time.Time `json:"lastErrorAt,omitempty"`
}

// LocalWireGuard is the local WireGuard device.
type LocalWireGuard struct {
	Mode      string `json:"mode"` // "kernel" or "userspace"
	Interface string `json:"interface"`
	PublicKey string `json:"publicKey"`
	Port      int    `json:"port"`
}

// MemberStatus is one member of the cluster as this node sees it.
type MemberStatus struct {
	Name      string        `json:"name"`
	Address   string        `json:"address"`
	State     string        `json:"state"` // alive, suspect, dead, left
	Subnet    string        `json:"subnet"`
	Self      bool          `json:"self,omitempty"`
	WireGuard PeerWireGuard `json:"wireguard"`
}

// PeerWireGuard is the WireGuard peer state for one member.
type PeerWireGuard struct {
	PublicKey     string     `json:"publicKey"`
	Endpoint      string     `json:"endpoint"`
	LastHandshake *time.Time `json:"lastHandshake"`
	RxBytes       int64      `json:"rxBytes"`
	TxBytes       int64      `json:"txBytes"`
}

// ApplyRequest carries a manifest file as the user wrote it (YAML or JSON,
// several documents); the agent parses and validates it all-or-nothing.
type ApplyRequest struct {
	Manifest string `json:"manifest"`
}

// Object is one stored object as `netloom get` shows it.
type Object struct {
	Kind      string          `json:"kind"`
	Namespace string          `json:"namespace,omitempty"`
	Name      string          `json:"name"`
	Object    json.RawMessage `json:"object,omitempty"`
	// For pods: where the pod attached, when it did.
	IP   string `json:"ip,omitempty"`
	Node string `json:"node,omitempty"`
	// For network policies: the pods ("ns/name") the policy selects, and
	// the packet counters of the node that answered.
	Selects  []string        `json:"selects,omitempty"`
	Counters *PolicyCounters `json:"counters,omitempty"`
	// For services: the addresses and the announcing node.
	ClusterIP  string `json:"clusterIP,omitempty"`
	ExternalIP string `json:"externalIP,omitempty"`
	Owner      string `json:"owner,omitempty"`
	Pending    string `json:"pending,omitempty"`
	Conflict   string `json:"conflict,omitempty"`
	// NodePorts are the allocated node ports (same index as spec.ports),
	// HealthCheckNodePort the allocated health-check port.
	NodePorts           []uint16 `json:"nodePorts,omitempty"`
	HealthCheckNodePort uint16   `json:"healthCheckNodePort,omitempty"`
	// Endpoints are the service's pods ("namespace/name ip node").
	Endpoints []Endpoint `json:"endpoints,omitempty"`
}

// Endpoint is a pod behind a service.
type Endpoint struct {
	Pod         string `json:"pod"` // namespace/name
	IP          string `json:"ip"`
	Node        string `json:"node"`
	Ready       bool   `json:"ready"`
	Serving     bool   `json:"serving,omitempty"`
	Terminating bool   `json:"terminating,omitempty"`
}

// PolicyCounters are a NetworkPolicy's packet counters on one node.
type PolicyCounters struct {
	Node    string       `json:"node"`
	Ingress PolicyCounts `json:"ingress"`
	Egress  PolicyCounts `json:"egress"`
}

// PolicyCounts count, in one direction, the first packets of connections
// the policy allowed and the packets dropped for pods it isolates.
type PolicyCounts struct {
	AllowedPackets uint64 `json:"allowedPackets"`
	AllowedBytes   uint64 `json:"allowedBytes"`
	DroppedPackets uint64 `json:"droppedPackets"`
	DroppedBytes   uint64 `json:"droppedBytes"`
}

// ApplyResponse lists what changed, one line per object ("pod/default/web created").
type ApplyResponse struct {
	Results []string `json:"results"`
}

// JoinRequest asks the agent to join a cluster through the given addresses.
type JoinRequest struct {
	Addresses []string `json:"addresses"`
}

// JoinResponse says how many members were contacted.
type JoinResponse struct {
	Contacted int `json:"contacted"`
}

// CNIRequest is sent by the CNI plugin for ADD, DEL and CHECK.
type CNIRequest struct {
	ContainerID  string `json:"containerID"`
	IfName       string `json:"ifName"`
	Netns        string `json:"netns"`
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
	// PodUID is K8S_POD_UID: in Kubernetes mode the agent waits for this
	// pod's labels before it attaches it.
	PodUID string `json:"podUID,omitempty"`
}

// CNIResponse is the agent's answer to ADD and CHECK.
type CNIResponse struct {
	IP      string `json:"ip"`      // address with the node subnet's prefix length, e.g. 10.244.3.5/24
	Gateway string `json:"gateway"` // first address of the node subnet, on the bridge
	MTU     int    `json:"mtu"`
	Bridge  string `json:"bridge"`
	Cluster string `json:"clusterCIDR"`
}

// ErrNotRunning is returned when nothing listens on the socket.
var ErrNotRunning = errors.New("agent not running")

// Client talks to the agent over its unix socket.
type Client struct {
	Socket string
	http   *http.Client
}

// NewClient returns a client for the agent listening on socket.
func NewClient(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	return &Client{
		Socket: socket,
		http: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
		}},
	}
}

// Do sends in (when not nil) as JSON to path with method and decodes the
// answer into out (when not nil). A non-2xx answer becomes an error holding the
// agent's one-line message; an absent agent becomes an error wrapping
// ErrNotRunning that names the socket.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://netloom"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return c.connErr(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read answer from netloom agent: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return answerErr(resp, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode answer from netloom agent: %w", err)
		}
	}
	return nil
}

// connErr explains a failed connection to the agent.
func (c *Client) connErr(err error) error {
	if isNotRunning(err) {
		return fmt.Errorf("netloom agent is not running (nothing listens on %s; start it with 'systemctl start netloom' or 'netloom agent', or pick another with --socket): %w", c.Socket, ErrNotRunning)
	}
	return fmt.Errorf("talk to netloom agent at %s: %w", c.Socket, err)
}

// answerErr turns a non-2xx answer into the agent's one-line message.
func answerErr(resp *http.Response, body []byte) error {
	var e Error
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return errors.New(e.Error)
	}
	return fmt.Errorf("netloom agent answered %s", resp.Status)
}

func isNotRunning(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "no such file")
}

// Stream sends a GET to path and returns the body for reading as a stream;
// the caller closes it. Errors are as for Do.
func (c *Client) Stream(ctx context.Context, path string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://netloom"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.connErr(err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return nil, answerErr(resp, data)
	}
	return resp.Body, nil
}

// TraceRequest asks for the NetworkPolicy verdict of a connection. Src and
// Dst are pods ("namespace/name") or addresses; Port is "80/tcp".
type TraceRequest struct {
	Src  string `json:"src"`
	Dst  string `json:"dst"`
	Port string `json:"port"`
}

// TraceResponse is the verdict and how the compiled tables reached it.
type TraceResponse struct {
	Allowed    bool             `json:"allowed"`
	Reason     string           `json:"reason"`
	Directions []TraceDirection `json:"directions"`
	Hops       []TraceHop       `json:"hops"`
}

// TraceDirection is the verdict of one direction (the source's egress, the
// destination's ingress).
type TraceDirection struct {
	Direction string   `json:"direction"`
	Isolated  bool     `json:"isolated"`
	Allowed   bool     `json:"allowed"`
	Policies  []string `json:"policies,omitempty"`
	Policy    string   `json:"policy,omitempty"`
	Rule      int      `json:"rule"`
}

// TraceHop is the walk through one node's table.
type TraceHop struct {
	Node    string   `json:"node"`
	Allowed bool     `json:"allowed"`
	Steps   []string `json:"steps"`
}
