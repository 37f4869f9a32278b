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

// Table is the frontends of the last sync, safe to read from the HTTP
// server while the sync loop replaces it.
type Table struct {
	mu      sync.RWMutex
	entries []named
}

type named struct {
	fe   control.Frontend
	name control.ServicePortName
}

// Set replaces the table with s's frontends. Called by the sync loop
// after a sync that compared frontends: one pass over the state, copying
// what the names are made of (s changes with the next sync); the strings
// are made and sorted only when someone asks.
func (t *Table) Set(s *control.State) {
	entries := make([]named, 0, len(s.Ports))
	for fe, sp := range s.Ports {
		entries = append(entries, named{fe, sp.Name})
	}
	t.mu.Lock()
	t.entries = entries
	t.mu.Unlock()
}

// ServeHTTP answers GET with the table as a JSON array.
func (t *Table) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	t.mu.RLock()
	entries := make([]Entry, len(t.entries))
	for i, n := range t.entries {
		entries[i] = Entry{Frontend: n.fe.String(), Namespace: n.name.Namespace, Name: n.name.Name, Port: n.name.Port}
	}
	t.mu.RUnlock()
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
