package test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-lb/sluice/internal/netlab"
)

// ctListed is what the e2e reads of `sluice ct list -o json`.
type ctListed struct {
	Proto, Client, Frontend, Backend, Service, State string
	Forward, Reply                                   *struct{ Flags []string }
}

func (c *cluster) ctList(t *testing.T) []ctListed {
	t.Helper()
	out, err := c.sluice("ct", "list", "-o", "json", "--pin-dir", c.pinDir)
	if err != nil {
		t.Fatalf("ct list: %v", err)
	}
	var flows []ctListed
	if err := json.Unmarshal(out, &flows); err != nil {
		t.Fatalf("ct list output %q: %v", out, err)
	}
	return flows
}

// A client's live connection is listed as one flow, to the backend that
// answers it, named by the agent; flushing the other frontend of the same
// Service (its UDP port) removes exactly the UDP flows, and the connection
// goes on.
func TestCTListAndFlushFrontend(t *testing.T) {
	c := newCluster(t, 2, "auto")
	c.write("whoami.yaml", whoamiManifest(1, 2))
	c.startAgent()

	ec := c.dialEcho(t, vip+":80")
	who := ec.who
	n, err := strconv.Atoi(strings.TrimPrefix(who, "backend-"))
	if err != nil {
		t.Fatalf("greeting from %q", who)
	}
	backend := netip.AddrPortFrom(netlab.BackendAddr(n), 8080).String()
	ec.exchange(t, "before")
	for range 3 {
		if _, err := c.ask("udp", vip+":80"); err != nil {
			t.Fatal(err)
		}
	}

	client := ec.conn.LocalAddr().String()
	tcpFrontend, udpFrontend := vip+":80/TCP", vip+":80/UDP"
	var mine *ctListed
	udpFlows := 0
	flows := c.ctList(t)
	for i, f := range flows {
		switch {
		case f.Frontend == tcpFrontend && f.Client == client:
			mine = &flows[i]
		case f.Frontend == udpFrontend:
			udpFlows++
		}
	}
	if mine == nil {
		t.Fatalf("no flow of client %s to %s in:\n%+v", client, tcpFrontend, flows)
	}
	if mine.Backend != backend || mine.Service != "e2e/whoami:http" || mine.State != "established" ||
		mine.Forward == nil || mine.Reply == nil {
		t.Errorf("the connection's flow: %+v; want backend %s (it answered), e2e/whoami:http, established, both entries", *mine, backend)
	}
	if udpFlows == 0 {
		t.Fatalf("no UDP flow after three datagrams:\n%+v", flows)
	}

	out, err := c.sluice("ct", "flush", "--pin-dir", c.pinDir, "--frontend", udpFrontend)
	if err != nil {
		t.Fatalf("ct flush: %v", err)
	}
	if want := fmt.Sprintf("flushed %d flows\n", udpFlows); string(out) != want {
		t.Errorf("ct flush printed %q, want %q", out, want)
	}
	tcpLeft := 0
	for _, f := range c.ctList(t) {
		if f.Frontend == udpFrontend {
			t.Errorf("UDP flow left after the flush: %+v", f)
		}
		if f.Frontend == tcpFrontend && f.Client == client {
			tcpLeft++
		}
	}
	if tcpLeft != 1 {
		t.Errorf("the connection's flow listed %d times after flushing UDP, want once", tcpLeft)
	}
	ec.exchange(t, "after the UDP flush")

	// By Service: the agent names the frontends; every flow of the
	// Service goes.
	if out, err = c.sluice("ct", "flush", "--pin-dir", c.pinDir, "--service", "e2e/whoami"); err != nil {
		t.Fatalf("ct flush --service: %v", err)
	}
	if string(out) != "flushed 1 flows\n" {
		t.Errorf("ct flush --service printed %q, want 1 flow", out)
	}
}
