package loader

import (
	"errors"
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/packet"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// The tracer runs on an agent's pins through read-only handles: the
// kernel loads a program with them (it checks a map fd's mode for
// syscalls only), and the trace process cannot write the agent's maps
// through them. A resized map is taken at its size.
func TestTracerRunsOnReadOnlyPins(t *testing.T) {
	testenv.Privileged(t)
	dir := pinDir(t)
	agent, err := Load(Options{PinDir: dir, MaxEntries: map[string]uint32{bpf.SluiceMapCt4V3: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()

	tracer, dp, done, err := OpenTracer(dir)
	if err != nil {
		t.Fatalf("trace build on read-only pins: %+v", err)
	}
	defer done()
	if err := dp.Config.Put(0, bpf.SluiceDatapathConfig{}); !errors.Is(err, os.ErrPermission) {
		t.Errorf("write through the tracer's handle: %v, want permission denied", err)
	}
	frame := packet.Build(packet.Spec{
		Src: netip.MustParseAddrPort("10.244.0.2:1000"), Dst: netip.MustParseAddrPort("10.1.2.3:80"),
		Proto: packet.ProtoTCP, TCPFlags: packet.TCPSyn,
	})
	for range 2 { // the recorded reasons start again on every run
		run, err := tracer.Ingress(frame)
		if err != nil {
			t.Fatal(err)
		}
		if want := []bpf.SluiceReason{bpf.SluiceReasonREASON_PASS}; !slices.Equal(run.Reasons, want) {
			t.Errorf("reasons %v, want %v", run.Reasons, want)
		}
	}
}
