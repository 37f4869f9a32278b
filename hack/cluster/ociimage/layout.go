package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// The OCI image layout's media types and the annotation by which
// `ctr images import` names an image of the index.
const (
	mediaIndex      = "application/vnd.oci.image.index.v1+json"
	mediaManifest   = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig     = "application/vnd.oci.image.config.v1+json"
	mediaLayer      = "application/vnd.oci.image.layer.v1.tar"
	annotationName  = "io.containerd.image.name"
	annotationRef   = "org.opencontainers.image.ref.name"
	defaultPathEnv  = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	layoutFileValue = `{"imageLayoutVersion":"1.0.0"}`
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

// runConfig is what a container of the image runs.
type runConfig struct {
	User         string              `json:"User,omitempty"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
	Env          []string            `json:"Env,omitempty"`
	Entrypoint   []string            `json:"Entrypoint,omitempty"`
	Cmd          []string            `json:"Cmd,omitempty"`
	WorkingDir   string              `json:"WorkingDir,omitempty"`
}

type imageConfig struct {
	Created      string    `json:"created"`
	Architecture string    `json:"architecture"`
	OS           string    `json:"os"`
	Config       runConfig `json:"config"`
	RootFS       struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
	History []struct {
		Created   string `json:"created"`
		CreatedBy string `json:"created_by"`
	} `json:"history"`
}

// refPattern is a fully qualified reference with a tag:
// registry.k8s.io/pause:3.10.2. The registry part must hold a dot, a colon
// or be localhost, so that containerd does not read it as a Docker Hub path
// and the name the image is stored under is the one given.
var refPattern = regexp.MustCompile(`^(localhost|[a-z0-9-]+(\.[a-z0-9-]+)+|[a-z0-9.-]+:[0-9]+)(/[a-z0-9]+([._-][a-z0-9]+)*)+:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

func checkRef(ref string) (tag string, err error) {
	if !refPattern.MatchString(ref) {
		return "", fmt.Errorf("tag %q: not a reference of the form registry.example/name:tag", ref)
	}
	return ref[strings.LastIndex(ref, ":")+1:], nil
}

// image is what one archive holds: one layer, one config, one manifest,
// named by every tag.
type image struct {
	tags   []string
	files  tree
	config runConfig
}

// blob is a content-addressed file of the layout.
type blob struct {
	digest string
	size   int64
}

func (b blob) name() string { return "blobs/sha256/" + strings.TrimPrefix(b.digest, "sha256:") }

func digestOf(data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{digest: "sha256:" + hex.EncodeToString(sum[:]), size: int64(len(data))}
}

// writeArchive writes img as a tar of an OCI image layout to out
// (atomically: a temporary file renamed) and returns the manifest's digest,
// which is what containerd reports as the image's.
func writeArchive(img *image, out string) (string, error) {
	if len(img.tags) == 0 {
		return "", fmt.Errorf("no -tag: the image would have no name")
	}
	dir := filepath.Dir(out)
	// The layer goes to a temporary file first: its digest and size are
	// needed before its bytes in the archive.
	lf, err := os.CreateTemp(dir, ".layer-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(lf.Name())
	defer lf.Close()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(lf, h)}
	if err := img.files.write(cw); err != nil {
		return "", err
	}
	layer := blob{digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), size: cw.n}

	cfg := imageConfig{Created: epoch.Format("2006-01-02T15:04:05Z"), Architecture: "amd64", OS: "linux", Config: img.config}
	cfg.RootFS.Type = "layers"
	cfg.RootFS.DiffIDs = []string{layer.digest}
	cfg.History = append(cfg.History, struct {
		Created   string `json:"created"`
		CreatedBy string `json:"created_by"`
	}{cfg.Created, "hack/cluster/ociimage"})
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	cfgBlob := digestOf(cfgJSON)

	mf := manifest{
		SchemaVersion: 2,
		MediaType:     mediaManifest,
		Config:        descriptor{MediaType: mediaConfig, Digest: cfgBlob.digest, Size: cfgBlob.size},
		Layers:        []descriptor{{MediaType: mediaLayer, Digest: layer.digest, Size: layer.size}},
	}
	mfJSON, err := json.Marshal(mf)
	if err != nil {
		return "", err
	}
	mfBlob := digestOf(mfJSON)

	idx := index{SchemaVersion: 2, MediaType: mediaIndex}
	tags := append([]string(nil), img.tags...)
	sort.Strings(tags)
	for i, ref := range tags {
		if i > 0 && ref == tags[i-1] {
			continue
		}
		tag, err := checkRef(ref)
		if err != nil {
			return "", err
		}
		idx.Manifests = append(idx.Manifests, descriptor{
			MediaType:   mediaManifest,
			Digest:      mfBlob.digest,
			Size:        mfBlob.size,
			Platform:    &platform{Architecture: "amd64", OS: "linux"},
			Annotations: map[string]string{annotationName: ref, annotationRef: tag},
		})
	}
	idxJSON, err := json.Marshal(idx)
	if err != nil {
		return "", err
	}

	f, err := os.CreateTemp(dir, ".archive-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	tw := tar.NewWriter(f)
	put := func(name string, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := io.Copy(tw, r)
		return err
	}
	putBytes := func(name string, data []byte) error { return put(name, int64(len(data)), bytes.NewReader(data)) }
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return "", err
		}
	}
	if _, err := lf.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	if err := put(layer.name(), layer.size, lf); err != nil {
		return "", err
	}
	if err := putBytes(cfgBlob.name(), cfgJSON); err != nil {
		return "", err
	}
	if err := putBytes(mfBlob.name(), mfJSON); err != nil {
		return "", err
	}
	if err := putBytes("index.json", idxJSON); err != nil {
		return "", err
	}
	if err := putBytes("oci-layout", []byte(layoutFileValue)); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := f.Chmod(0o644); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return "", err
	}
	return mfBlob.digest, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
