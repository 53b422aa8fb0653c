package objects

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPodView(t *testing.T) {
	const meta = `"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"x"}`
	tests := []struct {
		name          string
		raw           string
		ip, node      string
		want, wantErr string
	}{
		{
			name: "a pod attached by CNI without a stored document",
			ip:   "10.244.3.5", node: "edge-3",
			want: `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"lonely","namespace":"team-b"},"spec":{"nodeName":"edge-3"},"status":{"podIP":"10.244.3.5","podIPs":[{"ip":"10.244.3.5"}]}}`,
		},
		{
			name: "a stored pod that attached",
			raw:  `{` + meta + `,"spec":{"containers":[{"name":"c","ports":[{"containerPort":8080}]}]}}`,
			ip:   "10.244.3.5", node: "edge-3",
			want: `{` + meta + `,"spec":{"containers":[{"name":"c","ports":[{"containerPort":8080}]}],"nodeName":"edge-3"},"status":{"podIP":"10.244.3.5","podIPs":[{"ip":"10.244.3.5"}]}}`,
		},
		{
			name: "a stored pod not attached, with stale facts of an export",
			raw:  `{` + meta + `,"spec":{"nodeName":"k8s-1","terminationGracePeriodSeconds":1000000000000000001},"status":{"podIP":"10.1.1.1","podIPs":[{"ip":"10.1.1.1"}]}}`,
			want: `{` + meta + `,"spec":{"terminationGracePeriodSeconds":1000000000000000001}}`,
		},
		{
			name: "no node yet, an empty spec",
			raw:  `{` + meta + `}`,
			want: `{` + meta + `}`,
		},
		{name: "not an object", raw: `[1]`, wantErr: "pod view team-b/lonely: json: cannot unmarshal array into Go value of type map[string]interface {}"},
		{name: "null", raw: `null`, wantErr: "pod view team-b/lonely: no document"},
	}
	for _, tt := range tests {
		got, err := PodView(json.RawMessage(tt.raw), "team-b", "lonely", tt.ip, tt.node)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("%s: PodView error = %v, want %s", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: PodView: %v", tt.name, err)
			continue
		}
		if diff := cmp.Diff(tt.want, string(got)); diff != "" {
			t.Errorf("%s: PodView (-want +got):\n%s", tt.name, diff)
		}
		if _, err := DecodePod(got); err != nil {
			t.Errorf("%s: DecodePod(view): %v", tt.name, err)
		}
	}
}

func TestServiceView(t *testing.T) {
	const head = `"apiVersion":"v1","kind":"Service"`
	tests := []struct {
		name, raw string
		pl        ServicePlace
		want      string
	}{
		{
			name: "a LoadBalancer with its addresses",
			raw:  `{` + head + `,"metadata":{"name":"web","namespace":"x"},"spec":{"ports":[{"port":80}],"type":"LoadBalancer"}}`,
			pl:   ServicePlace{ClusterIP: "10.96.0.11", ExternalIP: "192.168.1.243", Owner: "edge-1", Conflict: "requested address 192.168.1.242 is held by older service shop/web"},
			want: `{` + head + `,"metadata":{"annotations":{"netloom.io/announced-by":"edge-1","netloom.io/conflict":"requested address 192.168.1.242 is held by older service shop/web"},"name":"web","namespace":"x"},` +
				`"spec":{"clusterIP":"10.96.0.11","clusterIPs":["10.96.0.11"],"ports":[{"port":80}],"type":"LoadBalancer"},"status":{"loadBalancer":{"ingress":[{"ip":"192.168.1.243"}]}}}`,
		},
		{
			name: "pending, with stale facts applied from an earlier get",
			raw: `{` + head + `,"metadata":{"annotations":{"netloom.io/announced-by":"edge-9","netloom.io/address-pool":"lan"},"name":"web","namespace":"x"},` +
				`"spec":{"clusterIP":"10.1.0.1","clusterIPs":["10.1.0.1"],"ports":[{"port":80}]},"status":{"loadBalancer":{"ingress":[{"ip":"1.2.3.4"}]}}}`,
			pl: ServicePlace{Pending: "requested clusterIP 10.1.0.1 is not in the service CIDR 10.96.0.0/16"},
			want: `{` + head + `,"metadata":{"annotations":{"netloom.io/address-pool":"lan","netloom.io/pending":"requested clusterIP 10.1.0.1 is not in the service CIDR 10.96.0.0/16"},"name":"web","namespace":"x"},` +
				`"spec":{"ports":[{"port":80}]},"status":{"loadBalancer":{}}}`,
		},
		{
			name: "nothing decided yet",
			raw:  `{` + head + `,"metadata":{"name":"web","namespace":"x"},"spec":{"ports":[{"port":80}]}}`,
			want: `{` + head + `,"metadata":{"name":"web","namespace":"x"},"spec":{"ports":[{"port":80}]},"status":{"loadBalancer":{}}}`,
		},
	}
	for _, tt := range tests {
		got, err := ServiceView(json.RawMessage(tt.raw), tt.pl)
		if err != nil {
			t.Errorf("%s: ServiceView: %v", tt.name, err)
			continue
		}
		if diff := cmp.Diff(tt.want, string(got)); diff != "" {
			t.Errorf("%s: ServiceView (-want +got):\n%s", tt.name, diff)
		}
	}
	if _, err := ServiceView(nil, ServicePlace{}); err == nil || err.Error() != "service view: EOF" {
		t.Errorf("ServiceView(nil) error = %v", err)
	}
}

func TestPolicyView(t *testing.T) {
	const raw = `{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"p","namespace":"x"},"spec":{"podSelector":{}}}`
	const head = `{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"p","namespace":"x"},"spec":{"podSelector":{}},"status":`
	type counts struct {
		Node    string `json:"node"`
		Dropped uint64 `json:"droppedPackets"`
	}
	tests := []struct {
		name     string
		selects  []string
		counters any
		want     string
	}{
		{"selects pods, with counters", []string{"x/a", "x/b"}, &counts{"edge-1", 7}, head + `{"counters":{"node":"edge-1","droppedPackets":7},"selectedPods":["x/a","x/b"]}}`},
		{"selects none", nil, nil, head + `{"selectedPods":[]}}`},
	}
	for _, tt := range tests {
		got, err := PolicyView(json.RawMessage(raw), tt.selects, tt.counters)
		if err != nil {
			t.Errorf("%s: PolicyView: %v", tt.name, err)
			continue
		}
		if diff := cmp.Diff(tt.want, string(got)); diff != "" {
			t.Errorf("%s: PolicyView (-want +got):\n%s", tt.name, diff)
		}
		if _, err := DecodeNetworkPolicy(got); err != nil {
			t.Errorf("%s: DecodeNetworkPolicy(view): %v", tt.name, err)
		}
	}
}
