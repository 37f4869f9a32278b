// Package kube is the Kubernetes API source: informers on Services,
// EndpointSlices and this node's Node feed a control.Sink.
package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/sluice-lb/sluice/control"
)

// visibleSelector is the label selector of rule 1: Services and
// EndpointSlices that belong to another proxy, or to a headless Service,
// are not even listed.
const visibleSelector = "!" + control.LabelServiceProxyName + ",!" + control.LabelHeadless

// Source delivers the Services, EndpointSlices and Node of the API server
// a client talks to. It implements control.Source.
type Source struct {
	client   kubernetes.Interface
	nodeName string
	log      *slog.Logger

	// waitLogEvery is how often Run says what it is still waiting for
	// before the first lists are in; errorLogEvery is the shortest time
	// between two logged watch errors of one informer.
	waitLogEvery  time.Duration
	errorLogEvery time.Duration
}

var _ control.Source = (*Source)(nil)

// New returns a source reading through client, for the node named
// nodeName. A nil log logs to slog.Default().
func New(client kubernetes.Interface, nodeName string, log *slog.Logger) *Source {
	if log == nil {
		log = slog.Default()
	}
	return &Source{
		client:        client,
		nodeName:      nodeName,
		log:           log,
		waitLogEvery:  10 * time.Second,
		errorLogEvery: 5 * time.Second,
	}
}

// Run lists and watches Services and EndpointSlices (with the label
// selector of rule 1) and this node's Node, and hands them to sink: every
// object of the first lists, then the node (its name alone if there is no
// Node object of that name), then Synced, then every change until ctx
// ends. Calls into sink come one at a time, never after Run returns.
//
// An API server that cannot be reached is waited for, however long, with
// a log line at intervals saying why; watches that fail are retried by the
// informers while the datapath keeps what it has. Run returns nil when ctx
// ends; an error only for a source it cannot start.
func (s *Source) Run(ctx context.Context, sink control.Sink) error {
	if s.nodeName == "" {
		return errors.New("kube source: empty node name")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &run{src: s, sink: sink, log: s.log, errs: map[string]*watchErrors{}}
	visible := func(o *metav1.ListOptions) { o.LabelSelector = visibleSelector }
	thisNode := fields.OneTermEqualSelector(metav1.ObjectNameField, s.nodeName).String()
	services := s.client.CoreV1().Services(metav1.NamespaceAll)
	slices := s.client.DiscoveryV1().EndpointSlices(metav1.NamespaceAll)
	nodes := s.client.CoreV1().Nodes()
	ws := []*watched{{
		kind: "Service", example: &corev1.Service{}, tweak: visible, watch: services.Watch,
		list:    func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return services.List(ctx, o) },
		handler: handler[*corev1.Service]{r: r, kind: "Service", upsert: sink.UpsertService, remove: sink.DeleteService},
	}, {
		kind: "EndpointSlice", example: &discoveryv1.EndpointSlice{}, tweak: visible, watch: slices.Watch,
		list:    func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return slices.List(ctx, o) },
		handler: handler[*discoveryv1.EndpointSlice]{r: r, kind: "EndpointSlice", upsert: sink.UpsertSlice, remove: sink.DeleteSlice},
	}, {
		kind: "Node", example: &corev1.Node{}, tweak: func(o *metav1.ListOptions) { o.FieldSelector = thisNode }, watch: nodes.Watch,
		list:    func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return nodes.List(ctx, o) },
		handler: handler[*corev1.Node]{r: r, kind: "Node", upsert: r.upsertNode, remove: r.deleteNode},
	}}
	for _, w := range ws {
		if err := r.setUp(w); err != nil {
			return fmt.Errorf("%s informer: %w", w.kind, err)
		}
	}

	var wg sync.WaitGroup
	defer func() {
		cancel()
		r.stop()
		wg.Wait()
	}()
	for _, w := range ws {
		wg.Go(func() { w.inf.RunWithContext(ctx) })
	}
	s.log.Info("watching the API server", "node", s.nodeName, "selector", visibleSelector)

	start := time.Now()
	if !r.waitSynced(ctx, ws) {
		return nil
	}
	r.ensureNode()
	s.log.Info("first lists received", "services", len(ws[0].inf.GetStore().ListKeys()),
		"endpointSlices", len(ws[1].inf.GetStore().ListKeys()), "nodeFound", len(ws[2].inf.GetStore().ListKeys()) > 0,
		"took", time.Since(start).Round(time.Millisecond))
	r.deliver(sink.Synced)
	<-ctx.Done()
	return nil
}

// watched is one informer, how it lists and watches, and what Run knows
// of it.
type watched struct {
	kind    string // for logs: Service, EndpointSlice, Node
	example runtime.Object
	tweak   func(*metav1.ListOptions) // the selector
	list    func(context.Context, metav1.ListOptions) (runtime.Object, error)
	watch   func(context.Context, metav1.ListOptions) (watch.Interface, error)
	handler cache.ResourceEventHandler

	inf    cache.SharedIndexInformer
	synced cache.DoneChecker // its handler has had the whole first list
}

