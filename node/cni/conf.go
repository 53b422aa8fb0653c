package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/netloom/netloom/node/api"
)

// NetConf is the plugin's network configuration as the runtime passes it on
// stdin, e.g.
//
//	{"cniVersion":"1.0.0","name":"netloom","type":"netloom","socket":"/run/netloom/netloom.sock"}
//
// Socket is optional and defaults to api.DefaultSocket.
type NetConf struct {
	types.PluginConf
	Socket string `json:"socket,omitempty"`
}

// ParseNetConf decodes and checks a network configuration. Errors are
// *types.Error with a one-line message naming the field.
func ParseNetConf(data []byte) (*NetConf, error) {
	var c NetConf
	if err := json.Unmarshal(data, &c); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			field := strings.TrimPrefix(te.Field, "PluginConf.")
			return nil, types.NewError(types.ErrDecodingFailure,
				fmt.Sprintf("netloom netconf: field %q must be %s, not %s", field, article(jsonKind(te.Type.Kind().String())), article(te.Value)), "")
		}
		return nil, types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("netloom netconf: not valid JSON: %v", err), "")
	}
	if c.CNIVersion == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			`netloom netconf: field "cniVersion" is missing; set it to "1.0.0"`, "")
	}
	if c.Name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			`netloom netconf: field "name" is missing; set it to "netloom"`, "")
	}
	if c.Socket == "" {
		c.Socket = api.DefaultSocket
	} else if !filepath.IsAbs(c.Socket) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("netloom netconf: field \"socket\" must be an absolute path, not %q", c.Socket), "")
	}
	if err := version.ParsePrevResult(&c.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("netloom netconf: field \"prevResult\": %s", oneLine(err)), "")
	}
	return &c, nil
}

// jsonKind names a Go kind the way a netconf author thinks of it.
func jsonKind(k string) string {
	switch k {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "map", "struct":
		return "object"
	case "slice", "array":
		return "list"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "number"
	}
	return k
}

// article puts "a" or "an" before a word.
func article(w string) string {
	if w != "" && strings.ContainsRune("aeiou", rune(w[0])) {
		return "an " + w
	}
	return "a " + w
}

// PodArgs is the pod identity the runtime passes in CNI_ARGS.
type PodArgs struct {
	Namespace string
	Name      string
	UID       string
}

// k8sArgs is the CNI_ARGS structure kubelet and containerd fill in; the
// field names are the keys.
type k8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString
	K8S_POD_NAME               types.UnmarshallableString
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString
	K8S_POD_UID                types.UnmarshallableString
}

// ParsePodArgs reads K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_UID from a CNI_ARGS
// string ("K=V;K2=V2"). Unknown keys are ignored even without IgnoreUnknown=1:
// runtimes add keys of their own and rejecting them helps nobody.
func ParsePodArgs(s string) (PodArgs, error) {
	var a k8sArgs
	a.IgnoreUnknown = true
	if err := types.LoadArgs(s, &a); err != nil {
		return PodArgs{}, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("CNI_ARGS %q is not a list of KEY=VALUE pairs separated by ';': %s", s, oneLine(err)), "")
	}
	return PodArgs{Namespace: string(a.K8S_POD_NAMESPACE), Name: string(a.K8S_POD_NAME), UID: string(a.K8S_POD_UID)}, nil
}

// HostVethName is the name of the host side of the veth pair of one
// attachment: "nl" and the first 11 hex digits of sha256(containerID+ifName),
// 13 characters, deterministic so DEL finds it without state.
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + ifName))
	return "nl" + hex.EncodeToString(sum[:])[:11]
}

// attachment is the agent's answer, checked and parsed.
type attachment struct {
	IP      netip.Prefix // pod address with the subnet's length, 10.244.3.5/24
	Gateway netip.Addr   // 10.244.3.1, on the bridge
	MTU     int          // 0: kernel default
	Bridge  string
}

// parseAttachment checks what the agent answered to ADD or CHECK.
func parseAttachment(r api.CNIResponse) (attachment, error) {
	bad := func(format string, args ...any) (attachment, error) {
		return attachment{}, fmt.Errorf("netloom agent answered an unusable attachment: "+format, args...)
	}
	ipp, err := netip.ParsePrefix(r.IP)
	if err != nil {
		return bad("ip %q is not an address with prefix length: %v", r.IP, err)
	}
	if ipp.Addr().Zone() != "" || ipp.Addr().Is4In6() {
		return bad("ip %q is not a plain IPv4 or IPv6 address", r.IP)
	}
	gw, err := netip.ParseAddr(r.Gateway)
	if err != nil {
		return bad("gateway %q is not an address: %v", r.Gateway, err)
	}
	if !ipp.Masked().Contains(gw) || gw == ipp.Addr() {
		return bad("gateway %s is not another address of the pod subnet %s", gw, ipp.Masked())
	}
	if r.MTU != 0 && (r.MTU < 68 || r.MTU > 65535) {
		return bad("mtu %d is outside 68..65535", r.MTU)
	}
	if r.Bridge == "" || len(r.Bridge) > 15 || strings.ContainsAny(r.Bridge, "/ \t\n:") {
		return bad("bridge name %q is not a valid interface name", r.Bridge)
	}
	return attachment{IP: ipp, Gateway: gw, MTU: r.MTU, Bridge: r.Bridge}, nil
}

// link describes one end of the veth pair for the result.
type link struct {
	Name    string
	MAC     string
	MTU     int
	Sandbox string // netns path, pod side only
}

// buildResult is the ADD result: the host veth, the pod interface with its
// address, and a default route via the gateway.
func buildResult(a attachment, host, pod link) *types100.Result {
	def := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if a.IP.Addr().Is6() {
		def = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	return &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{
			{Name: host.Name, Mac: host.MAC, Mtu: host.MTU},
			{Name: pod.Name, Mac: pod.MAC, Mtu: pod.MTU, Sandbox: pod.Sandbox},
		},
		IPs: []*types100.IPConfig{{
			Interface: types100.Int(1),
			Address:   ipNet(a.IP),
			Gateway:   net.IP(a.Gateway.AsSlice()),
		}},
		Routes: []*types.Route{{Dst: ipNet(def), GW: net.IP(a.Gateway.AsSlice())}},
	}
}

// ipNet converts a prefix to net.IPNet keeping the address (not masked).
func ipNet(p netip.Prefix) net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}
