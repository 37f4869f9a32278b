package lbipam

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
)

// LeaseName is the Lease the agents elect the allocating one with.
const LeaseName = "sluice-lb-ipam"

// The election's default timing. Every agent of the DaemonSet is a
// candidate, and a candidate that does not lead reads the Lease every
// RetryPeriod: at the controller figures (15 s, 10 s, 2 s) a 1,000-node
// cluster would read it 500 times a second, and the leader would write it
// every 2 s, all for a job that only assigns addresses to new Services
// (the addresses given out, and their announcement, do not depend on who
// leads). At 15 s the followers' reads stay below the writes of the
// kubelets' own node Leases (one every 10 s per node); a leader that dies
// is replaced within about LeaseDuration plus RetryPeriod (75 s; within
// RetryPeriod when it stops cleanly, as it releases the Lease), and one
// that loses the API server keeps leading through an outage shorter than
// RenewDeadline.
const (
	DefaultLeaseDuration = 60 * time.Second
	DefaultRenewDeadline = 45 * time.Second
	DefaultRetryPeriod   = 15 * time.Second
)

// ControllerOptions configure RunController.
type ControllerOptions struct {
	Client kubernetes.Interface
	Pool   Pool
	// Identity is the agent's in the election: its node's name.
	Identity string
	// Namespace holds the Lease: the agent's own.
	Namespace string
	Log       *slog.Logger
	// The election's timing; 0: DefaultLeaseDuration, DefaultRenewDeadline,
	// DefaultRetryPeriod.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// Resync is how often the leader recomputes the assignments with no
	// change seen (0: a minute).
	Resync time.Duration
}

// RunController takes part in the election of LeaseName until ctx ends;
// while this agent leads, it assigns pool addresses to Services of type
// LoadBalancer (Allocate) and writes them to their status. It returns
// nil when ctx ends.
func RunController(ctx context.Context, o ControllerOptions) error {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.LeaseDuration == 0 {
		o.LeaseDuration, o.RenewDeadline, o.RetryPeriod = DefaultLeaseDuration, DefaultRenewDeadline, DefaultRetryPeriod
	}
	if o.Resync == 0 {
		o.Resync = time.Minute
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: o.Client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "sluice-lb-ipam", Host: o.Identity})
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: LeaseName, Namespace: o.Namespace},
		Client:     o.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: o.Identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, Name: LeaseName, ReleaseOnCancel: true,
			LeaseDuration: o.LeaseDuration, RenewDeadline: o.RenewDeadline, RetryPeriod: o.RetryPeriod,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					o.Log.Info("lb-ipam: leading, assigning load-balancer addresses", "pool", o.Pool.String())
					c := &controller{o: o, recorder: recorder, problems: map[string]Problem{}}
					c.run(ctx)
				},
				OnStoppedLeading: func() { o.Log.Info("lb-ipam: not leading") },
				OnNewLeader: func(id string) {
					if id != o.Identity {
						o.Log.Info("lb-ipam: another agent leads", "leader", id)
					}
				},
			},
		})
		if err != nil {
			return fmt.Errorf("lb-ipam election: %w", err)
		}
		le.Run(ctx)
	}
	return nil
}

// controller is the leader's work: the Services' informer, and a sync of
// every Service at each change.
type controller struct {
	o        ControllerOptions
	recorder record.EventRecorder
	services corelisters.ServiceLister
	// problems are the Warning Events last recorded, by Service: one is
	// recorded again only when it changed.
	problems map[string]Problem
}

func (c *controller) run(ctx context.Context) {
	factory := informers.NewSharedInformerFactory(c.o.Client, 0)
	inf := factory.Core().V1().Services()
	c.services = inf.Lister()
	kick := make(chan struct{}, 1)
	trigger := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: trigger, UpdateFunc: func(_, n any) { trigger(n) }, DeleteFunc: trigger,
	}); err != nil {
		c.o.Log.Error("lb-ipam: service informer", "err", err)
		return
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return
	}
	backoff := time.Duration(0)
	resync := time.NewTicker(c.o.Resync)
	defer resync.Stop()
	for {
		if err := c.sync(ctx); apierrors.IsConflict(err) {
			// The cache was behind a write; the informer brings the
			// newer Service at once.
			c.o.Log.Debug("lb-ipam: status update conflict, syncing again", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		} else if err != nil {
			backoff = min(max(2*backoff, time.Second), 30*time.Second)
			c.o.Log.Warn("lb-ipam: sync failed, retrying", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-resync.C:
		}
	}
}

// ours reports whether LB-IPAM serves svc: type LoadBalancer, no
// loadBalancerClass, and no ingress but pool addresses (another
// controller's ingress is left alone).
func (c *controller) ours(svc *corev1.Service) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.LoadBalancerClass != nil {
		return false
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		a, err := netip.ParseAddr(in.IP)
		if in.Hostname != "" || err != nil || !c.o.Pool.Contains(a) {
			return false
		}
	}
	return true
}

