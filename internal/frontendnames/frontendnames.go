// Package frontendnames serves, on the agent's metrics address, which
// Service port each programmed frontend belongs to. The datapath's maps
// know frontends only by address, port and protocol; the agent knows the
// names, and `sluice ct` asks it for them (GET Path, JSON).
package frontendnames

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sluice-lb/sluice/control"
)

// Path is where the agent serves the table.
const Path = "/debug/frontends"

// Entry names one frontend's Service port.
type Entry struct {
	Frontend  string `json:"frontend"` // "10.96.0.10:53/UDP", as control.Frontend prints
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Port      string `json:"port,omitempty"` // the Service port's name; empty when unnamed
}

// Service is "namespace/name".
func (e Entry) Service() string { return e.Namespace + "/" + e.Name }

// Table is the names of the programmed frontends, for the HTTP server.
// The desired state belongs to the sync loop, and walking it on every
// sync would make each sync cost the size of the state: instead a request
// asks the loop for a copy (Refresh, a "sync soon"), the loop's next sync
// hands it over (Wanted, Set), and the request answers with it.
type Table struct {
	// Refresh asks the sync loop to run soon; nil: serve what Set last
	// stored without asking (tests).
	Refresh func()
	// Timeout bounds how long a request waits for the loop (default
	// 10 s; the loop runs at most --min-sync-period after being asked,
	// unless the source has not delivered its first list yet).
	Timeout time.Duration

	mu      sync.Mutex
	entries []named
	pending chan struct{} // closed by the next Set; nil when nobody waits
}

type named struct {
	fe   control.Frontend
	name control.ServicePortName
}

// Wanted reports whether a request waits for Set. For the sync loop,
// which then calls Set with its state.
func (t *Table) Wanted() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pending != nil
}

// Set stores s's frontends and answers the requests waiting. One pass
// over the state, copying what the names are made of (s changes with the
// next sync); strings and order are made by the request.
func (t *Table) Set(s *control.State) {
	entries := make([]named, 0, len(s.Ports))
	for fe, sp := range s.Ports {
		entries = append(entries, named{fe, sp.Name})
	}
	t.mu.Lock()
	t.entries = entries
	if t.pending != nil {
		close(t.pending)
		t.pending = nil
	}
	t.mu.Unlock()
}

// ServeHTTP answers GET with the table as a JSON array, fresh from the
// sync loop.
func (t *Table) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	if t.Refresh != nil {
		t.mu.Lock()
		if t.pending == nil {
			t.pending = make(chan struct{})
		}
		done := t.pending
		t.mu.Unlock()
		t.Refresh()
		timeout := t.Timeout
		if timeout == 0 {
			timeout = 10 * time.Second
		}
		select {
		case <-done:
		case <-time.After(timeout):
			http.Error(w, "the agent has not synced (has its source delivered its first list?)", http.StatusServiceUnavailable)
			return
		case <-r.Context().Done():
			return
		}
	}
	t.mu.Lock()
	entries := make([]Entry, len(t.entries))
	for i, n := range t.entries {
		entries[i] = Entry{Frontend: n.fe.String(), Namespace: n.name.Namespace, Name: n.name.Name, Port: n.name.Port}
	}
	t.mu.Unlock()
	slices.SortFunc(entries, func(a, b Entry) int { return strings.Compare(a.Frontend, b.Frontend) })
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(entries)
}

// Fetch asks the agent whose metrics server listens on addr
// ("127.0.0.1:10249") for its table, by frontend.
func Fetch(ctx context.Context, addr string) (map[string]Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+Path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", req.URL, resp.Status)
	}
	var entries []Entry
	if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil {
		return nil, fmt.Errorf("GET %s: %w", req.URL, err)
	}
	out := make(map[string]Entry, len(entries))
	for _, e := range entries {
		out[e.Frontend] = e
	}
	return out, nil
}
