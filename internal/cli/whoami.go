package cli

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluice-lb/sluice/internal/whoami"
)

func runWhoami(args []string) error {
	fs := flag.NewFlagSet("whoami", flag.ContinueOnError)
	hostname, _ := os.Hostname()
	listen := fs.String("listen", ":8080", "address to answer on, TCP and UDP")
	name := fs.String("name", hostname, "name to answer with")
	if err := fs.Parse(args); err != nil {
		return err
	}
	srv, err := whoami.Listen(*name, *listen)
	if err != nil {
		return err
	}
	slog.Info("whoami listening", "addr", srv.Addr(), "name", *name)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return srv.Serve(ctx)
}
