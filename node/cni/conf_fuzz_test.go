package cni

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzParseNetConf: the network configuration a runtime passes on stdin
// never panics the plugin; an error is a *types.Error with a one-line
// message (the runtime shows it as it is); an accepted configuration has
// a version, a name and an absolute socket path. (No round trip: the
// plugin never encodes a NetConf, and types.PluginConf's MarshalJSON drops
// the fields netloom adds.)
func FuzzParseNetConf(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.0.0","name":"netloom","type":"netloom","socket":"/run/x/agent.sock"}`,
		`{"cniVersion":"0.4.0","name":"netloom","type":"netloom"}`,
		`{"cniVersion":"1.0.0","name":"netloom","type":"netloom","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.3.2/24","gateway":"10.244.3.1","interface":1}]}}`,
		`{"cniVersion":"1.0.0","name":"netloom","type":"netloom","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],"ips":[{"address":"fd00::2/64","interface":0}],"routes":[{"dst":"0.0.0.0/0","gw":"10.244.3.1"}],"dns":{"nameservers":["10.96.0.10"]}}}`,
		`{"cniVersion":"0.3.1","name":"netloom","type":"netloom","prevResult":{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.244.3.2/24"}]}}`,
		`{"cniVersion":"1.0.0","name":"netloom","type":"netloom","capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[]},"args":{"cni":{"x":"y"}}}`,
		`{"cniVersion":"1.0.0",`,
		`{"cniVersion":"1.0.0","name":"netloom","type":"netloom","socket":5}`,
		`{"cniVersion":"1.0.0","name":["a"],"type":"netloom"}`,
		`{"cniVersion":"1.0.0","name":"netloom","type":"netloom","socket":"netloom.sock"}`,
		`{"cniVersion":"1.0.0","name":"netloom","type":"netloom","socket":"/run/a\nb.sock"}`,
		`{"name":"netloom","type":"netloom"}`,
		`{"cniVersion":"1.0.0","type":"netloom"}`,
		`{"cniVersion":"1.0.0","name":"netloom","type":"netloom","prevResult":{"ips":[{"address":"nope"}]}}`,
		`{"cniVersion":"1.0.0","name":"netloom","type":"netloom","prevResult":{"cniVersion":"9.9.9"}}`,
		`{"cniVersion":"1.0.0","name":"netloom","type":"netloom","prevResult":[]}`,
		``,
		`null`,
		`[]`,
		`"netloom"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseNetConf(data)
		if err != nil {
			checkCNIError(t, "ParseNetConf", err)
			return
		}
		if c.CNIVersion == "" || c.Name == "" || !filepath.IsAbs(c.Socket) {
			t.Fatalf("ParseNetConf accepted version %q, name %q, socket %q", c.CNIVersion, c.Name, c.Socket)
		}
	})
}

// FuzzParsePodArgs: CNI_ARGS never panics the plugin; an error is a
// *types.Error with a one-line message; what it reads is what the same pod
// identity, written again, reads as.
func FuzzParsePodArgs(f *testing.F) {
	for _, s := range []string{
		"",
		"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=123",
		"K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=dns;FOO=bar",
		"K8S_POD_NAME",
		"K8S_POD_NAME=a=b",
		"IgnoreUnknown=maybe;K8S_POD_NAME=x",
		"IgnoreUnknown=0;FOO=bar",
		"K8S_POD_NAME=;K8S_POD_NAMESPACE=",
		";;",
		"K8S_POD_NAME=a;K8S_POD_NAME=b",
		"K8S_POD_NAME=line\nbreak",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePodArgs(s)
		if err != nil {
			checkCNIError(t, "ParsePodArgs", err)
			return
		}
		again, err := ParsePodArgs("K8S_POD_NAMESPACE=" + p.Namespace + ";K8S_POD_NAME=" + p.Name + ";K8S_POD_UID=" + p.UID)
		if err != nil || again != p {
			t.Fatalf("ParsePodArgs(%q) = %+v, which written again reads %+v, %v", s, p, again, err)
		}
	})
}

func checkCNIError(t *testing.T, fn string, err error) {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("%s error is %T, want *types.Error: %v", fn, err, err)
	}
	if te.Code == 0 || te.Msg == "" {
		t.Fatalf("%s error without code or message: %+v", fn, te)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("%s error has more than one line: %q", fn, err.Error())
	}
}
