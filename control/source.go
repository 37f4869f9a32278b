package control

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Source feeds Services, EndpointSlices and the node to a Sink: the
// manifests directory and the Kubernetes API are the two. Run delivers
// every object, then calls Synced once the first complete list has been
// delivered (rule 31), then delivers changes until ctx ends. Run returns
// nil when ctx ends, or the error that stopped the source.
type Source interface {
	Run(ctx context.Context, sink Sink) error
}

// Sink takes a source's objects. Every call only records the change and
// asks for a sync soon; nothing is programmed from inside a call. Objects
// passed in must not be modified afterwards (informer caches and the
// manifests directory hand out shared, read-only objects).
type Sink interface {
	UpsertService(*corev1.Service)
	DeleteService(namespace, name string)
	UpsertSlice(*discoveryv1.EndpointSlice)
	DeleteSlice(namespace, name string)
	// SetNode records what the desired state needs of this node.
	SetNode(NodeInfo)
	// Synced says the first complete list has been delivered.
	Synced()
	// Skipped reports an object the source itself could not use (a
	// manifest that does not parse), so that it is logged and counted
	// like the problems of the desired state. It replaces every problem
	// the source reported before.
	Skipped([]Problem)
}
