package kube

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/netloom/netloom/firewall/policy"
)

// The cache's objects repeat small maps: every EndpointSlice of a
// service port named "http" has the port map {"http": 80}, the pods of a
// ReplicaSet have the same labels, and policies select by the same few
// labels ({"app": "web"}). Each such map is a few hundred bytes; with
// 10,000 policies their selectors' maps were 7 MB of a node's heap, with
// 10,000 slices their port maps 2.5 MB. An interner hands out one map per
// content. The maps it hands out are shared and read-only, as cached
// objects are (client-go's rule).
type interner[V cmp.Ordered] struct {
	mu sync.Mutex
	m  map[string]map[string]V
}

// maxInterned bounds an interner: when it holds that many contents it
// starts over (the maps handed out stay valid; later ones are shared
// again from then on), so that a cluster of ever new labels does not
// grow it without end.
const maxInterned = 8192

var (
	portMaps  interner[uint16] // EndpointSlice ports by name
	labelMaps interner[string] // pod labels, policies' selectors, services' selectors
	podPorts  portLists        // pods' named container ports
)

// intern returns the map of m's content handed out before, else m (kept
// for the next call). A nil or empty m is returned as it is.
func (in *interner[V]) intern(m map[string]V) map[string]V {
	if len(m) == 0 {
		return m
	}
	var key strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		key.WriteString(strconv.Quote(k))
		key.WriteString(strconv.Quote(fmt.Sprint(m[k])))
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if got, ok := in.m[key.String()]; ok {
		return got
	}
	if in.m == nil || len(in.m) >= maxInterned {
		in.m = map[string]map[string]V{}
	}
	in.m[key.String()] = m
	return m
}

// portLists hands out one list of named ports per content, as interner
// does maps: the pods of a Deployment have the same container ports, and
// the policy compiler's copy of the pods shares what they share.
type portLists struct {
	mu sync.Mutex
	m  map[string][]policy.NamedPort
}

// intern returns the list of ps's content handed out before, else ps
// (kept for the next call). An empty list is returned as it is.
func (in *portLists) intern(ps []policy.NamedPort) []policy.NamedPort {
	if len(ps) == 0 {
		return ps
	}
	var key strings.Builder
	for _, p := range ps {
		key.WriteString(strconv.Quote(p.Name))
		key.WriteString(strconv.Itoa(int(p.Port)))
		key.WriteString(strconv.Quote(string(p.Protocol)))
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if got, ok := in.m[key.String()]; ok {
		return got
	}
	if in.m == nil || len(in.m) >= maxInterned {
		in.m = map[string][]policy.NamedPort{}
	}
	in.m[key.String()] = ps
	return ps
}
