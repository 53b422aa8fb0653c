package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/google/renameio/v2"
)

// ErrExhausted is matched (with errors.Is) by the error Allocate returns
// when the node subnet has no free pod address left.
var ErrExhausted = errors.New("node subnet has no free pod address left")

type exhaustedError struct{ subnet netip.Prefix }

func (e *exhaustedError) Error() string {
	return fmt.Sprintf("node subnet %s has no free pod address left; delete unused pods or give nodes larger subnets", e.subnet)
}

func (e *exhaustedError) Is(target error) bool { return target == ErrExhausted }

// ErrNoSubnet is returned by Allocate while the allocator has no subnet.
var ErrNoSubnet = errors.New("node has no pod subnet yet; wait until the node has joined the cluster")

// Allocation is one pod address handed out.
type Allocation struct {
	// IP is the address with the prefix length of the subnet it was
	// allocated from, e.g. 10.244.3.5/24.
	IP    netip.Prefix `json:"ip"`
	Owner string       `json:"owner"` // e.g. "namespace/pod"
}

// allocFile is the on-disk form.
type allocFile struct {
	Version     int                   `json:"version"`
	Subnet      netip.Prefix          `json:"subnet"`
	Last        netip.Addr            `json:"last"`
	Allocations map[string]Allocation `json:"allocations"`
}

const allocFileVersion = 1

// Allocator hands out pod addresses of one node subnet and persists them to
// a JSON file. It is safe for concurrent use.
type Allocator struct {
	path string

	mu     sync.Mutex
	subnet netip.Prefix
	last   netip.Addr
	allocs map[string]Allocation
	used   map[netip.Addr]string // address -> id
}

// OpenAllocator loads the allocations stored at path (a missing file is an
// empty allocator) and sets the subnet to subnet, as SetSubnet does. An
// invalid (zero) subnet keeps the stored one; Allocate fails with
// ErrNoSubnet until there is one. The directory of path is created 0700.
func OpenAllocator(path string, subnet netip.Prefix) (*Allocator, error) {
	a := &Allocator{
		path:   path,
		allocs: map[string]Allocation{},
		used:   map[netip.Addr]string{},
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("open allocator: %w", err)
	default:
		var f allocFile
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("pod addresses file %s is corrupt (%v): move it away and restart, then re-create this node's pods (their addresses are no longer reserved)", path, err)
		}
		if f.Version != allocFileVersion {
			return nil, fmt.Errorf("open allocator: %s has version %d, this netloom reads version %d; upgrade netloom or move the file away", path, f.Version, allocFileVersion)
		}
		a.subnet, a.last = f.Subnet, f.Last
		for id, al := range f.Allocations {
			if !al.IP.IsValid() || id == "" {
				continue
			}
			if _, dup := a.used[al.IP.Addr()]; dup {
				continue // cannot happen unless edited by hand: keep the first
			}
			a.allocs[id] = al
			a.used[al.IP.Addr()] = id
		}
	}
	if subnet.IsValid() {
		if err := a.SetSubnet(subnet); err != nil {
			return nil, fmt.Errorf("open allocator: %w", err)
		}
	}
	return a, nil
}

// Subnet returns the subnet new addresses come from (zero if none yet).
func (a *Allocator) Subnet() netip.Prefix {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.subnet
}

// SetSubnet changes the subnet new addresses come from. Allocations outside
// p stay recorded (they belong to running pods) and are reported by Stale;
// they are removed only by Release.
func (a *Allocator) SetSubnet(p netip.Prefix) error {
	if err := checkPodSubnet(p); err != nil {
		return fmt.Errorf("set subnet: %w", err)
	}
	p = p.Masked()
	a.mu.Lock()
	defer a.mu.Unlock()
	if p == a.subnet {
		return nil
	}
	old, oldLast := a.subnet, a.last
	a.subnet = p
	if !p.Contains(a.last) {
		a.last = netip.Addr{}
	}
	if err := a.saveLocked(); err != nil {
		a.subnet, a.last = old, oldLast
		return fmt.Errorf("set subnet: %w", err)
	}
	return nil
}

func checkPodSubnet(p netip.Prefix) error {
	if !p.IsValid() {
		return errors.New("pod subnet is not set")
	}
	if maxBits := p.Addr().BitLen() - 2; p.Bits() > maxBits {
		return fmt.Errorf("pod subnet %s is too small; use a /%d or larger", p, maxBits)
	}
	return nil
}

