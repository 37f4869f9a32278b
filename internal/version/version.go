// Package version is sluice's release version: what `sluice version`
// prints and the tag of the image deploy/ runs.
package version

// Version is set at build time with
// -ldflags "-X github.com/sluice-lb/sluice/internal/version.Version=...";
// the default is the release this tree is on its way to.
var Version = "0.2.0-dev"
