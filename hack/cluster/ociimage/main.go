// Command ociimage writes a one-layer linux/amd64 container image as a tar
// of an OCI image layout, which `ctr -n k8s.io images import` takes, named
// by every -tag, without Docker or a registry. The same inputs give the
// same bytes (fixed mtimes and owners, sorted entries), so the same digest.
// It prints the manifest's digest, which containerd reports as the image's.
//
//	go run ./hack/cluster/ociimage -o pause.tar -tag registry.k8s.io/pause:3.10.2 \
//	    -file /tmp/pause=/pause:0755 -entrypoint '["/pause"]'
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// list is a repeatable string flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

// jsonArray is a flag holding a JSON array of strings: ["/pause"].
type jsonArray []string

func (a *jsonArray) String() string { b, _ := json.Marshal(*a); return string(b) }
func (a *jsonArray) Set(v string) error {
	var s []string
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return fmt.Errorf("not a JSON array of strings: %v", err)
	}
	*a = s
	return nil
}

// splitMode splits "dst:0755" into dst and the mode; a dst without one
// gives mode 0.
func splitMode(s string) (string, int64, error) {
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return s, 0, nil
	}
	m, err := strconv.ParseUint(s[i+1:], 8, 32)
	if err != nil || m > 0o7777 {
		return "", 0, fmt.Errorf("%q: mode %q is not octal permission bits", s, s[i+1:])
	}
	return s[:i], int64(m), nil
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("ociimage", flag.ContinueOnError)
	fl.SetOutput(stderr)
	out := fl.String("o", "", "the archive to write")
	var tags, files, dirs, symlinks, env, ports list
	var entrypoint, cmd jsonArray
	fl.Var(&tags, "tag", "a name of the image, registry/name:tag (repeatable)")
	fl.Var(&files, "file", "src=dst[:mode]: a file or a directory tree into the image (repeatable)")
	fl.Var(&dirs, "dir", "dst[:mode]: an empty directory (repeatable)")
	fl.Var(&symlinks, "symlink", "dst=target (repeatable)")
	fl.Var(&env, "env", "K=V (repeatable; PATH defaults to the usual one)")
	fl.Var(&ports, "expose", "port/proto the image declares, as 8080/tcp (repeatable)")
	fl.Var(&entrypoint, "entrypoint", `JSON array, as ["/pause"]`)
	fl.Var(&cmd, "cmd", `JSON array, as ["pause"]`)
	workdir := fl.String("workdir", "", "the working directory")
	user := fl.String("user", "", "the user to run as (uid[:gid] or a name of /etc/passwd)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fl.Args())
	}
	if *out == "" {
		return fmt.Errorf("-o is required")
	}
	img := &image{tags: tags, files: tree{}}
	for _, f := range files {
		src, rest, ok := strings.Cut(f, "=")
		if !ok || src == "" {
			return fmt.Errorf("-file %q: not src=dst[:mode]", f)
		}
		dst, mode, err := splitMode(rest)
		if err != nil {
			return fmt.Errorf("-file %w", err)
		}
		if err := img.files.addPath(src, dst, mode); err != nil {
			return fmt.Errorf("-file %q: %w", f, err)
		}
	}
	for _, d := range dirs {
		dst, mode, err := splitMode(d)
		if err != nil {
			return fmt.Errorf("-dir %w", err)
		}
		if mode == 0 {
			mode = 0o755
		}
		if err := img.files.addDir(dst, mode); err != nil {
			return fmt.Errorf("-dir %q: %w", d, err)
		}
	}
	for _, s := range symlinks {
		dst, target, ok := strings.Cut(s, "=")
		if !ok {
			return fmt.Errorf("-symlink %q: not dst=target", s)
		}
		if err := img.files.addSymlink(dst, target); err != nil {
			return fmt.Errorf("-symlink %q: %w", s, err)
		}
	}
	hasPath := false
	for _, e := range env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || k == "" {
			return fmt.Errorf("-env %q: not K=V", e)
		}
		hasPath = hasPath || k == "PATH"
	}
	if !hasPath {
		env = append(list{defaultPathEnv}, env...)
	}
	img.config = runConfig{Env: env, Entrypoint: entrypoint, Cmd: cmd, WorkingDir: *workdir, User: *user}
	for _, p := range ports {
		num, proto, ok := strings.Cut(p, "/")
		if n, err := strconv.ParseUint(num, 10, 16); err != nil || n == 0 || !ok || (proto != "tcp" && proto != "udp" && proto != "sctp") {
			return fmt.Errorf("-expose %q: not port/tcp, port/udp or port/sctp", p)
		}
		if img.config.ExposedPorts == nil {
			img.config.ExposedPorts = map[string]struct{}{}
		}
		img.config.ExposedPorts[p] = struct{}{}
	}
	digest, err := writeArchive(img, *out)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, digest)
	return nil
}
