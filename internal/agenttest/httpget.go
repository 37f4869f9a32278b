package agenttest

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/sluice-lb/sluice/internal/netlab"
)

// HTTPAnswer is what a GET got: status, body and the headers a health
// check answer is judged by.
type HTTPAnswer struct {
	Code                 int
	Body                 string
	ContentType, NoSniff string
}

// HTTPGet GETs path from addr with a socket made inside ns, written and
// read on this goroutine. (An http.Client dials from goroutines of its
// own, whose threads are in this process's namespace: the request would
// leave by the host's routes.)
func HTTPGet(ns *netlab.NS, addr, path string, timeout time.Duration) (HTTPAnswer, error) {
	var a HTTPAnswer
	err := ns.Do(func() error {
		conn, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(timeout))
		req, err := http.NewRequest("GET", "http://"+addr+path, nil)
		if err != nil {
			return err
		}
		if err := req.Write(conn); err != nil {
			return err
		}
		r, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			return err
		}
		defer r.Body.Close()
		b, err := io.ReadAll(r.Body)
		a = HTTPAnswer{r.StatusCode, string(b), r.Header.Get("Content-Type"), r.Header.Get("X-Content-Type-Options")}
		return err
	})
	return a, err
}
