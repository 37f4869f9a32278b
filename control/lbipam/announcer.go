package lbipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/sluice-lb/sluice/control"
)

// Device is the link this node announces on: its underlay device.
type Device struct {
	Ifindex int
	MAC     net.HardwareAddr
}

// AnnouncerOptions configure RunAnnouncer.
type AnnouncerOptions struct {
	Client kubernetes.Interface
	Pool   Pool
	Node   string // this node's name
	L2     *control.L2Reconciler
	// Underlay finds the device holding one of the node's InternalIPs
	// (none known: the agent's fallback).
	Underlay func(internalIPs []netip.Addr) (Device, error)
	Log      *slog.Logger
	// Resync is how often the map is read back and repaired with no
	// change seen (0: 30 s).
	Resync time.Duration
	// GARP sends the gratuitous ARPs of a takeover (nil:
	// AnnounceTakeover).
	GARP func(ctx context.Context, d Device, addr netip.Addr)
}

// RunAnnouncer keeps l2_announce4 holding the pool addresses this node
// announces (Announced over the Ready nodes), until ctx ends, and sends
// gratuitous ARPs for each address it takes over. What it programmed
// stays when it returns: the datapath keeps answering.
func RunAnnouncer(ctx context.Context, o AnnouncerOptions) error {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Resync == 0 {
		o.Resync = 30 * time.Second
	}
	if o.GARP == nil {
		o.GARP = func(ctx context.Context, d Device, a netip.Addr) {
			AnnounceTakeover(ctx, d.Ifindex, a, d.MAC, func(err error) { o.Log.Warn("l2: gratuitous ARP", "err", err) })
		}
	}
	// The cache keeps no managed fields: the announcer reads none, and
	// they are most of a Node's size.
	factory := informers.NewSharedInformerFactoryWithOptions(o.Client, 0, informers.WithTransform(func(obj any) (any, error) {
		if m, ok := obj.(metav1.Object); ok {
			m.SetManagedFields(nil)
		}
		return obj, nil
	}))
	svcs := factory.Core().V1().Services()
	nodes := factory.Core().V1().Nodes()
	slices := factory.Discovery().V1().EndpointSlices()
	kick := make(chan struct{}, 1)
	trigger := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	h := cache.ResourceEventHandlerFuncs{AddFunc: trigger, UpdateFunc: func(_, n any) { trigger(n) }, DeleteFunc: trigger}
	for _, inf := range []cache.SharedIndexInformer{svcs.Informer(), nodes.Informer(), slices.Informer()} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return fmt.Errorf("l2 announcer: %w", err)
		}
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), svcs.Informer().HasSynced, nodes.Informer().HasSynced, slices.Informer().HasSynced) {
		return nil
	}
	a := &announcer{o: o}
	resync := time.NewTicker(o.Resync)
	defer resync.Stop()
	for {
		sv, _ := svcs.Lister().List(labels.Everything())
		nv, _ := nodes.Lister().List(labels.Everything())
		ev, _ := slices.Lister().List(labels.Everything())
		if err := a.sync(ctx, sv, nv, ev); err != nil {
			o.Log.Warn("l2 announcer: sync failed, retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		case <-resync.C:
		}
	}
}

type announcer struct {
	o    AnnouncerOptions
	last string // the device error last logged
}

func (a *announcer) sync(ctx context.Context, svcs []*corev1.Service, nodes []*corev1.Node, eps []*discoveryv1.EndpointSlice) error {
	anns, self := Announcements(a.o.Pool, svcs, nodes, eps, a.o.Node)
	mine := Announced(a.o.Node, anns)
	var want []control.L2Entry
	var dev Device
	if len(mine) > 0 {
		var err error
		if dev, err = a.o.Underlay(self); err != nil {
			// Nothing can be announced; what is programmed stays.
			if err.Error() != a.last {
				a.last = err.Error()
				a.o.Log.Warn("l2 announcer: no underlay device", "err", err, "addrs", mine)
			}
			return err
		}
		a.last = ""
		for _, ad := range mine {
			want = append(want, control.L2Entry{Ifindex: dev.Ifindex, Addr: ad, MAC: dev.MAC})
		}
	}
	added, err := a.o.L2.Apply(want)
	for _, e := range added {
		go a.o.GARP(ctx, Device{e.Ifindex, e.MAC}, e.Addr)
	}
	return err
}

// Announcements derives the pool addresses to announce and their
// candidate nodes from the API server's objects: every IPv4 ingress
// address in the pool of a Service of type LoadBalancer, with the Ready
// nodes that are not being deleted (externalTrafficPolicy: Local: those of
// them with a ready endpoint of the Service). It also returns the
// InternalIPs of the node named self.
func Announcements(pool Pool, svcs []*corev1.Service, nodes []*corev1.Node, eps []*discoveryv1.EndpointSlice, self string) ([]Announcement, []netip.Addr) {
	ready := map[string]bool{}
	var readyList []string
	var selfIPs []netip.Addr
	for _, n := range nodes {
		if n.Name == self {
			for _, ad := range n.Status.Addresses {
				if ip, err := netip.ParseAddr(ad.Address); err == nil && ad.Type == corev1.NodeInternalIP && ip.Is4() {
					selfIPs = append(selfIPs, ip)
				}
			}
		}
		if n.DeletionTimestamp != nil {
			continue
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready[n.Name] = true
				readyList = append(readyList, n.Name)
			}
		}
	}
	// Nodes with a ready endpoint, by Service.
	local := map[string]map[string]bool{}
	for _, s := range eps {
		svc := s.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		key := s.Namespace + "/" + svc
		for _, e := range s.Endpoints {
			if e.NodeName == nil || (e.Conditions.Ready != nil && !*e.Conditions.Ready) || !ready[*e.NodeName] {
				continue
			}
			if local[key] == nil {
				local[key] = map[string]bool{}
			}
			local[key][*e.NodeName] = true
		}
	}
	byAddr := map[netip.Addr]map[string]bool{}
	for _, svc := range svcs {
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		cands := readyList
		if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
			cands = nil
			for n := range local[svc.Namespace+"/"+svc.Name] {
				cands = append(cands, n)
			}
		}
		for _, in := range svc.Status.LoadBalancer.Ingress {
			ip, err := netip.ParseAddr(in.IP)
			if err != nil || !ip.Is4() || !pool.Contains(ip) ||
				(in.IPMode != nil && *in.IPMode != corev1.LoadBalancerIPModeVIP) {
				continue
			}
			if byAddr[ip] == nil {
				byAddr[ip] = map[string]bool{}
			}
			for _, n := range cands {
				byAddr[ip][n] = true
			}
		}
	}
	var out []Announcement
	for ip, set := range byAddr {
		var c []string
		for n := range set {
			c = append(c, n)
		}
		slices.Sort(c)
		out = append(out, Announcement{Addr: ip, Candidates: c})
	}
	slices.SortFunc(out, func(x, y Announcement) int { return x.Addr.Compare(y.Addr) })
	return out, selfIPs
}

// ErrNoUnderlay is the Underlay error when no device holds the node's
// address.
var ErrNoUnderlay = errors.New("no device holds the node's InternalIP")
