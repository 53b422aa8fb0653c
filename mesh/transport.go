package mesh

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// transport is memberlist's network transport (UDP packets and TCP
// streams on one port) with its received packets sized to what arrived.
// memberlist's own NetTransport reads every packet into a new 64 KiB
// buffer and hands that on: at rest, with gossip packets of a few hundred
// bytes several times a second, that was 0.8 MB/s of garbage, most of
// what an idle agent allocated, and what kept its heap filling up between
// collections. This one reads into one buffer and hands on a copy of the
// bytes read (memberlist keeps a packet after the call: its handlers
// queue them).
type transport struct {
	log     *slog.Logger
	addr    netip.AddrPort
	udp     *net.UDPConn
	tcp     *net.TCPListener
	packets chan *memberlist.Packet
	streams chan net.Conn

	done     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// packetBuf is the read buffer: a UDP datagram is at most 64 KiB.
const packetBuf = 65536

// recvBuf is the UDP socket's receive buffer asked for, as memberlist's
// transport does, so that a burst of gossip is not dropped by the kernel.
const recvBuf = 2 << 20

// newTransport listens on addr for UDP and TCP.
func newTransport(addr netip.AddrPort, log *slog.Logger) (*transport, error) {
	tcp, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
	if err != nil {
		return nil, err
	}
	// Port 0: the port the kernel gave TCP, for UDP too.
	addr = netip.AddrPortFrom(addr.Addr(), uint16(tcp.Addr().(*net.TCPAddr).Port))
	udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		tcp.Close()
		return nil, err
	}
	if err := udp.SetReadBuffer(recvBuf); err != nil {
		log.Debug("gossip: the UDP receive buffer keeps its size", "err", err)
	}
	t := &transport{
		log: log, addr: addr, udp: udp, tcp: tcp,
		packets: make(chan *memberlist.Packet), streams: make(chan net.Conn),
		done: make(chan struct{}),
	}
	t.wg.Go(t.readPackets)
	t.wg.Go(t.acceptStreams)
	return t, nil
}

// FinalAdvertiseAddr implements memberlist.Transport: the address given,
// else the one listened on.
func (t *transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip == "" {
		return net.IP(t.addr.Addr().AsSlice()), int(t.addr.Port()), nil
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return nil, 0, fmt.Errorf("gossip advertise address %q: %w", ip, err)
	}
	return net.IP(a.Unmap().AsSlice()), port, nil
}

// WriteTo implements memberlist.Transport.
func (t *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.udp.WriteTo(b, ua)
	return time.Now(), err
}

// WriteToAddress implements memberlist.NodeAwareTransport.
func (t *transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

// PacketCh implements memberlist.Transport.
func (t *transport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout implements memberlist.Transport.
func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, timeout)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// StreamCh implements memberlist.Transport.
func (t *transport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown implements memberlist.Transport: it closes both sockets and
// waits for its goroutines.
func (t *transport) Shutdown() error {
	t.stopOnce.Do(func() {
		close(t.done)
		t.tcp.Close()
		t.udp.Close()
	})
	t.wg.Wait()
	return nil
}

func (t *transport) stopped() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// readPackets hands on every datagram received, in a buffer of its size.
func (t *transport) readPackets() {
	buf := make([]byte, packetBuf)
	for {
		n, from, err := t.udp.ReadFrom(buf)
		now := time.Now()
		if err != nil {
			if t.stopped() || errors.Is(err, net.ErrClosed) {
				return
			}
			t.log.Warn("gossip: read a UDP packet", "err", err)
			continue
		}
		if n == 0 {
			continue
		}
		b := make([]byte, n)
		copy(b, buf)
		p := &memberlist.Packet{Buf: b, From: from, Timestamp: now}
		select {
		case t.packets <- p:
		case <-t.done:
			return
		}
	}
}

// acceptStreams hands on every TCP connection accepted; after an error it
// waits, longer each time up to a second, as memberlist's transport does.
func (t *transport) acceptStreams() {
	var delay time.Duration
	for {
		c, err := t.tcp.Accept()
		if err != nil {
			if t.stopped() || errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Warn("gossip: accept a TCP connection", "err", err)
			select {
			case <-time.After(delay):
			case <-t.done:
				return
			}
			continue
		}
		delay = 0
		select {
		case t.streams <- c:
		case <-t.done:
			c.Close()
			return
		}
	}
}
