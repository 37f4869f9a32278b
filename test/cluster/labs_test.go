//go:build cluster

package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/testenv"
)

const labLabel = "kubernetes.courselabs.co=services"

// The Services tutorial, step by step as users run it (only the images are
// the lab's): Pods, a ClusterIP found by DNS, a replaced backend, NodePort
// and LoadBalancer from outside, then the other tutorials' Service kinds.
func TestTutorialServices(t *testing.T) {
	t.Cleanup(func() { kubectl("delete", "pod,svc", "-l", labLabel, "--wait=true") })
	specs := labDir("services", "specs")
	mustKubectl(t, "apply", "-f", specs+"/pods")
	mustKubectl(t, "wait", "--for=condition=Ready", "pod", "-l", labLabel, "--timeout=120s")

	// Pods can't find each other by name.
	if out := nslookup("whoami"); strings.Contains(out, "Name:") {
		t.Fatalf("nslookup whoami before the Service answered: %s", out)
	}

	var clusterIP string
	t.Run("ClusterIP by DNS", func(t *testing.T) {
		mustKubectl(t, "apply", "-f", specs+"/services/whoami-clusterip.yaml")
		clusterIP = jsonpath(t, "service/whoami", "{.spec.clusterIP}")
		testenv.WaitFor(t, "nslookup whoami gives the ClusterIP", time.Minute,
			contains("Address: "+clusterIP, func() (string, error) { return nslookup("whoami"), nil }))
		testenv.WaitFor(t, "curl http://whoami", time.Minute,
			contains("whoami", func() (string, error) { return execIn("sleep", "curl", "-s", "--max-time", "5", "http://whoami") }))
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("a replaced Pod behind the same name", func(t *testing.T) {
		before := jsonpath(t, "pod/whoami", "{.status.podIP}")
		mustKubectl(t, "delete", "pods", "-l", "app=whoami", "--wait=true")
		mustKubectl(t, "apply", "-f", specs+"/pods")
		mustKubectl(t, "wait", "--for=condition=Ready", "pod/whoami", "--timeout=120s")
		after := jsonpath(t, "pod/whoami", "{.status.podIP}")
		if after == before {
			t.Logf("the new Pod got the old one's IP %s (host-local reuses freed addresses)", after)
		}
		testenv.WaitFor(t, "curl http://whoami after the replacement", time.Minute, contains(after,
			func() (string, error) { return execIn("sleep", "curl", "-s", "--max-time", "5", "http://whoami") }))
		if got := jsonpath(t, "service/whoami", "{.spec.clusterIP}"); got != clusterIP {
			t.Errorf("ClusterIP moved from %s to %s", clusterIP, got)
		}
	})

	t.Run("NodePort and LoadBalancer", func(t *testing.T) {
		mustKubectl(t, "apply", "-f", specs+"/services/whoami-nodeport.yaml", "-f", specs+"/services/whoami-loadbalancer.yaml")
		for _, url := range []string{"http://whoami-lb:8080", "http://whoami-np:8010"} {
			testenv.WaitFor(t, "curl "+url+" from the sleep Pod", time.Minute, contains("whoami",
				func() (string, error) { return execIn("sleep", "curl", "-s", "--max-time", "5", url) }))
		}
		for _, ip := range nodeIPs() {
			url := fmt.Sprintf("http://%s:30010", ip)
			testenv.WaitFor(t, "curl "+url+" from the external client", time.Minute, contains("whoami",
				func() (string, error) { return fromOutside("curl", "-s", "--max-time", "5", url) }))
		}
		var lbIP string
		testenv.WaitFor(t, "whoami-lb gets an external IP from the pool", time.Minute, func() error {
			lbIP = jsonpath(t, "service/whoami-lb", "{.status.loadBalancer.ingress[0].ip}")
			if lbIP == "" {
				return fmt.Errorf("EXTERNAL-IP pending")
			}
			return nil
		})
		testenv.WaitFor(t, "curl http://"+lbIP+":8080 from the external client (no route set by hand)", time.Minute,
			contains("whoami", func() (string, error) {
				return fromOutside("curl", "-s", "--max-time", "5", "http://"+lbIP+":8080")
			}))
	})

	t.Run("no endpoints refuses", func(t *testing.T) {
		mustKubectl(t, "apply", "-f", labDir("extra", "no-endpoints.yaml"))
		if got := jsonpath(t, "endpointslices", `{.items[?(@.metadata.labels.kubernetes\.io/service-name=="whoami-none")].endpoints}`); got != "" && got != "null" {
			t.Fatalf("whoami-none has endpoints %s", got)
		}
		// REJECT: the connect fails at once (curl's exit 7, "couldn't
		// connect"), not after its timeout as a dropped SYN would.
		testenv.WaitFor(t, "curl http://whoami-none is refused at once", time.Minute, func() error {
			t0 := time.Now()
			out, err := execIn("sleep", "curl", "-sS", "--max-time", "5", "http://whoami-none")
			if err == nil || !strings.Contains(out, "curl: (7)") || time.Since(t0) > 3*time.Second {
				return fmt.Errorf("want a refusal at once, got %v after %s", err, time.Since(t0))
			}
			return nil
		})
	})

	t.Run("ExternalName and headless by DNS", func(t *testing.T) {
		mustKubectl(t, "apply", "-f", labDir("extra", "external-service.yaml"), "-f", labDir("extra", "headless.yaml"))
		testenv.WaitFor(t, "external-service is a CNAME of domain.com", time.Minute, contains("canonical name = domain.com",
			func() (string, error) { return nslookup("external-service.default.svc.cluster.local"), nil }))
		podIP := jsonpath(t, "pod/whoami", "{.status.podIP}")
		testenv.WaitFor(t, "whoami-headless resolves to the Pod", time.Minute, contains("Address: "+podIP,
			func() (string, error) { return nslookup("whoami-headless"), nil }))
	})

	t.Run("environment variables in a Pod created after the Service", func(t *testing.T) {
		mustKubectl(t, "run", "envcheck", "--image=sluice.local/tools:1", "--restart=Never", "--labels="+labLabel,
			"--", "sh", "-c", "echo host=$WHOAMI_SERVICE_HOST port=$WHOAMI_SERVICE_PORT")
		testenv.WaitFor(t, "envcheck done", 2*time.Minute, func() error {
			if p := jsonpath(t, "pod/envcheck", "{.status.phase}"); p != "Succeeded" {
				return fmt.Errorf("phase %q", p)
			}
			return nil
		})
		if out := mustKubectl(t, "logs", "envcheck"); !strings.Contains(out, "host="+clusterIP+" port=80") {
			t.Errorf("envcheck printed %q, want WHOAMI_SERVICE_HOST=%s, _PORT=80", out, clusterIP)
		}
	})

	t.Run("the kubernetes Service from a Pod", func(t *testing.T) {
		if ep := jsonpath(t, "endpointslice/kubernetes", "{.endpoints[0].addresses[0]}"); ep != lab["CLUSTER_API_HOST"] {
			t.Errorf("kubernetes Service's endpoint %s, want the API server's %s", ep, lab["CLUSTER_API_HOST"])
		}
		testenv.WaitFor(t, "https://kubernetes.default/version from the sleep Pod", time.Minute, contains(`"gitVersion"`,
			func() (string, error) {
				return execIn("sleep", "curl", "-sk", "--max-time", "5", "https://kubernetes.default/version")
			}))
	})

	// A hostNetwork Pod's connects are translated by sluice's socket
	// programs (there is no pod veth to catch them on), on every node.
	t.Run("the ClusterIP from a hostNetwork Pod", func(t *testing.T) {
		for _, node := range nodes() {
			pod := "hostnet-" + node
			mustKubectl(t, "run", pod, "--image=sluice.local/tools:1", "--restart=Never", "--labels="+labLabel,
				"--overrides", fmt.Sprintf(`{"spec":{"hostNetwork":true,"nodeName":%q}}`, node), "--", "sleep", "3600")
			mustKubectl(t, "wait", "--for=condition=Ready", "pod/"+pod, "--timeout=120s")
			testenv.WaitFor(t, "curl the ClusterIP from "+pod, time.Minute, contains("whoami",
				func() (string, error) { return execIn(pod, "curl", "-s", "--max-time", "5", "http://"+clusterIP) }))
		}
	})

	t.Run("cleanup by label", func(t *testing.T) {
		mustKubectl(t, "delete", "pod,svc", "-l", labLabel, "--wait=true")
		if out := strings.TrimSpace(mustKubectl(t, "get", "pod,svc", "-l", labLabel, "-o", "name")); out != "" {
			t.Errorf("left after the delete: %s", out)
		}
	})
}

// nslookup is `kubectl exec sleep -- nslookup name`'s output. Its exit
// status is not the answer: busybox's nslookup tries every search domain
// and exits 1 when any of them (whoami.cluster.local, say) is NXDOMAIN,
// even when whoami.default.svc.cluster.local answered; and the target of a
// CNAME does not resolve offline.
func nslookup(name string) string {
	out, _ := execIn("sleep", "nslookup", name)
	return out
}
