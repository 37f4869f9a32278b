// Package deploy holds the manifests that run sluice in a cluster
// (rbac.yaml, configmap.yaml, daemonset.yaml) and, in its tests, the checks
// that keep them consistent with the code: the image tag is the release
// version, the agent's privileges are the documented ones, the probes and
// the permissions are what the agent serves and uses, and the image is
// built by the Makefile's build target. `make deploy-check` has a real API
// server validate them.
package deploy
