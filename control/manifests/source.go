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
//
// The node is described as the kube source describes it: from the Node
// whose metadata.name is the node's name, when the directory has one (the
// other nodes' Nodes are ignored), else by its name alone; a change of
// that Node, or its removal, is a new NodeInfo.
type Source struct {
	dir  *Dir
	name string
	// node is the NodeInfo last handed to the sink; nodeSet once it was.
	node    control.NodeInfo
	nodeSet bool

	// What was delivered, with the generation of the snapshot that last
	// had it: what an older generation holds is gone. (A map of what
	// each snapshot holds would be the directory's size in garbage per
	// change.)
	services map[objectKey]delivered[*corev1.Service]
	slices   map[objectKey]delivered[*discoveryv1.EndpointSlice]
	gen      uint64
	problems []control.Problem
}

type delivered[T any] struct {
	obj T
	gen uint64
}

// NewSource serves dir (opened, not yet watched) for the node named
// nodeName.
func NewSource(dir *Dir, nodeName string) *Source {
	return &Source{dir: dir, name: nodeName,
		services: map[objectKey]delivered[*corev1.Service]{}, slices: map[objectKey]delivered[*discoveryv1.EndpointSlice]{}}
}

// Run delivers what the directory held at Open, says it synced, then
// delivers every change until ctx ends.
func (s *Source) Run(ctx context.Context, sink control.Sink) error {
	s.deliver(s.dir.Snapshot(), sink)
	sink.Synced()
	return s.dir.Watch(ctx, func(snap Snapshot) { s.deliver(snap, sink) })
}

func (s *Source) deliver(snap Snapshot, sink control.Sink) {
	// The node first, as the kube source: the first Services are then
	// computed with it.
	if info := s.nodeInfo(snap); !s.nodeSet || info != s.node {
		s.node, s.nodeSet = info, true
		sink.SetNode(info)
	}
	s.gen++
	for _, svc := range snap.Services {
		k := objectKey{"Service", svc.Namespace, svc.Name}
		changed := s.services[k].obj != svc
		s.services[k] = delivered[*corev1.Service]{svc, s.gen}
		if changed {
			sink.UpsertService(svc)
		}
	}
	for _, es := range snap.Slices {
		k := objectKey{"EndpointSlice", es.Namespace, es.Name}
		changed := s.slices[k].obj != es
		s.slices[k] = delivered[*discoveryv1.EndpointSlice]{es, s.gen}
		if changed {
			sink.UpsertSlice(es)
		}
	}
	for k, d := range s.services {
		if d.gen != s.gen {
			delete(s.services, k)
			sink.DeleteService(k.namespace, k.name)
		}
	}
	for k, d := range s.slices {
		if d.gen != s.gen {
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

// nodeInfo describes the node from its Node in snap, or by its name alone.
func (s *Source) nodeInfo(snap Snapshot) control.NodeInfo {
	for _, n := range snap.Nodes {
		if n.Name == s.name {
			return control.NodeInfoOf(n)
		}
	}
	return control.NodeInfo{Name: s.name}
}
