package kube

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sluice-lb/sluice/internal/version"
)

// Client limits. The agent only lists and watches three resources, but
// it runs on every node: a relist storm after an API server restart is
// three requests per node, well inside these, and no node should be able
// to ask for more (kube-proxy uses the same figures).
const (
	clientQPS   = 5
	clientBurst = 10
)

// RESTConfig returns the configuration to reach the API server: from the
// kubeconfig file when one is given, else the in-cluster configuration of
// the pod the agent runs in. Outside a pod and without a file it fails
// with an error saying --kubeconfig is needed.
//
// The configuration asks for protobuf, which the core and discovery APIs
// speak (JSON stays accepted as a fallback), identifies itself as
// sluice/<version> and is rate limited to clientQPS.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
	} else {
		cfg, err = rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, errors.New("not running in a pod (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset): --kubeconfig is needed")
		}
		if err != nil {
			return nil, fmt.Errorf("in-cluster config: %w", err)
		}
	}
	cfg.UserAgent = "sluice/" + version.Version
	cfg.QPS = clientQPS
	cfg.Burst = clientBurst
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return cfg, nil
}
