package conntrack

import (
	"fmt"
	"math"
	"time"

	"github.com/sluice-lb/sluice/bpf"
)

// Timeouts are the conntrack lifetimes the agent writes into
// sluice_ct_timeouts, by enum ct_timeout (bpf/lib/types.h). Their
// defaults are the datapath's own (enum ct_timeout_default): a test runs
// packets through the datapath with the map zeroed and compares.
type Timeouts struct {
	TCPSyn         time.Duration // before the backend answered
	TCPEstablished time.Duration // both ways
	TCPClose       time.Duration // after FIN or RST
	UDP            time.Duration // not answered yet, or answered within its first 2 s
	UDPStream      time.Duration // answered after it lasted 2 s: a stream
}

// DefaultTimeouts are netfilter's lifetimes with kube-proxy's established
// timeout, as the datapath's defaults.
func DefaultTimeouts() Timeouts {
	return Timeouts{
		TCPSyn:         60 * time.Second,
		TCPEstablished: 24 * time.Hour,
		TCPClose:       10 * time.Second,
		UDP:            30 * time.Second,
		UDPStream:      120 * time.Second,
	}
}

// Seconds returns the map's values, indexed by enum ct_timeout.
func (t Timeouts) Seconds() ([bpf.SluiceCtTimeoutCT_TIMEOUT_MAX]uint32, error) {
	var out [bpf.SluiceCtTimeoutCT_TIMEOUT_MAX]uint32
	for k, d := range t.byKey() {
		if d < time.Second || d.Seconds() > math.MaxUint32/2 {
			return out, fmt.Errorf("conntrack timeout %s: want at least 1s and at most %d s", d, uint32(math.MaxUint32/2))
		}
		out[k] = uint32(d / time.Second)
	}
	return out, nil
}

func (t Timeouts) byKey() map[bpf.SluiceCtTimeout]time.Duration {
	return map[bpf.SluiceCtTimeout]time.Duration{
		bpf.SluiceCtTimeoutCT_TIMEOUT_TCP_SYN:         t.TCPSyn,
		bpf.SluiceCtTimeoutCT_TIMEOUT_TCP_ESTABLISHED: t.TCPEstablished,
		bpf.SluiceCtTimeoutCT_TIMEOUT_TCP_CLOSE:       t.TCPClose,
		bpf.SluiceCtTimeoutCT_TIMEOUT_UDP:             t.UDP,
		bpf.SluiceCtTimeoutCT_TIMEOUT_UDP_REPLIED:     t.UDPStream,
	}
}
