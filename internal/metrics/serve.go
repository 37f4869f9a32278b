package metrics

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluice-lb/sluice/internal/httpserve"
)

// Handler serves reg on /metrics. A collector that fails (a map that
// cannot be read) is logged and left out of that scrape; the rest is
// served, so one bad map does not blank every graph. Scrapes are counted
// in promhttp_metric_handler_requests_total and errors in
// promhttp_metric_handler_errors_total, on reg.
func Handler(reg *prometheus.Registry) http.Handler {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg,
	})
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.InstrumentMetricHandler(reg, h))
	return mux
}

const serverName = "metrics server"

// Listen opens a TCP listener on addr (":9100"; "127.0.0.1:0" for a free
// port, read back with Addr). The error names the address.
func Listen(addr string) (net.Listener, error) { return httpserve.Listen(serverName, addr) }

// Serve serves h on addr until ctx ends, then returns nil. It returns an
// error naming addr when it cannot listen there.
func Serve(ctx context.Context, addr string, h http.Handler) error {
	ln, err := Listen(addr)
	if err != nil {
		return err
	}
	return ServeListener(ctx, ln, h)
}

// ServeListener serves h on ln, which it closes, until ctx ends, then
// returns nil. A scrape of a full conntrack table takes a few hundred
// milliseconds: the write timeout is generous.
func ServeListener(ctx context.Context, ln net.Listener, h http.Handler) error {
	return httpserve.Serve(ctx, serverName, ln, h, 30*time.Second)
}
