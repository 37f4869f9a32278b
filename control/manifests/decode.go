package manifests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// object is one Service, EndpointSlice or Node read from a file.
type object struct {
	key     objectKey
	service *corev1.Service
	slice   *discoveryv1.EndpointSlice
	node    *corev1.Node
}

type objectKey struct {
	kind, namespace, name string
}

func (k objectKey) String() string {
	if k.namespace == "" { // cluster-scoped: a Node
		return k.kind + " " + k.name
	}
	return k.kind + " " + k.namespace + "/" + k.name
}

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

// decodeFile reads every document of a YAML or JSON stream, unrolling
// kind: List. A syntax error fails the whole file (err); an object that is
// well-formed YAML but not a valid Service, EndpointSlice or Node is returned in
// bad with its reason, and the other objects still count.
func decodeFile(data []byte) (objs []object, bad []objectError, err error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for i := 0; ; i++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, bad, nil
			}
			return nil, nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 || string(raw) == "null" {
			continue
		}
		o, b := decodeObject(raw, 0)
		objs = append(objs, o...)
		bad = append(bad, b...)
	}
}

// trimMeta drops what sluice never reads and that can be large in
// manifests exported from a cluster.
func trimMeta(m *metav1.ObjectMeta) {
	m.ManagedFields = nil
	delete(m.Annotations, "kubectl.kubernetes.io/last-applied-configuration")
}

type objectError struct {
	object string
	reason string
}

func decodeObject(raw json.RawMessage, depth int) ([]object, []objectError) {
	var tm typeMeta
	if err := json.Unmarshal(raw, &tm); err != nil {
		return nil, []objectError{{"document", "not an object: " + err.Error()}}
	}
	ns := tm.Metadata.Namespace
	if ns == "" {
		ns = "default"
	}
	key := objectKey{kind: tm.Kind, namespace: ns, name: tm.Metadata.Name}
	fail := func(format string, args ...any) ([]object, []objectError) {
		return nil, []objectError{{key.String(), fmt.Sprintf(format, args...)}}
	}
	switch {
	case strings.HasSuffix(tm.Kind, "List"): // List, ServiceList...
		if depth > 0 {
			return fail("nested list")
		}
		var list struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(raw, &list); err != nil {
			return fail("%v", err)
		}
		var objs []object
		var bad []objectError
		for _, item := range list.Items {
			o, b := decodeObject(item, depth+1)
			objs = append(objs, o...)
			bad = append(bad, b...)
		}
		return objs, bad
	case tm.Kind == "Service" && tm.APIVersion == "v1":
		if tm.Metadata.Name == "" {
			return fail("no metadata.name")
		}
		svc := &corev1.Service{}
		if err := json.Unmarshal(raw, svc); err != nil {
			return fail("%v", err)
		}
		svc.Namespace = ns
		trimMeta(&svc.ObjectMeta)
		return []object{{key: key, service: svc}}, nil
	case tm.Kind == "EndpointSlice" && tm.APIVersion == "discovery.k8s.io/v1":
		if tm.Metadata.Name == "" {
			return fail("no metadata.name")
		}
		es := &discoveryv1.EndpointSlice{}
		if err := json.Unmarshal(raw, es); err != nil {
			return fail("%v", err)
		}
		switch es.AddressType {
		case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN:
		default:
			return fail("addressType %q is not IPv4, IPv6 or FQDN", es.AddressType)
		}
		es.Namespace = ns
		trimMeta(&es.ObjectMeta)
		// The decoder grows the list by doubling; an exact copy keeps
		// 10,000 slices from holding megabytes of spare capacity.
		es.Endpoints = slices.Clone(es.Endpoints)
		return []object{{key: key, slice: es}}, nil
	case tm.Kind == "Node" && tm.APIVersion == "v1":
		// Cluster-scoped: a namespace in the manifest means nothing.
		key.namespace = ""
		if tm.Metadata.Name == "" {
			return fail("no metadata.name")
		}
		n := &corev1.Node{}
		if err := json.Unmarshal(raw, n); err != nil {
			return fail("%v", err)
		}
		n.Namespace = ""
		trimMeta(&n.ObjectMeta)
		return []object{{key: key, node: n}}, nil
	case tm.Kind == "":
		return []object{}, []objectError{{"document", "no kind"}}
	}
	// Other kinds (Deployments, ConfigMaps...) may share the directory.
	return nil, nil
}
