# Sourced by the binaries' builds: the version Kubernetes' own release
# builds stamp into component-base (a module build leaves it at
# v0.0.0-master, which nodes and clients then report).
k8s_version_ldflags() {
	local v=${K8S_VERSION#v} p=k8s.io/component-base/version
	local major=${v%%.*} rest=${v#*.}
	printf -- '-X %s.gitVersion=%s -X %s.gitMajor=%s -X %s.gitMinor=%s -X %s.gitTreeState=clean -X %s.buildDate=1970-01-01T00:00:00Z' \
		"$p" "$K8S_VERSION" "$p" "$major" "$p" "${rest%%.*}" "$p" "$p"
}
