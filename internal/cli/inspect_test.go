package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sluice-lb/sluice/control"
)

func lbViews() []control.FrontendView {
	return []control.FrontendView{
		{Frontend: "10.96.0.1:80", Protocol: "TCP", Kind: "ClusterIP", RevNatID: 1,
			ScopeView: control.ScopeView{Empty: "reject", Backends: []control.BackendView{{ID: 1, Address: "10.0.0.1:80", Local: true}, {ID: 2, Address: "10.0.0.2:80"}}}},
		{Frontend: "10.96.0.2:53", Protocol: "UDP", Kind: "ClusterIP", RevNatID: 2,
			ScopeView: control.ScopeView{Empty: "drop", Backends: []control.BackendView{}}},
		{Frontend: "192.168.1.10:30080", Protocol: "TCP", Kind: "NodePort", RevNatID: 3,
			ScopeView: control.ScopeView{Empty: "reject", SNATRemote: true, Backends: []control.BackendView{{ID: 2, Address: "10.0.0.2:80"}}}},
		{Frontend: "203.0.113.5:80", Protocol: "TCP", Kind: "LoadBalancer", RevNatID: 4, AffinitySeconds: 60,
			SourceRanges: []string{"192.0.2.0/24", "198.51.100.0/24"},
			ScopeView:    control.ScopeView{Empty: "drop", Backends: []control.BackendView{}},
			Internal: &control.ScopeView{Empty: "reject", SNATRemote: true,
				Backends: []control.BackendView{{ID: 1, Address: "10.0.0.1:80", Local: true}, {ID: 2, Address: "10.0.0.2:80"}}}},
	}
}

// The table names each frontend's kind, gives a two-scope frontend a row
// per scope, and shows flags, source ranges and local backends.
func TestLBTable(t *testing.T) {
	var b strings.Builder
	if err := writeLBTable(&b, lbViews()); err != nil {
		t.Fatal(err)
	}
	want := `FRONTEND            PROTO  KIND          SCOPE     FLAGS                                                    BACKENDS
10.96.0.1:80        TCP    ClusterIP     all       -                                                        10.0.0.1:80 (local), 10.0.0.2:80
10.96.0.2:53        UDP    ClusterIP     all       -                                                        (none: DROP)
192.168.1.10:30080  TCP    NodePort      all       snat-remote                                              10.0.0.2:80
203.0.113.5:80      TCP    LoadBalancer  external  affinity=60s source-ranges=192.0.2.0/24,198.51.100.0/24  (none: DROP)
203.0.113.5:80      TCP    LoadBalancer  internal  snat-remote affinity=60s                                 10.0.0.1:80 (local), 10.0.0.2:80
`
	if got := b.String(); got != want {
		t.Errorf("table\n%s\nwant\n%s", got, want)
	}
}

// -o json carries the same, with the internal set nested and fields of
// the plain case left out.
func TestLBJSON(t *testing.T) {
	out, err := json.Marshal(lbViews()[2:])
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"frontend":"192.168.1.10:30080","protocol":"TCP","kind":"NodePort","revNatId":3,"whenEmpty":"reject","snatRemote":true,"backends":[{"id":2,"address":"10.0.0.2:80"}]},` +
		`{"frontend":"203.0.113.5:80","protocol":"TCP","kind":"LoadBalancer","revNatId":4,"whenEmpty":"drop","backends":[],"affinitySeconds":60,` +
		`"sourceRanges":["192.0.2.0/24","198.51.100.0/24"],"internal":{"whenEmpty":"reject","snatRemote":true,"backends":[{"id":1,"address":"10.0.0.1:80","local":true},{"id":2,"address":"10.0.0.2:80"}]}}]`
	if string(out) != want {
		t.Errorf("json\n%s\nwant\n%s", out, want)
	}
}
