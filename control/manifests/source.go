package manifests

import (
	"context"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/sluice-lb/sluice/control"
)

// Source serves a directory as a control.Source: every snapshot is handed
// over as the objects that changed since the previous one. Dir keeps an
// unchanged object's pointer, so a change of one file costs that file.
type Source struct {
	dir  *Dir
	node control.NodeInfo

	services map[objectKey]*corev1.Service
	slices   map[objectKey]*discoveryv1.EndpointSlice
	problems []control.Problem
}

// NewSource serves dir (opened, not yet watched) for the node.
func NewSource(dir *Dir, node control.NodeInfo) *Source {
	return &Source{dir: dir, node: node,
		services: map[objectKey]*corev1.Service{}, slices: map[objectKey]*discoveryv1.EndpointSlice{}}
}

// Run delivers what the directory held at Open, says it synced, then
// delivers every change until ctx ends.
func (s *Source) Run(ctx context.Context, sink control.Sink) error {
	sink.SetNode(s.node)
	s.deliver(s.dir.Snapshot(), sink)
	sink.Synced()
	return s.dir.Watch(ctx, func(snap Snapshot) { s.deliver(snap, sink) })
}

func (s *Source) deliver(snap Snapshot, sink control.Sink) {
	seen := make(map[objectKey]bool, len(snap.Services)+len(snap.Slices))
	for _, svc := range snap.Services {
		k := objectKey{"Service", svc.Namespace, svc.Name}
		seen[k] = true
		if s.services[k] != svc {
			s.services[k] = svc
			sink.UpsertService(svc)
		}
	}
	for _, es := range snap.Slices {
		k := objectKey{"EndpointSlice", es.Namespace, es.Name}
		seen[k] = true
		if s.slices[k] != es {
			s.slices[k] = es
			sink.UpsertSlice(es)
		}
	}
	for k := range s.services {
		if !seen[k] {
			delete(s.services, k)
			sink.DeleteService(k.namespace, k.name)
		}
	}
	for k := range s.slices {
		if !seen[k] {
			delete(s.slices, k)
			sink.DeleteSlice(k.namespace, k.name)
		}
	}
	problems := make([]control.Problem, 0, len(snap.Problems))
	for _, p := range snap.Problems {
		obj := "manifest " + p.File
		if p.Object != "" {
			obj += ": " + p.Object
		}
		problems = append(problems, control.Problem{Object: obj, Reason: p.Reason, Kind: control.SkipInvalidManifest})
	}
	if !slices.Equal(problems, s.problems) {
		s.problems = problems
		sink.Skipped(problems)
	}
}
