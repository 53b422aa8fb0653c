package drain

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Conntrack reads and deletes conntrack entries through a netlink handle
// (of a network namespace, or the agent's own).
type Conntrack struct {
	nl *netlink.Handle
}

// NewConntrack returns a Conntrack on handle h (nil: the current
// namespace).
func NewConntrack(h *netlink.Handle) *Conntrack {
	if h == nil {
		h = &netlink.Handle{}
	}
	return &Conntrack{nl: h}
}

// markFilter matches the entries whose drain mark is one of marks.
type markFilter map[uint32]bool

func (f markFilter) MatchConntrackFlow(fl *netlink.ConntrackFlow) bool {
	return f[fl.Mark&MarkMask]
}

// Flush deletes the conntrack entries marked with the slots (their drains
// ended: later packets of those flows are new to this node again).
func (c *Conntrack) Flush(slots []uint32) (uint, error) {
	if len(slots) == 0 {
		return 0, nil
	}
	f := markFilter{}
	for _, s := range slots {
		f[Mark(s)] = true
	}
	n, err := c.nl.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return n, fmt.Errorf("delete conntrack entries of ended drains: %w", err)
	}
	return n, nil
}

// TCP conntrack states (enum tcp_conntrack).
const (
	tcpSynSent  = 1
	tcpTimeWait = 7
	tcpClose    = 8
	tcpSynSent2 = 9
)

// Open counts the TCP connections to the VIPs this node forwards itself:
// entries whose original destination is one of vips, not yet closed
// (TIME_WAIT and CLOSE do not count), and not carrying a drain's mark
// (those it forwards on to another node). A leaving node waits for them.
func (c *Conntrack) Open(vips []netip.Addr) (int, error) {
	if len(vips) == 0 {
		return 0, nil
	}
	set := map[netip.Addr]bool{}
	for _, v := range vips {
		set[v.Unmap()] = true
	}
	flows, err := c.nl.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return 0, fmt.Errorf("list conntrack entries: %w", err)
	}
	n := 0
	for _, fl := range flows {
		if fl.Forward.Protocol != unix.IPPROTO_TCP || fl.Mark&MarkMask != 0 {
			continue
		}
		dst, ok := netip.AddrFromSlice(fl.Forward.DstIP)
		if !ok || !set[dst.Unmap()] {
			continue
		}
		if p, ok := fl.ProtoInfo.(*netlink.ProtoInfoTCP); ok {
			switch p.State {
			case tcpTimeWait, tcpClose, tcpSynSent, tcpSynSent2:
				// Closed, or never answered.
				continue
			}
		}
		n++
	}
	return n, nil
}

// Kernel is the drains' kernel side in one value: routing (Set) and
// conntrack (Flush, Open).
type Kernel struct {
	*Router
	*Conntrack
}

// NewKernel returns the kernel side on handle h (nil: the current
// namespace).
func NewKernel(h *netlink.Handle) Kernel {
	return Kernel{Router: NewRouter(h), Conntrack: NewConntrack(h)}
}