// poolIngress returns the ingress addresses of svc that lie in the pool.
func (c *controller) poolIngress(svc *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil && c.o.Pool.Contains(a) {
			out = append(out, a)
		}
	}
	return out
}

func (c *controller) sync(ctx context.Context) error {
	all, err := c.services.List(labels.Everything())
	if err != nil {
		return err
	}
	byKey := map[string]*corev1.Service{}
	var svcs []Service
	var firstErr error
	for _, svc := range all {
		key := svc.Namespace + "/" + svc.Name
		if !c.ours(svc) {
			// No longer of type LoadBalancer: an address of the pool
			// in its status (the API server may keep it) is released.
			if svc.Spec.Type != corev1.ServiceTypeLoadBalancer && len(c.poolIngress(svc)) > 0 {
				if err := c.setIngress(ctx, svc, netip.Addr{}); err != nil && firstErr == nil {
					firstErr = err
				}
			}
			delete(c.problems, key)
			continue
		}
		byKey[key] = svc
		svcs = append(svcs, Service{Key: key, Created: svc.CreationTimestamp.Time,
			Requested: svc.Spec.LoadBalancerIP, Current: c.poolIngress(svc)})
	}
	assigned, problems := Allocate(c.o.Pool, svcs)
	// Releases first, so that an address moved from a younger Service
	// to an older one is never in two statuses at once.
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		_, ka := assigned[a]
		_, kb := assigned[b]
		switch {
		case ka == kb:
			return 0
		case !ka:
			return -1
		}
		return 1
	})
	for _, k := range keys {
		if err := c.setIngress(ctx, byKey[k], assigned[k]); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	seen := map[string]bool{}
	for _, p := range problems {
		seen[p.Service] = true
		if c.problems[p.Service] == p {
			continue
		}
		c.problems[p.Service] = p
		c.recorder.Event(byKey[p.Service], corev1.EventTypeWarning, p.Reason, p.Message)
		c.o.Log.Warn("lb-ipam: "+p.Message, "service", p.Service, "reason", p.Reason)
	}
	for k := range c.problems {
		if !seen[k] {
			delete(c.problems, k)
		}
	}
	return firstErr
}

// setIngress makes svc's status.loadBalancer.ingress [{a, VIP}], or empty
// when a is invalid, unless it already is.
func (c *controller) setIngress(ctx context.Context, svc *corev1.Service, a netip.Addr) error {
	var want []corev1.LoadBalancerIngress
	if a.IsValid() {
		vip := corev1.LoadBalancerIPModeVIP
		want = []corev1.LoadBalancerIngress{{IP: a.String(), IPMode: &vip}}
	}
	cur := svc.Status.LoadBalancer.Ingress
	if len(cur) == len(want) && (len(want) == 0 ||
		(cur[0].IP == want[0].IP && cur[0].IPMode != nil && *cur[0].IPMode == *want[0].IPMode && len(cur[0].Ports) == 0)) {
		return nil
	}
	old := c.poolIngress(svc)
	upd := svc.DeepCopy()
	upd.Status.LoadBalancer.Ingress = want
	if _, err := c.o.Client.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("service %s/%s: update status: %w", svc.Namespace, svc.Name, err) // keeps IsConflict
	}
	key := svc.Namespace + "/" + svc.Name
	if a.IsValid() {
		c.recorder.Eventf(svc, corev1.EventTypeNormal, ReasonAssigned, "assigned %s from pool %s", a, c.o.Pool)
		c.o.Log.Info("lb-ipam: assigned", "service", key, "addr", a)
	} else {
		c.recorder.Eventf(svc, corev1.EventTypeNormal, ReasonReleased, "released %v to pool %s", old, c.o.Pool)
		c.o.Log.Info("lb-ipam: released", "service", key, "addrs", old)
	}
	return nil
}
