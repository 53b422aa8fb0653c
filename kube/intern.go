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

// The cache's objects repeat small maps and lists: every EndpointSlice of
// a service port named "http" has the port map {"http": 80}, the pods of a
// ReplicaSet have the same labels and container ports, and policies select
// by the same few labels ({"app": "web"}). Each such map is a few hundred
// bytes; with 10,000 policies their selectors' maps were 7 MB of a node's
// heap, with 10,000 slices their port maps 2.5 MB. An interner hands out
// one value per content. The values it hands out are shared and
// read-only, as cached objects are (client-go's rule).
type interner[T any] struct {
	mu sync.Mutex
	m  map[string]T
}

// maxInterned bounds an interner: when it holds that many contents it
// starts over (the values handed out stay valid; later ones are shared
// again from then on), so that a cluster of ever new labels does not
// grow it without end.
const maxInterned = 8192

var (
	portMaps  interner[map[string]uint16]  // EndpointSlice ports by name
	labelMaps interner[map[string]string]  // pod labels, policies' and services' selectors
	podPorts  interner[[]policy.NamedPort] // pods' named container ports
)

// get returns the value of content key handed out before, else v (kept
// for the next call).
func (in *interner[T]) get(key string, v T) T {
	in.mu.Lock()
	defer in.mu.Unlock()
	if got, ok := in.m[key]; ok {
		return got
	}
	if in.m == nil || len(in.m) >= maxInterned {
		in.m = map[string]T{}
	}
	in.m[key] = v
	return v
}

// internMap returns the map of m's content handed out by in before, else
// m. A nil or empty m is returned as it is.
func internMap[V cmp.Ordered](in *interner[map[string]V], m map[string]V) map[string]V {
	if len(m) == 0 {
		return m
	}
	var key strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		key.WriteString(strconv.Quote(k))
		key.WriteString(strconv.Quote(fmt.Sprint(m[k])))
	}
	return in.get(key.String(), m)
}

// internPorts returns the list of ps's content handed out by in before,
// else ps. An empty list is returned as it is.
func internPorts(in *interner[[]policy.NamedPort], ps []policy.NamedPort) []policy.NamedPort {
	if len(ps) == 0 {
		return ps
	}
	var key strings.Builder
	for _, p := range ps {
		key.WriteString(strconv.Quote(p.Name))
		key.WriteString(strconv.Itoa(int(p.Port)))
		key.WriteString(strconv.Quote(string(p.Protocol)))
	}
	return in.get(key.String(), ps)
}
