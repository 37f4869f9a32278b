// Package healthz is the proxy health server of rule 29, as kube-proxy's
// (pkg/proxy/healthcheck, port 10256): /healthz answers 503 when a change
// has waited unprogrammed for longer than the health timeout or when the
// node is going away (and, stricter than kube-proxy, until the first sync),
// /livez the same ignoring the node.
//
// The agent calls QueuedUpdate when a change arrives (and once at start,
// so that an agent that never completes its first sync turns unhealthy)
// and Updated when a sync has programmed everything queued.
package healthz

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// Server tracks the agent's sync state and serves it over HTTP.
type Server struct {
	timeout time.Duration
	now     func() time.Time // the clock; tests replace it

	mu           sync.Mutex
	lastUpdated  time.Time // end of the last sync; zero before the first
	oldestQueued time.Time // first change not yet programmed; zero if none
	nodeEligible bool
}

// New returns a server that reports unhealthy once a queued change has
// waited more than healthTimeout (kube-proxy: twice the sync period).
func New(healthTimeout time.Duration) *Server {
	return &Server{timeout: healthTimeout, now: time.Now, nodeEligible: true}
}

// QueuedUpdate records that a change is waiting to be programmed. Only the
// oldest pending change counts: a second call before Updated changes
// nothing.
func (s *Server) QueuedUpdate() {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.oldestQueued.IsZero() {
		s.oldestQueued = now
	}
}

// Updated records a finished sync: everything queued is programmed.
func (s *Server) Updated() {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastUpdated = now
	s.oldestQueued = time.Time{}
}

// SetNodeEligible sets whether the node may receive traffic: false while
// it is being deleted (kube-proxy: deletion timestamp or the cluster
// autoscaler's ToBeDeletedByClusterAutoscaler taint). True until told
// otherwise.
func (s *Server) SetNodeEligible(eligible bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodeEligible = eligible
}

// status is one consistent reading of the server's state.
type status struct {
	now          time.Time
	lastUpdated  time.Time
	synced       bool // no change has waited longer than the timeout
	nodeEligible bool
}

func (s *Server) status() status {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	return status{
		now:          now,
		lastUpdated:  s.lastUpdated,
		synced:       s.oldestQueued.IsZero() || now.Sub(s.oldestQueued) <= s.timeout,
		nodeEligible: s.nodeEligible,
	}
}

// Healthy reports the /livez verdict: no change has waited more than the
// health timeout. Node eligibility is not part of it.
func (s *Server) Healthy() bool { return s.status().synced }

// Handler serves /healthz and /livez.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		// Deliberately stricter than kube-proxy before the first sync:
		// /healthz (the readiness probe) says 200 only once the datapath
		// has been programmed, so a node is never taken as ready while it
		// serves nothing. /livez keeps kube-proxy's rule, so a slow first
		// list does not get the agent killed.
		st := s.status()
		eligible := st.nodeEligible
		write(w, st, st.synced && eligible && !st.lastUpdated.IsZero(), &eligible)
	})
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
		st := s.status()
		write(w, st, st.synced, nil)
	})
	return mux
}

// body is kube-proxy's response; /livez has no nodeEligible.
type body struct {
	LastUpdated  string `json:"lastUpdated"`
	CurrentTime  string `json:"currentTime"`
	NodeEligible *bool  `json:"nodeEligible,omitempty"`
}

func write(w http.ResponseWriter, st status, healthy bool, eligible *bool) {
	// As kube-proxy: while healthy, lastUpdated is the current time, so a
	// client that checks its age (from the days it was the time of the last
	// periodic sync) keeps working when no change needed a sync for hours;
	// when unhealthy it is the end of the last sync (zero before the first).
	// The exact time is in sluice_sync_proxy_rules_last_timestamp_seconds.
	last := st.lastUpdated
	code := http.StatusServiceUnavailable
	if healthy {
		last, code = st.now, http.StatusOK
	}
	b, _ := json.Marshal(body{
		LastUpdated:  last.UTC().Format(time.RFC3339Nano),
		CurrentTime:  st.now.UTC().Format(time.RFC3339Nano),
		NodeEligible: eligible,
	})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
