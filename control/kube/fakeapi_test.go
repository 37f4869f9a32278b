package kube

import (
	"sync"
	"sync/atomic"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// fakeAPI is the fake clientset made to behave like an API server where
// these tests depend on it. The fake applies label selectors to lists
// only, field selectors nowhere, and sends every object on every watch
// (TestFakeClientsetSelectors pins this down); here both selectors apply
// to lists and watches, and a watch turns a change that makes an object
// stop (start) matching into a delete (add), as the API server does.
// Every list and watch request is recorded with its selectors; a resource
// can be made to fail its lists, and its watches muted and broken.
type fakeAPI struct {
	*fake.Clientset

	mu       sync.Mutex
	lists    []request
	watches  []request
	listErr  map[string]error           // by resource
	watchErr map[string]error           // by resource
	listed   map[string]map[string]bool // keys of the last list, by resource
	active   map[string][]*proxyWatch   // by resource
}

// request is one list or watch call, its selectors as the client sent
// them (the fake's parsed restrictions print label requirements sorted).
type request struct {
	resource, labelSelector, fieldSelector string
}

func newFakeAPI(t *testing.T, objects ...runtime.Object) *fakeAPI {
	t.Helper()
	api := &fakeAPI{
		Clientset: fake.NewClientset(objects...),
		listErr:   map[string]error{},
		watchErr:  map[string]error{},
		listed:    map[string]map[string]bool{},
		active:    map[string][]*proxyWatch{},
	}
	api.PrependReactor("list", "*", api.list)
	api.PrependWatchReactor("*", api.watch)
	return api
}

func (api *fakeAPI) list(a k8stesting.Action) (bool, runtime.Object, error) {
	la := a.(k8stesting.ListActionImpl)
	res := la.GetResource()
	sel := la.GetListRestrictions()
	api.mu.Lock()
	api.lists = append(api.lists, request{res.Resource, la.ListOptions.LabelSelector, la.ListOptions.FieldSelector})
	err := api.listErr[res.Resource]
	api.mu.Unlock()
	if err != nil {
		return true, nil, err
	}
	list, err := api.Tracker().List(res, la.GetKind(), la.GetNamespace())
	if err != nil {
		return true, nil, err
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		return true, nil, err
	}
	var keep []runtime.Object
	keys := map[string]bool{}
	for _, o := range items {
		if matches(o, sel.Labels, sel.Fields) {
			keep = append(keep, o)
			keys[key(o)] = true
		}
	}
	if err := meta.SetList(list, keep); err != nil {
		return true, nil, err
	}
	api.mu.Lock()
	api.listed[res.Resource] = keys
	api.mu.Unlock()
	return true, list, nil
}

func (api *fakeAPI) watch(a k8stesting.Action) (bool, watch.Interface, error) {
	wa := a.(k8stesting.WatchActionImpl)
	res := wa.GetResource()
	sel := wa.GetWatchRestrictions()
	api.mu.Lock()
	err := api.watchErr[res.Resource]
	api.mu.Unlock()
	if err != nil {
		return true, nil, err
	}
	inner, err := api.Tracker().Watch(res, wa.GetNamespace(), wa.ListOptions)
	if err != nil {
		return true, nil, err
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	api.watches = append(api.watches, request{res.Resource, wa.ListOptions.LabelSelector, wa.ListOptions.FieldSelector})
	// The watch goes on from the list: what the list returned is what
	// the client has.
	seen := map[string]bool{}
	for k := range api.listed[res.Resource] {
		seen[k] = true
	}
	p := &proxyWatch{
		inner:  inner,
		out:    make(chan watch.Event),
		inject: make(chan watch.Event),
		done:   make(chan struct{}),
	}
	api.active[res.Resource] = append(api.active[res.Resource], p)
	go p.run(func(o runtime.Object) bool { return matches(o, sel.Labels, sel.Fields) }, seen)
	return true, p, nil
}

// requests returns the list and watch calls made so far.
func (api *fakeAPI) requests() (lists, watches []request) {
	api.mu.Lock()
	defer api.mu.Unlock()
	return append([]request(nil), api.lists...), append([]request(nil), api.watches...)
}

// failLists makes every list of resource fail with err (nil: succeed).
func (api *fakeAPI) failLists(resource string, err error) {
	api.mu.Lock()
	defer api.mu.Unlock()
	api.listErr[resource] = err
}

// failWatches makes every watch of resource fail with err (nil: succeed).
func (api *fakeAPI) failWatches(resource string, err error) {
	api.mu.Lock()
	defer api.mu.Unlock()
	api.watchErr[resource] = err
}

// mute makes the running watches of resource drop every event, as
// watches that silently missed them; the watches started later do not.
func (api *fakeAPI) mute(resource string) {
	api.mu.Lock()
	defer api.mu.Unlock()
	for _, p := range api.active[resource] {
		p.muted.Store(true)
	}
}

// expireWatches ends every watch of resource with 410 Gone, which makes
// the informer list again.
func (api *fakeAPI) expireWatches(t *testing.T, resource string) {
	api.mu.Lock()
	ws := api.active[resource]
	api.active[resource] = nil
	api.mu.Unlock()
	gone := &metav1.Status{Status: metav1.StatusFailure, Code: 410, Reason: metav1.StatusReasonExpired, Message: "too old resource version"}
	for _, p := range ws {
		select {
		case p.inject <- watch.Event{Type: watch.Error, Object: gone}:
		case <-p.done:
		}
	}
	if len(ws) == 0 {
		t.Fatalf("no watch of %s to expire", resource)
	}
}

func matches(o runtime.Object, ls labels.Selector, fs fields.Selector) bool {
	m, err := meta.Accessor(o)
	if err != nil {
		return false
	}
	return ls.Matches(labels.Set(m.GetLabels())) &&
		fs.Matches(fields.Set{"metadata.name": m.GetName(), "metadata.namespace": m.GetNamespace()})
}

func key(o runtime.Object) string {
	m, _ := meta.Accessor(o)
	return m.GetNamespace() + "/" + m.GetName()
}

// proxyWatch passes a tracker watch on with the selectors applied.
type proxyWatch struct {
	inner    watch.Interface
	out      chan watch.Event
	inject   chan watch.Event
	done     chan struct{}
	stopOnce sync.Once
	muted    atomic.Bool
}

func (p *proxyWatch) ResultChan() <-chan watch.Event { return p.out }

func (p *proxyWatch) Stop() {
	p.stopOnce.Do(func() {
		close(p.done)
		p.inner.Stop()
	})
}

func (p *proxyWatch) run(match func(runtime.Object) bool, seen map[string]bool) {
	defer close(p.out)
	send := func(ev watch.Event) bool {
		select {
		case p.out <- ev:
			return true
		case <-p.done:
			return false
		}
	}
	for {
		select {
		case <-p.done:
			return
		case ev := <-p.inject:
			send(ev)
			return
		case ev, ok := <-p.inner.ResultChan():
			if !ok {
				return
			}
			if p.muted.Load() {
				continue
			}
			if ev.Type != watch.Added && ev.Type != watch.Modified && ev.Type != watch.Deleted {
				if !send(ev) {
					return
				}
				continue
			}
			k, now, was := key(ev.Object), match(ev.Object), seen[key(ev.Object)]
			switch {
			case ev.Type == watch.Deleted || !now:
				if !was {
					continue
				}
				delete(seen, k)
				ev.Type = watch.Deleted
			case !was:
				seen[k] = true
				ev.Type = watch.Added
			default:
				ev.Type = watch.Modified
			}
			if !send(ev) {
				return
			}
		}
	}
}
