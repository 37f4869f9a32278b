// Command sluice is the one binary of sluice: the node agent, the
// commands that inspect its datapath, a demo backend and a lab.
package main

import (
	"os"

	"github.com/sluice-lb/sluice/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
