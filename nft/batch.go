package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Sending a transaction on the Applier's own socket. nftables.Conn.Flush
// asks the kernel to acknowledge every message of a batch and to echo every
// new rule, and reads the answers one recvmsg (after a peeking one) at a
// time: for a full table of 10^4 policies that is some 35,000 acks, a fifth
// of the time of the Apply. It also drops the echoes, which carry the
// handles of the new rules that rule-level edits need.
//
// When the Applier owns its connection, it queues the transaction on a
// capturing nftables.Conn (nftables' own encoding, nothing sent) and sends
// the captured batch itself on the connection's socket, with
//   - no acknowledgement requested but for the last message: the kernel
//     reports every failing message anyway, and it processes a batch
//     synchronously within sendmsg, so when the last message's ack (or an
//     error) arrives everything the batch produced has been queued;
//   - NLM_F_ECHO on new rules only, whose echoes give their handles (the
//     kernel coalesces notifications into few datagrams);
//   - one buffer for the whole batch and one for reading.

// ruleLog records, in queueing order, which rule of the new model each
// NEWRULE message creates (chain and index in its rules).
type ruleLog struct {
	slots []ruleSlot
}

type ruleSlot struct {
	chain string
	index int
}

func (rl *ruleLog) add(chain string, index int) {
	if rl != nil {
		rl.slots = append(rl.slots, ruleSlot{chain, index})
	}
}

var errCaptured = errors.New("batch captured")

// captureBatch runs queue on a Conn that sends nothing and returns the
// batch it would have sent (BATCH_BEGIN, the messages, BATCH_END).
func captureBatch(queue func(c *nftables.Conn) (int, error)) ([]netlink.Message, int, error) {
	var got []netlink.Message
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if req == nil {
			// Flush reads the acks: end it at the first read.
			return nil, syscall.ENOBUFS
		}
		got = req
		return nil, nil
	}))
	if err != nil {
		return nil, 0, err
	}
	n, err := queue(c)
	if err != nil {
		return nil, n, err
	}
	if err := c.Flush(); got == nil {
		if err == nil {
			err = errors.New("nothing queued")
		}
		return nil, n, err
	}
	return got, n, nil
}

var (
	newRuleType = netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWRULE)
	batchBegin  = netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN)
	batchEnd    = netlink.HeaderType(unix.NFNL_MSG_BATCH_END)
)

// batchTimeout bounds the wait for the kernel's answer after sendmsg
// returned (by then the kernel has processed the batch; this is a guard).
const batchTimeout = 30 * time.Second

