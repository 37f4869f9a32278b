package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/internal/version"
)

const (
	namespace   = "kube-system"
	image       = "ghcr.io/sluice-lb/sluice"
	healthzPort = 10256
	bpffsInit   = "mount-bpffs"
)

// The agent's capabilities, and why (the comments in daemonset.yaml say the same).
var wantCaps = []string{
	"BPF",          // maps, programs, pins
	"NET_ADMIN",    // tc/TCX attach, netlink
	"PERFMON",      // with BPF: the verifier's privileged pointer rules (5.8 split)
	"SYS_RESOURCE", // RLIMIT_MEMLOCK on kernels before 5.11
	"NET_RAW",      // LB-IPAM's gratuitous ARP (AF_PACKET)
}

// What the agent may do, as group/resource/verb; nothing else.
var wantRules = []string{
	"/nodes/get", "/nodes/list", "/nodes/watch",
	"/services/list", "/services/watch",
	"discovery.k8s.io/endpointslices/list", "discovery.k8s.io/endpointslices/watch",
	// LB-IPAM: the addresses it assigns, and why it could not.
	"/services/status/update", "/services/status/patch",
	"/events/create", "/events/patch",
}

// What the agent may do in its own namespace (the Role): LB-IPAM's
// election Lease.
var wantNamespacedRules = []string{
	"coordination.k8s.io/leases/get", "coordination.k8s.io/leases/create", "coordination.k8s.io/leases/update",
}

type manifests struct {
	sa        *corev1.ServiceAccount
	role      *rbacv1.ClusterRole
	binding   *rbacv1.ClusterRoleBinding
	nsRole    *rbacv1.Role
	nsBinding *rbacv1.RoleBinding
	config    *corev1.ConfigMap
	daemonSet *appsv1.DaemonSet
}

