package cli

import (
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/sluice-lb/sluice/internal/version"
)

// versionInfo is what `sluice version -o json` prints.
type versionInfo struct {
	Version string `json:"version"`
	Go      string `json:"go"`
	OS      string `json:"os"`
	Arch    string `json:"arch"`
}

func runVersion(args []string) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	output := outputFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	v := versionInfo{Version: version.Version, Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if *output == outputJSON {
		return printJSON(v)
	}
	_, err := fmt.Fprintf(os.Stdout, "sluice %s %s %s/%s\n", v.Version, v.Go, v.OS, v.Arch)
	return err
}