// Allocate hands out an address for id (containerID+"/"+ifname) on behalf
// of owner. It is idempotent: an id that already holds an address in the
// current subnet gets the same one back (an id whose address lies outside
// the current subnet gets a new one instead). Network address, gateway and
// the last address of the subnet are never handed out; the search continues
// after the last address handed out and wraps around. The error matches
// ErrExhausted when the subnet is full.
func (a *Allocator) Allocate(id, owner string) (netip.Prefix, error) {
	if id == "" {
		return netip.Prefix{}, errors.New("allocate: empty id")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.subnet.IsValid() {
		return netip.Prefix{}, fmt.Errorf("allocate: %w", ErrNoSubnet)
	}
	prev, had := a.allocs[id]
	if had && prev.IP.Bits() == a.subnet.Bits() && a.subnet.Contains(prev.IP.Addr()) {
		return prev.IP, nil
	}
	ip, ok := nextFree(a.subnet, a.last, a.used)
	if !ok {
		return netip.Prefix{}, fmt.Errorf("allocate: %w", &exhaustedError{subnet: a.subnet})
	}
	oldLast := a.last
	al := Allocation{IP: netip.PrefixFrom(ip, a.subnet.Bits()), Owner: owner}
	if had {
		delete(a.used, prev.IP.Addr())
	}
	a.allocs[id] = al
	a.used[ip] = id
	a.last = ip
	if err := a.saveLocked(); err != nil {
		delete(a.used, ip)
		if had {
			a.allocs[id] = prev
			a.used[prev.IP.Addr()] = id
		} else {
			delete(a.allocs, id)
		}
		a.last = oldLast
		return netip.Prefix{}, fmt.Errorf("allocate: %w", err)
	}
	return al.IP, nil
}

// nextFree returns the first usable address of subnet after last (wrapping)
// that is not in used.
func nextFree(subnet netip.Prefix, last netip.Addr, used map[netip.Addr]string) (netip.Addr, bool) {
	first := Gateway(subnet).Next()
	end := lastAddr(subnet) // excluded
	// Count used addresses inside the usable range: if the range is
	// smaller than or equal to that, it is full. Otherwise a scan of at
	// most len(used)+1 addresses finds a free one.
	inside := 0
	for ip := range used {
		if subnet.Contains(ip) && ip.Compare(first) >= 0 && ip.Less(end) {
			inside++
		}
	}
	if usable := usableCount(subnet); usable >= 0 && uint64(inside) >= uint64(usable) {
		return netip.Addr{}, false
	}
	ip := first
	if last.IsValid() && subnet.Contains(last) && last.Compare(first) >= 0 && last.Less(end) {
		ip = last.Next()
	}
	for range inside + 1 {
		if !ip.Less(end) {
			ip = first
		}
		if _, taken := used[ip]; !taken {
			return ip, true
		}
		ip = ip.Next()
	}
	return netip.Addr{}, false
}

// usableCount is the number of addresses Allocate may hand out in subnet,
// or -1 when it exceeds an int64.
func usableCount(subnet netip.Prefix) int64 {
	hostBits := subnet.Addr().BitLen() - subnet.Bits()
	if hostBits >= 62 {
		return -1
	}
	return int64(1)<<hostBits - 3
}

// lastAddr returns the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	p = p.Masked()
	a := p.Addr()
	return u128From(a).or(u128Ones(uint(a.BitLen() - p.Bits()))).addr(a.Is4())
}

// Release frees the address of id and returns it. Releasing an unknown id
// is not an error: it returns false.
func (a *Allocator) Release(id string) (netip.Addr, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	al, ok := a.allocs[id]
	if !ok {
		return netip.Addr{}, false, nil
	}
	delete(a.allocs, id)
	delete(a.used, al.IP.Addr())
	if err := a.saveLocked(); err != nil {
		a.allocs[id] = al
		a.used[al.IP.Addr()] = id
		return netip.Addr{}, false, fmt.Errorf("release %s: %w", id, err)
	}
	return al.IP.Addr(), true, nil
}

// Lookup returns the address held by id.
func (a *Allocator) Lookup(id string) (netip.Prefix, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	al, ok := a.allocs[id]
	return al.IP, ok
}

// Allocations returns a copy of all allocations by id, including stale ones.
func (a *Allocator) Allocations() map[string]Allocation {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.allocs)
}

// Stale returns the allocations left over from a previous subnet: outside
// the current subnet or with another prefix length. Their pods need a new
// address.
func (a *Allocator) Stale() map[string]Allocation {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]Allocation{}
	for id, al := range a.allocs {
		if !a.subnet.Contains(al.IP.Addr()) || al.IP.Bits() != a.subnet.Bits() {
			out[id] = al
		}
	}
	return out
}

// saveLocked writes the state atomically (renameio: temp file, fsync,
// rename): a crash leaves the old file or the new one. The file is 0600.
func (a *Allocator) saveLocked() error {
	b, err := json.MarshalIndent(allocFile{
		Version:     allocFileVersion,
		Subnet:      a.subnet,
		Last:        a.last,
		Allocations: a.allocs,
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("save %s: %w", a.path, err)
	}
	return writeFileAtomic(a.path, append(b, '\n'))
}

func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := renameio.WriteFile(path, data, 0o600, renameio.WithTempDir(dir)); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}