// load reads every document of deploy/*.yaml, strictly: a field the API
// does not know fails here before it fails in a cluster.
func load(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var m manifests
	seen := map[string]string{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			var meta struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Metadata   struct {
					Name      string `json:"name"`
					Namespace string `json:"namespace"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if meta.Kind == "" {
				continue // only comments
			}
			key := meta.APIVersion + "/" + meta.Kind
			if prev, dup := seen[key]; dup {
				t.Fatalf("%s: a second %s (first in %s)", f, key, prev)
			}
			seen[key] = f
			var obj any
			switch key {
			case "v1/ServiceAccount":
				m.sa = &corev1.ServiceAccount{}
				obj = m.sa
			case "rbac.authorization.k8s.io/v1/ClusterRole":
				m.role = &rbacv1.ClusterRole{}
				obj = m.role
			case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
				m.binding = &rbacv1.ClusterRoleBinding{}
				obj = m.binding
			case "rbac.authorization.k8s.io/v1/Role":
				m.nsRole = &rbacv1.Role{}
				obj = m.nsRole
			case "rbac.authorization.k8s.io/v1/RoleBinding":
				m.nsBinding = &rbacv1.RoleBinding{}
				obj = m.nsBinding
			case "v1/ConfigMap":
				m.config = &corev1.ConfigMap{}
				obj = m.config
			case "apps/v1/DaemonSet":
				m.daemonSet = &appsv1.DaemonSet{}
				obj = m.daemonSet
			default:
				t.Fatalf("%s: unexpected object %s %s", f, key, meta.Metadata.Name)
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Fatalf("%s: %s %s: %v", f, meta.Kind, meta.Metadata.Name, err)
			}
			if ns := meta.Metadata.Namespace; meta.Kind != "ClusterRole" && meta.Kind != "ClusterRoleBinding" && ns != namespace {
				t.Errorf("%s: %s %s in namespace %q, want %s", f, meta.Kind, meta.Metadata.Name, ns, namespace)
			}
		}
	}
	if m.sa == nil || m.role == nil || m.binding == nil || m.nsRole == nil || m.nsBinding == nil || m.config == nil || m.daemonSet == nil {
		t.Fatalf("missing objects; found %v", seen)
	}
	return m
}

func agentContainer(t *testing.T, ds *appsv1.DaemonSet) *corev1.Container {
	t.Helper()
	cs := ds.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != "agent" {
		t.Fatalf("want exactly one container, agent; have %d", len(cs))
	}
	return &cs[0]
}

func TestImageIsTheRelease(t *testing.T) {
	c := agentContainer(t, load(t).daemonSet)
	if want := image + ":" + version.Version; c.Image != want {
		t.Errorf("image %q, want %q (internal/version.Version)", c.Image, want)
	}
}

func TestNotPrivileged(t *testing.T) {
	ds := load(t).daemonSet
	spec := ds.Spec.Template.Spec
	if spec.HostPID || spec.HostIPC {
		t.Errorf("hostPID %v, hostIPC %v: the agent needs neither", spec.HostPID, spec.HostIPC)
	}
	c := agentContainer(t, ds)
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("agent: no securityContext with capabilities")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("agent: privileged: true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("agent: allowPrivilegeEscalation must be false")
	}
	if got := caps(sc.Capabilities.Drop); !slices.Equal(got, []string{"ALL"}) {
		t.Errorf("agent drops %v, want [ALL]", got)
	}
	if got := caps(sc.Capabilities.Add); !slices.Equal(got, wantCaps) {
		t.Errorf("agent adds %v, want exactly %v", got, wantCaps)
	}

	// Only the init container that mounts bpffs is privileged (Kubernetes
	// allows Bidirectional propagation to no other), and it does nothing
	// else: one mount, of one volume.
	for _, ic := range spec.InitContainers {
		if ic.SecurityContext == nil || ic.SecurityContext.Privileged == nil || !*ic.SecurityContext.Privileged {
			continue
		}
		if ic.Name != bpffsInit {
			t.Errorf("init container %s is privileged", ic.Name)
			continue
		}
		cmd := strings.Join(append(slices.Clone(ic.Command), ic.Args...), " ")
		if !strings.Contains(cmd, "mount -t bpf bpf /sys/fs/bpf") || strings.Count(cmd, "mount ") != 1 {
			t.Errorf("%s runs %q; want one mount of bpffs at /sys/fs/bpf", ic.Name, cmd)
		}
		if len(ic.VolumeMounts) != 1 || ic.VolumeMounts[0].MountPath != "/sys/fs/bpf" {
			t.Errorf("%s mounts %v; want /sys/fs/bpf only", ic.Name, ic.VolumeMounts)
		}
	}
}

// Each added capability is explained by a comment right above it.
func TestCapabilitiesCommented(t *testing.T) {
	raw, err := os.ReadFile("daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	for _, c := range wantCaps {
		re := regexp.MustCompile(`^\s*-\s*` + c + `\s*$`)
		i := slices.IndexFunc(lines, re.MatchString)
		if i < 0 {
			t.Errorf("capability %s not on a line of its own", c)
			continue
		}
		if i == 0 || !strings.HasPrefix(strings.TrimSpace(lines[i-1]), "#") {
			t.Errorf("capability %s has no comment above it saying why", c)
		}
	}
	// The kernels without CAP_BPF are named, with what they need instead.
	if !strings.Contains(string(raw), "5.8") || !strings.Contains(string(raw), "SYS_ADMIN") {
		t.Error("daemonset.yaml does not say that kernels before 5.8 need SYS_ADMIN")
	}
}

func caps(cs []corev1.Capability) []string {
	var s []string
	for _, c := range cs {
		s = append(s, string(c))
	}
	return s
}

func TestProbes(t *testing.T) {
	c := agentContainer(t, load(t).daemonSet)
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/livez"}, {"readiness", c.ReadinessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", p.name)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path || g.Port != intstr.FromInt32(healthzPort) {
			t.Errorf("%s probe on %s port %s, want %s port %d", p.name, g.Path, g.Port.String(), p.path, healthzPort)
		}
	}
	// The agent serves them there, on the node's addresses (hostNetwork:
	// the kubelet probes the node's IP).
	if !slices.Contains(c.Args, fmt.Sprintf("--healthz-bind-address=0.0.0.0:%d", healthzPort)) {
		t.Errorf("args %v do not bind healthz to 0.0.0.0:%d", c.Args, healthzPort)
	}
}

func TestPodSpec(t *testing.T) {
	m := load(t)
	ds := m.daemonSet
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork %v, dnsPolicy %s", spec.HostNetwork, spec.DNSPolicy)
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	if spec.ServiceAccountName != m.sa.Name || m.sa.Namespace != ds.Namespace {
		t.Errorf("runs as %s/%s, the ServiceAccount is %s/%s", ds.Namespace, spec.ServiceAccountName, m.sa.Namespace, m.sa.Name)
	}
	if len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists || spec.Tolerations[0].Key != "" {
		t.Errorf("tolerations %v, want one {operator: Exists} (every node)", spec.Tolerations)
	}
	if spec.NodeSelector["kubernetes.io/os"] != "linux" || len(spec.NodeSelector) != 1 {
		t.Errorf("nodeSelector %v", spec.NodeSelector)
	}
	if spec.TerminationGracePeriodSeconds == nil {
		t.Error("no terminationGracePeriodSeconds")
	}
	u := ds.Spec.UpdateStrategy
	if u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil ||
		u.RollingUpdate.MaxUnavailable == nil || *u.RollingUpdate.MaxUnavailable != intstr.FromInt32(1) {
		t.Errorf("updateStrategy %+v, want RollingUpdate with maxUnavailable 1", u)
	}

	c := agentContainer(t, ds)
	if c.Args[0] != "agent" {
		t.Errorf("args %v do not run the agent", c.Args)
	}
	lim, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok || lim.Value() > 256<<20 || lim.Value() < 128<<20 {
		t.Errorf("memory limit %v, want about 200Mi", lim.String())
	}
	if _, ok := c.Resources.Requests[corev1.ResourceMemory]; !ok {
		t.Error("no memory request")
	}
	if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
		t.Error("no CPU request")
	}
	if !slices.Contains(c.Args, "--service-cidr=$(SERVICE_CIDR)") {
		t.Errorf("args %v do not set --service-cidr", c.Args)
	}

	// bpffs: the host's, into the agent; the init container's mount (if it
	// makes one) goes back to the host.
	var vol *corev1.Volume
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == "bpffs" {
			vol = &spec.Volumes[i]
		}
	}
	if vol == nil || vol.HostPath == nil || vol.HostPath.Path != "/sys/fs/bpf" ||
		vol.HostPath.Type == nil || *vol.HostPath.Type != corev1.HostPathDirectoryOrCreate {
		t.Fatalf("bpffs volume %+v, want hostPath /sys/fs/bpf, DirectoryOrCreate", vol)
	}
	checkMount := func(who string, mounts []corev1.VolumeMount, want corev1.MountPropagationMode) {
		for _, vm := range mounts {
			if vm.Name == "bpffs" {
				if vm.MountPath != "/sys/fs/bpf" || vm.MountPropagation == nil || *vm.MountPropagation != want {
					t.Errorf("%s mounts bpffs at %s, propagation %v; want /sys/fs/bpf, %s", who, vm.MountPath, vm.MountPropagation, want)
				}
				return
			}
		}
		t.Errorf("%s does not mount bpffs", who)
	}
	checkMount("agent", c.VolumeMounts, corev1.MountPropagationHostToContainer)
	if !slices.Contains(c.Args, "--pin-dir=$(PIN_DIR)") || envValue(c, "PIN_DIR") != "/sys/fs/bpf/sluice" {
		t.Errorf("args %v: pin dir not under the mounted bpffs", c.Args)
	}
	// The socket programs' cgroup root is the host's hierarchy, mounted
	// whole, read-only; the container's own /sys/fs/cgroup is its cgroup
	// namespace's, which holds the agent alone.
	var cgVol *corev1.Volume
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == "cgroup" {
			cgVol = &spec.Volumes[i]
		}
	}
	if cgVol == nil || cgVol.HostPath == nil || cgVol.HostPath.Path != "/sys/fs/cgroup" {
		t.Errorf("cgroup volume %+v, want hostPath /sys/fs/cgroup", cgVol)
	}
	cgMounted := false
	for _, vm := range c.VolumeMounts {
		if vm.Name == "cgroup" && vm.MountPath == "/run/sluice/cgroupv2" && vm.ReadOnly {
			cgMounted = true
		}
	}
	if !cgMounted || !slices.Contains(c.Args, "--cgroup-root=$(CGROUP_ROOT)") || envValue(c, "CGROUP_ROOT") != "/run/sluice/cgroupv2" {
		t.Errorf("agent mounts %v, args %v: want the cgroup volume read-only at /run/sluice/cgroupv2 and --cgroup-root there", c.VolumeMounts, c.Args)
	}
	var initFound bool
	for _, ic := range spec.InitContainers {
		if ic.Name == bpffsInit {
			initFound = true
			checkMount(ic.Name, ic.VolumeMounts, corev1.MountPropagationBidirectional)
		}
	}
	if !initFound {
		t.Errorf("no %s init container", bpffsInit)
	}
}

// NODE_NAME comes from the downward API, every $(VAR) of the arguments is
// defined, and every ConfigMap key the DaemonSet reads exists (and none is
// unused): a missing key would keep the pod from starting.
func TestEnvironment(t *testing.T) {
	m := load(t)
	c := agentContainer(t, m.daemonSet)
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	nn, ok := env["NODE_NAME"]
	if !ok || nn.ValueFrom == nil || nn.ValueFrom.FieldRef == nil || nn.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("NODE_NAME %+v, want fieldRef spec.nodeName", nn)
	}
	if !slices.Contains(c.Args, "--node-name=$(NODE_NAME)") {
		t.Errorf("args %v do not pass NODE_NAME to --node-name", c.Args)
	}
	pn, ok := env["POD_NAMESPACE"]
	if !ok || pn.ValueFrom == nil || pn.ValueFrom.FieldRef == nil || pn.ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
		t.Errorf("POD_NAMESPACE %+v, want fieldRef metadata.namespace (LB-IPAM's Lease)", pn)
	}
	if v, ok := m.config.Data["LB_IP_POOL"]; !ok || v != "" || !slices.Contains(c.Args, "--lb-ip-pool=$(LB_IP_POOL)") {
		t.Errorf("LB_IP_POOL %q (present %v), args %v: want an empty key passed to --lb-ip-pool (LB-IPAM off by default)", v, ok, c.Args)
	}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, a := range c.Args {
		for _, v := range ref.FindAllStringSubmatch(a, -1) {
			if _, ok := env[v[1]]; !ok {
				t.Errorf("argument %q names $(%s), which is not in the environment", a, v[1])
			}
		}
	}
	used := map[string]bool{}
	for _, e := range c.Env {
		if e.ValueFrom == nil || e.ValueFrom.ConfigMapKeyRef == nil {
			continue
		}
		r := e.ValueFrom.ConfigMapKeyRef
		if r.Name != m.config.Name {
			t.Errorf("%s from ConfigMap %s, want %s", e.Name, r.Name, m.config.Name)
		}
		if _, ok := m.config.Data[r.Key]; !ok && (r.Optional == nil || !*r.Optional) {
			t.Errorf("%s from key %s, which %s lacks", e.Name, r.Key, m.config.Name)
		}
		used[r.Key] = true
	}
	for k := range m.config.Data {
		if !used[k] {
			t.Errorf("ConfigMap key %s is passed to no flag", k)
		}
	}
	if m.config.Name != "sluice-config" {
		t.Errorf("ConfigMap %s, want sluice-config", m.config.Name)
	}
}

// envValue is the literal value of the container's variable name.
func envValue(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// The API server's address is optional in the ConfigMap: unset, kubelet's
// KUBERNETES_SERVICE_HOST/PORT stand.
func TestAPIServerAddress(t *testing.T) {
	c := agentContainer(t, load(t).daemonSet)
	for _, name := range []string{"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"} {
		var e *corev1.EnvVar
		for i := range c.Env {
			if c.Env[i].Name == name {
				e = &c.Env[i]
			}
		}
		if e == nil || e.ValueFrom == nil || e.ValueFrom.ConfigMapKeyRef == nil || e.ValueFrom.ConfigMapKeyRef.Key != name ||
			e.ValueFrom.ConfigMapKeyRef.Optional == nil || !*e.ValueFrom.ConfigMapKeyRef.Optional {
			t.Errorf("%s %+v: want it from the optional ConfigMap key of the same name", name, e)
		}
	}
}

// grants lists rules as group/resource/verb, sorted.
func grants(t *testing.T, rules []rbacv1.PolicyRule) []string {
	t.Helper()
	var got []string
	for _, r := range rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("rule %+v: resourceNames and nonResourceURLs are not expected", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					got = append(got, g+"/"+res+"/"+v)
				}
			}
		}
	}
	sort.Strings(got)
	return got
}

func TestRBAC(t *testing.T) {
	m := load(t)
	got := grants(t, m.role.Rules)
	want := slices.Clone(wantRules)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("ClusterRole %s grants\n  %v\nwant exactly\n  %v", m.role.Name, got, want)
	}
	got = grants(t, m.nsRole.Rules)
	want = slices.Clone(wantNamespacedRules)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("Role %s grants\n  %v\nwant exactly\n  %v", m.nsRole.Name, got, want)
	}
	nb := m.nsBinding
	if nb.RoleRef.Kind != "Role" || nb.RoleRef.Name != m.nsRole.Name || nb.RoleRef.APIGroup != rbacv1.GroupName ||
		len(nb.Subjects) != 1 || nb.Subjects[0].Kind != "ServiceAccount" ||
		nb.Subjects[0].Name != m.sa.Name || nb.Subjects[0].Namespace != m.sa.Namespace {
		t.Errorf("RoleBinding %+v, want Role %s for ServiceAccount %s/%s", nb, m.nsRole.Name, m.sa.Namespace, m.sa.Name)
	}
	b := m.binding
	if b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != m.role.Name || b.RoleRef.APIGroup != rbacv1.GroupName {
		t.Errorf("binding refers to %+v, want ClusterRole %s", b.RoleRef, m.role.Name)
	}
	if len(b.Subjects) != 1 || b.Subjects[0].Kind != "ServiceAccount" ||
		b.Subjects[0].Name != m.sa.Name || b.Subjects[0].Namespace != m.sa.Namespace {
		t.Errorf("binding subjects %+v, want ServiceAccount %s/%s", b.Subjects, m.sa.Namespace, m.sa.Name)
	}
}

// --- the image ----------------------------------------------------------------

type instruction struct {
	cmd  string // upper case
	args string
}

type stage struct {
	from, name string
	steps      []instruction
}

// dockerfile parses the instructions of a Dockerfile, continuation lines
// joined, comments dropped.
func dockerfile(t *testing.T, path string) []stage {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var stages []stage
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{strings.ToUpper(cmd), strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			s := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			return
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("%s: %s before FROM", path, in.cmd)
			}
			return
		}
		stages[len(stages)-1].steps = append(stages[len(stages)-1].steps, in)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		if s, ok := strings.CutSuffix(strings.TrimRight(l, " \t"), "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(l)
		flush()
	}
	flush()
	return stages
}

// The image's binary is the Makefile's: the build stage runs make build
// with the Go of go.mod, and the final stage holds only that binary.
func TestDockerfile(t *testing.T) {
	stages := dockerfile(t, "../Dockerfile")
	if len(stages) != 2 {
		t.Fatalf("%d stages, want build and final", len(stages))
	}
	build, final := stages[0], stages[1]
	if build.name == "" {
		t.Fatal("the build stage has no name")
	}
	goVersion := goModVersion(t)
	if want := "golang:" + goVersion; !strings.HasPrefix(build.from, want) {
		t.Errorf("build stage FROM %s, want %s (go.mod's go)", build.from, want)
	}
	var workdir string
	var makes bool
	for _, s := range build.steps {
		switch s.cmd {
		case "WORKDIR":
			workdir = s.args
		case "RUN":
			if regexp.MustCompile(`(^|[;&|]\s*)make build(\s|$)`).MatchString(s.args) {
				makes = true
			}
			if strings.Contains(s.args, "go build") {
				t.Errorf("build stage runs go build itself (%q): it must use make build", s.args)
			}
		}
	}
	if !makes {
		t.Error("build stage does not RUN make build")
	}
	if workdir == "" {
		t.Fatal("build stage has no WORKDIR")
	}

	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") && final.from != "scratch" {
		t.Errorf("final stage FROM %s, want distroless/static or scratch", final.from)
	}
	var copied, entry bool
	for _, s := range final.steps {
		switch s.cmd {
		case "COPY":
			want := fmt.Sprintf("--from=%s %s/bin/sluice /sluice", build.name, strings.TrimSuffix(workdir, "/"))
			if s.args != want {
				t.Errorf("COPY %s, want COPY %s", s.args, want)
			}
			copied = true
		case "ENTRYPOINT":
			var argv []string
			if err := json.Unmarshal([]byte(s.args), &argv); err != nil || !slices.Equal(argv, []string{"/sluice"}) {
				t.Errorf(`ENTRYPOINT %s, want ["/sluice"]`, s.args)
			}
			entry = true
		case "RUN":
			t.Errorf("final stage runs %q: it has no shell", s.args)
		}
	}
	if !copied || !entry {
		t.Errorf("final stage: COPY of the binary %v, ENTRYPOINT %v", copied, entry)
	}

	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(ignore), "\n") {
		switch strings.Trim(strings.TrimSpace(l), "/") {
		case "go.mod", "go.sum", "Makefile", "cmd", "internal", "bpf":
			t.Errorf(".dockerignore leaves out %s, which the build needs", l)
		}
	}
}

func goModVersion(t *testing.T) string {
	raw, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(raw)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	return string(m[1])
}

// make build makes a static, reproducible binary stamped with the version
// the image is tagged with.
func TestMakeBuild(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		testenv.Unavailable(t, "needs make: %v", err)
		return
	}
	out, err := exec.Command("make", "-C", "..", "-s", "--no-print-directory", "version").CombinedOutput()
	if err != nil {
		t.Fatalf("make version: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != version.Version {
		t.Errorf("make version prints %q, internal/version says %q", got, version.Version)
	}
	out, err = exec.Command("make", "-C", "..", "-n", "--no-print-directory", "build").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n build: %v\n%s", err, out)
	}
	recipe := string(out)
	for _, want := range []string{
		"CGO_ENABLED=0",
		"-trimpath",
		"-X github.com/sluice-lb/sluice/internal/version.Version=" + version.Version,
		"-o bin/sluice",
		"./cmd/sluice",
	} {
		if !strings.Contains(recipe, want) {
			t.Errorf("make build runs\n  %s\nwithout %q", strings.TrimSpace(recipe), want)
		}
	}
}
