package whoami

import (
	"context"
	"testing"
	"time"
)

// A client asking over TCP and UDP learns the server's name and the
// address the server saw it come from.
func TestAskAnswerReportsRemote(t *testing.T) {
	srv, err := Listen("be-1", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	for _, proto := range []string{"tcp", "udp"} {
		a, err := AskAnswer(proto, srv.Addr().String(), 2*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		if a.Hostname != "be-1" || a.RemoteIP() != "127.0.0.1" {
			t.Errorf("%s: answer %+v, want be-1 seeing 127.0.0.1", proto, a)
		}
	}
}