// sendBatch sends a captured batch on nl and returns the handle the kernel
// gave to the rule of each NEWRULE message, in order (0 where unknown).
// An error means the batch was refused (nothing changed) or its fate is
// unknown; either way the connection should be dropped.
func sendBatch(nl *netlink.Conn, msgs []netlink.Message, seq *uint32) ([]uint64, error) {
	if len(msgs) < 3 || msgs[0].Header.Type != batchBegin || msgs[len(msgs)-1].Header.Type != batchEnd {
		return nil, errors.New("malformed batch")
	}
	if uint64(*seq)+uint64(len(msgs))+1 >= 1<<32 {
		*seq = 0
	}
	base := *seq + 1
	*seq += uint32(len(msgs))
	last := len(msgs) - 2 // the last message before BATCH_END

	size := 0
	for _, m := range msgs {
		size += unix.NLMSG_HDRLEN + nlAlign(len(m.Data))
	}
	buf := make([]byte, size)
	off := 0
	var ruleMsgs []int // message index of each NEWRULE
	for i, m := range msgs {
		flags := m.Header.Flags &^ (netlink.Acknowledge | netlink.Echo)
		if m.Header.Type == newRuleType {
			flags |= netlink.Echo
			ruleMsgs = append(ruleMsgs, i)
		}
		if i == last {
			flags |= netlink.Acknowledge
		}
		ne := binary.NativeEndian
		ne.PutUint32(buf[off:], uint32(unix.NLMSG_HDRLEN+len(m.Data)))
		ne.PutUint16(buf[off+4:], uint16(m.Header.Type))
		ne.PutUint16(buf[off+6:], uint16(flags))
		ne.PutUint32(buf[off+8:], base+uint32(i))
		ne.PutUint32(buf[off+12:], 0)
		copy(buf[off+unix.NLMSG_HDRLEN:], m.Data)
		off += unix.NLMSG_HDRLEN + nlAlign(len(m.Data))
	}

	raw, err := nl.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	err = raw.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), buf, nil, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}, 0)
		return serr != unix.EAGAIN
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return nil, fmt.Errorf("send batch: %w", err)
	}

	handles := make([]uint64, len(msgs))
	var errs []error
	done := false
	rbuf := make([]byte, 1<<18)
	if err := nl.SetReadDeadline(time.Now().Add(batchTimeout)); err != nil {
		return nil, err
	}
	defer nl.SetReadDeadline(time.Time{})
	var rerr error
	err = raw.Read(func(fd uintptr) bool {
		for {
			n, _, e := unix.Recvfrom(int(fd), rbuf, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
			if e == unix.EINTR {
				continue
			}
			if e == unix.EAGAIN {
				return done // wait for more until the last answer came
			}
			if e != nil {
				rerr = e
				return true
			}
			if n > len(rbuf) {
				n = len(rbuf) // an error quoting a large request: its head is enough
			}
			for b := rbuf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
				ne := binary.NativeEndian
				l := int(ne.Uint32(b))
				typ := netlink.HeaderType(ne.Uint16(b[4:]))
				s := ne.Uint32(b[8:])
				if l < unix.NLMSG_HDRLEN || l > len(b) {
					l = len(b)
				}
				data := b[unix.NLMSG_HDRLEN:l]
				i := int(s - base)
				inBatch := s >= base && i < len(msgs)
				switch {
				case typ == netlink.Error && len(data) >= 4:
					if code := int32(ne.Uint32(data)); code != 0 {
						what := "message"
						if inBatch {
							what = fmt.Sprintf("message %d (%s)", i, msgName(msgs[i].Header.Type))
						}
						errs = append(errs, fmt.Errorf("%s: %w", what, syscall.Errno(-code)))
						done = true // all answers are queued by now
					}
					if inBatch && i == last {
						done = true
					}
				case typ == newRuleType && inBatch:
					handles[i] = ruleHandle(data)
				}
				b = b[min(nlAlign(l), len(b)):]
			}
		}
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return nil, fmt.Errorf("receive batch answers: %w", err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("batch refused: %w", joinOneLine(errs))
	}
	out := make([]uint64, len(ruleMsgs))
	for k, i := range ruleMsgs {
		out[k] = handles[i]
	}
	return out, nil
}

func nlAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// ruleHandle finds NFTA_RULE_HANDLE in a NEWRULE message's data (after the
// nfgenmsg header); 0 when it is missing.
func ruleHandle(data []byte) uint64 {
	if len(data) < 4 {
		return 0
	}
	b := data[4:]
	for len(b) >= unix.SizeofNlAttr {
		l := int(binary.NativeEndian.Uint16(b))
		typ := binary.NativeEndian.Uint16(b[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < unix.SizeofNlAttr || l > len(b) {
			return 0
		}
		if typ == unix.NFTA_RULE_HANDLE && l == unix.SizeofNlAttr+8 {
			return binary.BigEndian.Uint64(b[unix.SizeofNlAttr:])
		}
		b = b[min(nlAlign(l), len(b)):]
	}
	return 0
}

// msgName names an nf_tables message type for errors.
func msgName(t netlink.HeaderType) string {
	names := map[int]string{
		unix.NFT_MSG_NEWTABLE: "add table", unix.NFT_MSG_DELTABLE: "delete table",
		unix.NFT_MSG_NEWCHAIN: "add chain", unix.NFT_MSG_DELCHAIN: "delete chain",
		unix.NFT_MSG_NEWRULE: "add rule", unix.NFT_MSG_DELRULE: "delete rule",
		unix.NFT_MSG_NEWSET: "add set", unix.NFT_MSG_DELSET: "delete set",
		unix.NFT_MSG_NEWSETELEM: "add elements", unix.NFT_MSG_DELSETELEM: "delete elements",
		unix.NFT_MSG_NEWOBJ: "add object", unix.NFT_MSG_DELOBJ: "delete object",
	}
	if int(t)>>8 == unix.NFNL_SUBSYS_NFTABLES {
		if n, ok := names[int(t)&0xff]; ok {
			return n
		}
	}
	return fmt.Sprintf("type %#x", int(t))
}
