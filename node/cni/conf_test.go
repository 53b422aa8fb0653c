package cni

import (
	"encoding/json"
	"errors"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/go-cmp/cmp"

	"github.com/netloom/netloom/node/api"
)

func TestParseNetConf(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		socket   string
		version  string
		prevIPs  []string
		wantCode uint
		wantMsg  string // substring of the error
	}{
		{
			name:    "full",
			in:      `{"cniVersion":"1.0.0","name":"netloom","type":"netloom","socket":"/run/x/agent.sock"}`,
			socket:  "/run/x/agent.sock",
			version: "1.0.0",
		},
		{
			name:    "default socket",
			in:      `{"cniVersion":"0.4.0","name":"netloom","type":"netloom"}`,
			socket:  api.DefaultSocket,
			version: "0.4.0",
		},
		{
			name:    "prevResult",
			in:      `{"cniVersion":"1.0.0","name":"netloom","type":"netloom","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.3.2/24","gateway":"10.244.3.1","interface":1}]}}`,
			socket:  api.DefaultSocket,
			version: "1.0.0",
			prevIPs: []string{"10.244.3.2/24"},
		},
		{
			name:     "not json",
			in:       `{"cniVersion":"1.0.0",`,
			wantCode: types.ErrDecodingFailure,
			wantMsg:  "not valid JSON",
		},
		{
			name:     "socket wrong type",
			in:       `{"cniVersion":"1.0.0","name":"netloom","type":"netloom","socket":5}`,
			wantCode: types.ErrDecodingFailure,
			wantMsg:  `field "socket" must be a string, not a number`,
		},
		{
			name:     "name wrong type",
			in:       `{"cniVersion":"1.0.0","name":["a"],"type":"netloom"}`,
			wantCode: types.ErrDecodingFailure,
			wantMsg:  `field "name" must be a string, not an array`,
		},
		{
			name:     "socket relative",
			in:       `{"cniVersion":"1.0.0","name":"netloom","type":"netloom","socket":"netloom.sock"}`,
			wantCode: types.ErrInvalidNetworkConfig,
			wantMsg:  `field "socket" must be an absolute path`,
		},
		{
			name:     "no cniVersion",
			in:       `{"name":"netloom","type":"netloom"}`,
			wantCode: types.ErrInvalidNetworkConfig,
			wantMsg:  `field "cniVersion" is missing`,
		},
		{
			name:     "no name",
			in:       `{"cniVersion":"1.0.0","type":"netloom"}`,
			wantCode: types.ErrInvalidNetworkConfig,
			wantMsg:  `field "name" is missing`,
		},
		{
			name:     "bad prevResult",
			in:       `{"cniVersion":"1.0.0","name":"netloom","type":"netloom","prevResult":{"ips":[{"address":"nope"}]}}`,
			wantCode: types.ErrDecodingFailure,
			wantMsg:  `field "prevResult"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseNetConf([]byte(tt.in))
			if tt.wantMsg != "" {
				var te *types.Error
				if !errors.As(err, &te) {
					t.Fatalf("ParseNetConf() error = %v, want *types.Error", err)
				}
				if te.Code != tt.wantCode || !strings.Contains(te.Msg, tt.wantMsg) || strings.Contains(te.Msg, "\n") {
					t.Fatalf("ParseNetConf() error = code %d %q, want code %d containing %q on one line", te.Code, te.Msg, tt.wantCode, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseNetConf() error = %v", err)
			}
			var ips []string
			if c.PrevResult != nil {
				r, err := types100.NewResultFromResult(c.PrevResult)
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range r.IPs {
					ips = append(ips, c.Address.String())
				}
			}
			got := []any{c.Socket, c.CNIVersion, c.Name, ips}
			want := []any{tt.socket, tt.version, "netloom", tt.prevIPs}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("ParseNetConf() (-want +got):\n%s", d)
			}
		})
	}
}

func TestParsePodArgs(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    PodArgs
		wantErr bool
	}{
		{name: "empty", in: ""},
		{
			name: "kubelet",
			in:   "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=123",
			want: PodArgs{Namespace: "default", Name: "web-0", UID: "123"},
		},
		{
			name: "unknown keys without IgnoreUnknown",
			in:   "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=dns;FOO=bar",
			want: PodArgs{Namespace: "kube-system", Name: "dns"},
		},
		{name: "not pairs", in: "K8S_POD_NAME", wantErr: true},
		{name: "two equals", in: "K8S_POD_NAME=a=b", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePodArgs(tt.in)
			if tt.wantErr {
				var te *types.Error
				if !errors.As(err, &te) || te.Code != types.ErrInvalidEnvironmentVariables || !strings.Contains(te.Msg, "CNI_ARGS") {
					t.Fatalf("ParsePodArgs(%q) error = %v, want a CNI_ARGS types.Error", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePodArgs(%q) error = %v", tt.in, err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("ParsePodArgs(%q) (-want +got):\n%s", tt.in, d)
			}
		})
	}
}

func TestHostVethName(t *testing.T) {
	valid := regexp.MustCompile(`^nl[0-9a-f]{11}$`)
	a := HostVethName("0123456789abcdef", "eth0")
	if !valid.MatchString(a) || len(a) > 15 {
		t.Fatalf("HostVethName() = %q, want nl + 11 hex digits", a)
	}
	if b := HostVethName("0123456789abcdef", "eth0"); b != a {
		t.Errorf("HostVethName() not deterministic: %q then %q", a, b)
	}
	for _, other := range [][2]string{{"0123456789abcdef", "eth1"}, {"0123456789abcdee", "eth0"}} {
		if b := HostVethName(other[0], other[1]); b == a {
			t.Errorf("HostVethName(%q, %q) = %q, same as for another attachment", other[0], other[1], b)
		}
	}
	// Pinned: DEL of a pod added by an older binary must find the same name.
	if got, want := HostVethName("abc", "eth0"), "nla06d7003e19"; got != want {
		t.Errorf("HostVethName(abc, eth0) = %q, want %q", got, want)
	}
}

func TestParseAttachment(t *testing.T) {
	ok := api.CNIResponse{IP: "10.244.3.5/24", Gateway: "10.244.3.1", MTU: 1420, Bridge: "netloom-br0"}
	tests := []struct {
		name    string
		mod     func(r *api.CNIResponse)
		want    attachment
		wantErr string
	}{
		{
			name: "ok",
			want: attachment{IP: netip.MustParsePrefix("10.244.3.5/24"), Gateway: netip.MustParseAddr("10.244.3.1"), MTU: 1420, Bridge: "netloom-br0"},
		},
		{
			name: "mtu 0",
			mod:  func(r *api.CNIResponse) { r.MTU = 0 },
			want: attachment{IP: netip.MustParsePrefix("10.244.3.5/24"), Gateway: netip.MustParseAddr("10.244.3.1"), Bridge: "netloom-br0"},
		},
		{
			name: "ipv6",
			mod:  func(r *api.CNIResponse) { r.IP, r.Gateway = "fd00:10::5/64", "fd00:10::1" },
			want: attachment{IP: netip.MustParsePrefix("fd00:10::5/64"), Gateway: netip.MustParseAddr("fd00:10::1"), MTU: 1420, Bridge: "netloom-br0"},
		},
		{name: "ip without length", mod: func(r *api.CNIResponse) { r.IP = "10.244.3.5" }, wantErr: `ip "10.244.3.5"`},
		{name: "bad gateway", mod: func(r *api.CNIResponse) { r.Gateway = "x" }, wantErr: `gateway "x"`},
		{name: "gateway outside", mod: func(r *api.CNIResponse) { r.Gateway = "10.244.4.1" }, wantErr: "not another address of the pod subnet 10.244.3.0/24"},
		{name: "gateway is pod", mod: func(r *api.CNIResponse) { r.Gateway = "10.244.3.5" }, wantErr: "not another address"},
		{name: "mtu", mod: func(r *api.CNIResponse) { r.MTU = 20 }, wantErr: "mtu 20"},
		{name: "no bridge", mod: func(r *api.CNIResponse) { r.Bridge = "" }, wantErr: "bridge name"},
		{name: "long bridge", mod: func(r *api.CNIResponse) { r.Bridge = "a-very-long-bridge" }, wantErr: "bridge name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ok
			if tt.mod != nil {
				tt.mod(&r)
			}
			got, err := parseAttachment(r)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseAttachment() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseAttachment() error = %v", err)
			}
			if d := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
				t.Errorf("parseAttachment() (-want +got):\n%s", d)
			}
		})
	}
}

func TestBuildResult(t *testing.T) {
	a := attachment{IP: netip.MustParsePrefix("10.244.3.5/24"), Gateway: netip.MustParseAddr("10.244.3.1"), MTU: 1420, Bridge: "br"}
	r := buildResult(a,
		link{Name: "nl0123456789a", MAC: "aa:bb:cc:dd:ee:01", MTU: 1420},
		link{Name: "eth0", MAC: "aa:bb:cc:dd:ee:02", MTU: 1420, Sandbox: "/var/run/netns/x"})
	v1, err := r.GetAsVersion("1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(v1)
	if err != nil {
		t.Fatal(err)
	}
	var got any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	var want any
	if err := json.Unmarshal([]byte(`{
		"cniVersion": "1.0.0",
		"interfaces": [
			{"name": "nl0123456789a", "mac": "aa:bb:cc:dd:ee:01", "mtu": 1420},
			{"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "mtu": 1420, "sandbox": "/var/run/netns/x"}
		],
		"ips": [{"interface": 1, "address": "10.244.3.5/24", "gateway": "10.244.3.1"}],
		"routes": [{"dst": "0.0.0.0/0", "gw": "10.244.3.1"}]
	}`), &want); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("buildResult() JSON (-want +got):\n%s", d)
	}

	// Older configurations get the same content in their format.
	old, err := r.GetAsVersion("0.3.1")
	if err != nil {
		t.Fatalf("GetAsVersion(0.3.1): %v", err)
	}
	if b, _ := json.Marshal(old); !strings.Contains(string(b), `"version":"4"`) {
		t.Errorf("0.3.1 result = %s, want an IPv4 entry", b)
	}
}

func TestBridgeMAC(t *testing.T) {
	m := bridgeMAC("netloom0", netip.MustParsePrefix("10.244.3.1/24"))
	if m[0]&0x01 != 0 || m[0]&0x02 == 0 {
		t.Errorf("bridgeMAC() = %s, want a locally administered unicast address", m)
	}
	if o := bridgeMAC("netloom0", netip.MustParsePrefix("10.244.4.1/24")); o.String() == m.String() {
		t.Errorf("bridgeMAC() same for two nodes: %s", m)
	}
}