// run is the state of one Run.
type run struct {
	src  *Source
	sink control.Sink
	log  *slog.Logger

	// mu serialises the calls into sink; stopped, node and nodeSet are
	// guarded by it.
	mu      sync.Mutex
	stopped bool
	node    control.NodeInfo
	nodeSet bool

	errMu sync.Mutex
	errs  map[string]*watchErrors // by kind
}

// watchErrors is the recent watch failures of one informer.
type watchErrors struct {
	last       error
	since      time.Time // of the first failure in a row
	logged     time.Time
	suppressed int
}

// deliver calls f, which calls the sink, unless Run is over.
func (r *run) deliver(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.stopped {
		f()
	}
}

// stop ends the calls into the sink.
func (r *run) stop() {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
}

// waitSynced waits until every informer's handler has had its first list,
// logging what is missing and why every waitLogEvery. It is false if ctx
// ended first.
func (r *run) waitSynced(ctx context.Context, ws []*watched) bool {
	tick := time.NewTicker(r.src.waitLogEvery)
	defer tick.Stop()
	start := time.Now()
	for i := 0; i < len(ws); {
		select {
		case <-ws[i].synced.Done():
			i++
		case <-ctx.Done():
			return false
		case <-tick.C:
			for _, w := range ws[i:] {
				if cache.IsDone(w.synced) {
					continue
				}
				reason := "no answer yet"
				r.errMu.Lock()
				if e := r.errs[w.kind]; e != nil && e.last != nil {
					reason = e.last.Error()
				}
				r.errMu.Unlock()
				r.log.Warn("waiting for the first list from the API server; the datapath keeps its state meanwhile",
					"kind", w.kind, "waited", time.Since(start).Round(time.Second), "reason", reason)
			}
		}
	}
	return true
}

// setUp makes w's informer: shared, without resync or indexes, stripping
// objects before they are stored, its errors logged and its events
// handled. A watch call that fails is reported like a failed list: the
// reflector retries those (connection refused, 429) by itself without
// telling its WatchErrorHandler, and an API server gone after the first
// list would otherwise go unmentioned.
func (r *run) setUp(w *watched) error {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			w.tweak(&o)
			return w.list(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			w.tweak(&o)
			wi, err := w.watch(ctx, o)
			switch {
			case ctx.Err() != nil:
			case err != nil:
				r.reportError(w.kind, err)
			default:
				r.recovered(w.kind)
			}
			return wi, err
		},
	}
	w.inf = cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, r.src.client), w.example,
		cache.SharedIndexInformerOptions{})
	if err := w.inf.SetTransform(strip); err != nil {
		return err
	}
	if err := w.inf.SetWatchErrorHandlerWithContext(r.watchError(w.kind)); err != nil {
		return err
	}
	reg, err := w.inf.AddEventHandler(w.handler)
	if err != nil {
		return err
	}
	w.synced = reg.HasSyncedChecker()
	return nil
}

// watchError is an informer's WatchErrorHandler: its list and watch
// failures, which it retries on its own.
func (r *run) watchError(kind string) cache.WatchErrorHandlerWithContext {
	return func(ctx context.Context, _ *cache.Reflector, err error) {
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, io.EOF) || apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			r.log.Debug("watch closed, listing again", "kind", kind, "reason", err)
			return
		}
		r.reportError(kind, err)
	}
}

// reportError logs a failed list or watch of one informer, at most once
// every errorLogEvery, and keeps it as the reason Run is still waiting.
func (r *run) reportError(kind string, err error) {
	r.errMu.Lock()
	e := r.errs[kind]
	if e == nil {
		e = &watchErrors{}
		r.errs[kind] = e
	}
	now := time.Now()
	if e.last == nil {
		e.since = now
	}
	e.last = err
	if !e.logged.IsZero() && now.Sub(e.logged) < r.src.errorLogEvery {
		e.suppressed++
		r.errMu.Unlock()
		return
	}
	suppressed := e.suppressed
	e.logged, e.suppressed = now, 0
	r.errMu.Unlock()
	r.log.Warn("list/watch of the API server failed, retrying; the datapath keeps its state",
		"kind", kind, "err", err, "suppressedSinceLast", suppressed)
}

// recovered notes a watch established after failures.
func (r *run) recovered(kind string) {
	r.errMu.Lock()
	e := r.errs[kind]
	if e == nil || e.last == nil {
		r.errMu.Unlock()
		return
	}
	since := e.since
	*e = watchErrors{}
	r.errMu.Unlock()
	r.log.Info("watching the API server again", "kind", kind, "failingFor", time.Since(since).Round(time.Millisecond))
}
