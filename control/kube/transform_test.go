package kube

import (
	"maps"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

const triggerTime = "2026-12-01T10:00:00Z"

func heavyMeta(m *metav1.ObjectMeta) {
	m.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}
	m.Annotations = map[string]string{
		"kubectl.kubernetes.io/last-applied-configuration": `{"big":"json"}`,
		corev1.EndpointsLastChangeTriggerTime:              triggerTime,
		"example.com/other":                                "x",
	}
}

func TestStripServiceAndSlice(t *testing.T) {
	svc := service("ns", "a", "7", "10.96.0.1", map[string]string{"app": "a"}, 80)
	heavyMeta(&svc.ObjectMeta)
	delete(svc.Annotations, corev1.EndpointsLastChangeTriggerTime)
	es := endpointSlice("ns", "a-1", "a", "7", nil, 8080, "10.244.0.1")
	heavyMeta(&es.ObjectMeta)
	wantSpec, wantLabels, wantEndpoints := svc.Spec.DeepCopy(), maps.Clone(es.Labels), es.DeepCopy().Endpoints

	for range 2 { // idempotent
		got, err := strip(svc)
		if err != nil || got != any(svc) {
			t.Fatalf("strip(Service) = %p, %v; want the same object, nil", got, err)
		}
		if svc.ManagedFields != nil || svc.Annotations != nil {
			t.Errorf("Service keeps managedFields %v, annotations %v; want neither", svc.ManagedFields, svc.Annotations)
		}
		if !reflect.DeepEqual(&svc.Spec, wantSpec) || svc.Labels["app"] != "a" || svc.ResourceVersion != "7" {
			t.Errorf("Service spec, labels or resource version changed")
		}

		got, err = strip(es)
		if err != nil || got != any(es) {
			t.Fatalf("strip(EndpointSlice) = %p, %v; want the same object, nil", got, err)
		}
		if es.ManagedFields != nil {
			t.Errorf("EndpointSlice keeps managedFields")
		}
		if want := map[string]string{corev1.EndpointsLastChangeTriggerTime: triggerTime}; !maps.Equal(es.Annotations, want) {
			t.Errorf("EndpointSlice annotations %v, want only %v", es.Annotations, want)
		}
		if !maps.Equal(es.Labels, wantLabels) || !reflect.DeepEqual(es.Endpoints, wantEndpoints) {
			t.Errorf("EndpointSlice labels or endpoints changed")
		}
	}
}

func TestStripNode(t *testing.T) {
	n := node("node-a", "9", "zone-1", "192.168.0.10", "10.0.0.10")
	heavyMeta(&n.ObjectMeta)
	n.Spec.PodCIDR = "10.244.0.0/24"
	n.Spec.PodCIDRs = []string{"10.244.0.0/24"}
	n.Spec.ProviderID = "cloud://node-a"
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	n.Status.Images = []corev1.ContainerImage{{Names: []string{"big/image"}}}
	addrs := n.Status.Addresses

	got, err := strip(n)
	if err != nil {
		t.Fatal(err)
	}
	slim := got.(*corev1.Node)
	want := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-a", ResourceVersion: "9", Labels: map[string]string{corev1.LabelTopologyZone: "zone-1"}},
		Spec:       corev1.NodeSpec{PodCIDR: "10.244.0.0/24", PodCIDRs: []string{"10.244.0.0/24"}},
		Status:     corev1.NodeStatus{Addresses: addrs},
	}
	if !reflect.DeepEqual(slim, want) {
		t.Errorf("strip(Node) = %+v\nwant %+v", slim, want)
	}
	if again, _ := strip(slim); !reflect.DeepEqual(again, want) {
		t.Errorf("strip(strip(Node)) differs")
	}
	if nodeInfo(slim) != nodeInfo(n) {
		t.Errorf("nodeInfo of the stripped Node %v, of the full one %v", nodeInfo(slim), nodeInfo(n))
	}

	noZone := node("node-b", "1", "")
	if got, _ := strip(noZone); got.(*corev1.Node).Labels != nil {
		t.Errorf("a Node without a zone label keeps labels %v", got.(*corev1.Node).Labels)
	}
}

func TestStripLeavesOthersAlone(t *testing.T) {
	cached := endpointSlice("ns", "a-1", "a", "7", nil, 8080, "10.244.0.1")
	heavyMeta(&cached.ObjectMeta)
	before := cached.DeepCopy()
	tomb := cache.DeletedFinalStateUnknown{Key: "ns/a-1", Obj: cached}
	for _, obj := range []any{tomb, &tomb, &corev1.Pod{}, "string", nil} {
		got, err := strip(obj)
		if err != nil || !reflect.DeepEqual(got, obj) {
			t.Errorf("strip(%T) = %v, %v; want it unchanged", obj, got, err)
		}
	}
	if !reflect.DeepEqual(cached, before) {
		t.Errorf("strip changed the cached object inside a tombstone")
	}
}

// The informers run the transform: what the sink gets is stripped.
func TestSinkGetsStrippedObjects(t *testing.T) {
	svc := service("ns", "a", "1", "10.96.0.1", nil, 80)
	heavyMeta(&svc.ObjectMeta)
	es := endpointSlice("ns", "a-1", "a", "1", nil, 8080, "10.244.0.1")
	heavyMeta(&es.ObjectMeta)
	n := node(nodeName, "1", "zone-1", "192.168.0.10")
	heavyMeta(&n.ObjectMeta)
	api := newFakeAPI(t, svc, es, n)
	rec, _, _ := startSource(t, api)
	waitSynced(t, rec, api)

	later := endpointSlice("ns", "a-2", "a", "2", nil, 8080, "10.244.0.2")
	heavyMeta(&later.ObjectMeta)
	mustCreate(t, api, later)
	rec.waitCall(t, "UpsertSlice ns/a-2 rv=2")

	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := map[string]string{corev1.EndpointsLastChangeTriggerTime: triggerTime}
	metas := map[string]*metav1.ObjectMeta{"Service ns/a": &rec.services["ns/a"].ObjectMeta}
	for _, k := range []string{"ns/a-1", "ns/a-2"} {
		metas["EndpointSlice "+k] = &rec.slices[k].ObjectMeta
	}
	for name, m := range metas {
		if m.ManagedFields != nil || !maps.Equal(m.Annotations, want) {
			t.Errorf("%s in the sink: managedFields %v, annotations %v; want none, %v", name, m.ManagedFields, m.Annotations, want)
		}
	}
}
