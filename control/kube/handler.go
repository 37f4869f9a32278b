package kube

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/sluice-lb/sluice/control"
)

// handler turns one informer's events into sink calls. The objects it
// passes on are the informer cache's, shared: nothing may change them.
type handler[T metav1.Object] struct {
	r      *run
	kind   string
	upsert func(T)
	remove func(namespace, name string)
}

func (h handler[T]) OnAdd(obj any, _ bool) {
	o, ok := obj.(T)
	if !ok {
		h.unexpected(obj)
		return
	}
	h.r.log.Debug("upsert", "kind", h.kind, "object", ref(o))
	h.r.deliver(func() { h.upsert(o) })
}

func (h handler[T]) OnUpdate(oldObj, newObj any) {
	o, ok := newObj.(T)
	if !ok {
		h.unexpected(newObj)
		return
	}
	// A relist hands every object again as an update; one whose
	// resource version did not move has not changed.
	if old, ok := oldObj.(T); ok && o.GetResourceVersion() != "" && old.GetResourceVersion() == o.GetResourceVersion() {
		return
	}
	h.r.log.Debug("upsert", "kind", h.kind, "object", ref(o))
	h.r.deliver(func() { h.upsert(o) })
}

func (h handler[T]) OnDelete(obj any) {
	var namespace, name string
	switch o := obj.(type) {
	case T:
		namespace, name = o.GetNamespace(), o.GetName()
	case cache.DeletedFinalStateUnknown:
		// The delete was missed and noticed at a relist: the key is
		// all that is certain (the object may be stale, or none).
		var err error
		namespace, name, err = cache.SplitMetaNamespaceKey(o.Key)
		if err != nil {
			h.r.log.Error("deleted object with an invalid key", "kind", h.kind, "key", o.Key, "err", err)
			return
		}
		h.r.log.Debug("delete noticed at relist", "kind", h.kind, "object", o.Key)
	default:
		h.unexpected(obj)
		return
	}
	h.r.log.Debug("delete", "kind", h.kind, "object", joinRef(namespace, name))
	h.r.deliver(func() { h.remove(namespace, name) })
}

func (h handler[T]) unexpected(obj any) {
	h.r.log.Error("informer handed an object of an unexpected type, ignored", "kind", h.kind, "type", fmt.Sprintf("%T", obj))
}

// upsertNode records this node's Node object. Another node's (an API that
// ignored the field selector) is ignored.
func (r *run) upsertNode(n *corev1.Node) {
	if n.Name != r.src.nodeName {
		return
	}
	r.setNodeLocked(nodeInfo(n))
}

// deleteNode forgets what the Node object said; the name stays.
func (r *run) deleteNode(_, name string) {
	if name != r.src.nodeName {
		return
	}
	r.log.Warn("this node's Node object was deleted", "node", name)
	r.setNodeLocked(control.NodeInfo{Name: name})
}

// ensureNode gives the sink the node's name if no Node object of that
// name was listed, so the desired state knows it all the same.
func (r *run) ensureNode() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nodeSet || r.stopped {
		return
	}
	r.log.Warn("no Node object for this node name; endpoint locality uses the name only, without zone or addresses", "node", r.src.nodeName)
	r.node, r.nodeSet = control.NodeInfo{Name: r.src.nodeName}, true
	r.sink.SetNode(r.node)
}

// setNodeLocked calls SetNode if info differs from what the sink last had.
// r.mu must be held (it is, inside deliver).
func (r *run) setNodeLocked(info control.NodeInfo) {
	if r.nodeSet && r.node == info {
		return
	}
	// Logged by the agent, for either source.
	r.log.Debug("node", "name", info.Name, "zone", info.Zone, "internalIPs", info.InternalIPs, "podCIDRs", info.PodCIDRs)
	r.node, r.nodeSet = info, true
	r.sink.SetNode(info)
}

// nodeInfo is what the desired state needs of a Node.
func nodeInfo(n *corev1.Node) control.NodeInfo { return control.NodeInfoOf(n) }

// ref names an object as namespace/name (name alone if cluster-scoped).
func ref(o metav1.Object) string { return joinRef(o.GetNamespace(), o.GetName()) }

func joinRef(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}
