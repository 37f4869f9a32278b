package netlab

import (
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// Run runs a command inside the namespace (only its network namespace
// differs from ours) with stdin as its input, and returns its standard
// output; a failure carries its standard error.
func (n *NS) Run(stdin string, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	} else {
		cmd.Stdin = io.MultiReader()
	}
	if err := n.Start(cmd); err != nil {
		return nil, fmt.Errorf("%s in %s: %w", name, n.Name, err)
	}
	if err := cmd.Wait(); err != nil {
		return out.Bytes(), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err,
			strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}
