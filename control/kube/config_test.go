package kube

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-lb/sluice/internal/version"
)

const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: https://192.0.2.1:6443
    insecure-skip-tls-verify: true
users:
- name: agent
  user:
    token: secret-token
contexts:
- name: lab
  context: {cluster: lab, user: agent}
current-context: lab
`

func TestRESTConfigFromFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := RESTConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://192.0.2.1:6443" || cfg.BearerToken != "secret-token" {
		t.Errorf("host %q, token %q: not the file's", cfg.Host, cfg.BearerToken)
	}
	if want := "sluice/" + version.Version; cfg.UserAgent != want {
		t.Errorf("user agent %q, want %q", cfg.UserAgent, want)
	}
	if cfg.ContentType != "application/vnd.kubernetes.protobuf" {
		t.Errorf("content type %q, want protobuf", cfg.ContentType)
	}
	if !strings.HasPrefix(cfg.AcceptContentTypes, "application/vnd.kubernetes.protobuf,") || !strings.Contains(cfg.AcceptContentTypes, "application/json") {
		t.Errorf("accept %q, want protobuf then JSON", cfg.AcceptContentTypes)
	}
	if cfg.QPS <= 0 || cfg.Burst < int(cfg.QPS) {
		t.Errorf("QPS %v, burst %d", cfg.QPS, cfg.Burst)
	}
}

func TestRESTConfigErrors(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	if _, err := RESTConfig(""); err == nil || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Errorf("outside a pod without a file: %v, want an error naming --kubeconfig", err)
	}
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := RESTConfig(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v, want an error naming it", err)
	}
}
