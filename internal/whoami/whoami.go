// Package whoami is a demo backend: over HTTP, raw TCP and UDP it answers
// with its name, its addresses and the client's address:port, so a client
// can see which backend a service sent it to and from where the backend
// saw it come.
package whoami

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Server answers on one TCP and one UDP socket of the same address.
type Server struct {
	Name string
	tcp  net.Listener
	udp  net.PacketConn
}

// Listen opens addr ("0.0.0.0:8080") for TCP and UDP.
func Listen(name, addr string) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenPacket("udp", l.Addr().String())
	if err != nil {
		l.Close()
		return nil, err
	}
	return &Server{Name: name, tcp: l, udp: pc}, nil
}

// Addr is the TCP listen address.
func (s *Server) Addr() net.Addr { return s.tcp.Addr() }

// Serve answers until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		s.tcp.Close()
		s.udp.Close()
	}()
	go s.serveUDP()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go s.serveTCP(c)
	}
}

// Report is what whoami says about a connection.
func (s *Server) Report(remote net.Addr) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Hostname: %s\n", s.Name)
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() {
			fmt.Fprintf(&b, "IP: %s\n", ipn.IP)
		}
	}
	fmt.Fprintf(&b, "RemoteAddr: %s\n", remote)
	return b.String()
}

// httpSniff is how long a TCP connection may stay silent before it is
// treated as raw TCP and greeted.
const httpSniff = 150 * time.Millisecond

func (s *Server) serveTCP(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(httpSniff))
	first, err := r.ReadString('\n')
	c.SetReadDeadline(time.Time{})
	if err == nil && isHTTPRequestLine(first) {
		s.serveHTTP(c, r, first)
		return
	}
	// Raw TCP: greet, then echo, so a long-lived connection can check
	// that data still flows both ways.
	if _, err := io.WriteString(c, s.Report(c.RemoteAddr())); err != nil {
		return
	}
	if first != "" {
		if _, err := io.WriteString(c, first); err != nil {
			return
		}
	}
	var ne net.Error
	if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
		return
	}
	io.Copy(c, r)
}

func isHTTPRequestLine(l string) bool {
	f := strings.Fields(l)
	return len(f) == 3 && strings.HasPrefix(f[2], "HTTP/1.")
}

func (s *Server) serveHTTP(c net.Conn, r *bufio.Reader, requestLine string) {
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if strings.TrimSpace(l) == "" {
			break
		}
	}
	body := s.Report(c.RemoteAddr()) + requestLine
	fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
}

func (s *Server) serveUDP() {
	buf := make([]byte, 2048)
	for {
		_, from, err := s.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		s.udp.WriteTo([]byte(s.Report(from)), from)
	}
}

// Hostname extracts the Hostname line of a report.
func Hostname(report string) string { return field(report, "Hostname") }

func field(report, name string) string {
	for _, l := range strings.Split(report, "\n") {
		if v, ok := strings.CutPrefix(l, name+": "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Answer is what a whoami server said: who it is and where it saw the
// request come from.
type Answer struct {
	Hostname string
	// Remote is the client's address:port as the server saw it: after
	// whatever translation the path made.
	Remote string
}

// RemoteIP is the address part of Remote.
func (a Answer) RemoteIP() string {
	h, _, err := net.SplitHostPort(a.Remote)
	if err != nil {
		return a.Remote
	}
	return h
}

// ParseAnswer reads a report.
func ParseAnswer(report string) (Answer, error) {
	a := Answer{Hostname: Hostname(report), Remote: field(report, "RemoteAddr")}
	if a.Hostname == "" || a.Remote == "" {
		return a, fmt.Errorf("not a whoami answer: %q", report)
	}
	return a, nil
}

// Ask asks the whoami server at addr who it is, over HTTP ("tcp") or UDP,
// and returns its name.
func Ask(proto, addr string, timeout time.Duration) (string, error) {
	a, err := AskAnswer(proto, addr, timeout)
	return a.Hostname, err
}

// AskAnswer asks the whoami server at addr who it is and whom it sees,
// over HTTP ("tcp") or UDP.
func AskAnswer(proto, addr string, timeout time.Duration) (Answer, error) {
	return AskAnswerFrom(netip.Addr{}, proto, addr, timeout)
}

// AskAnswerFrom is AskAnswer from a given local address (when valid), for
// a host with several.
func AskAnswerFrom(local netip.Addr, proto, addr string, timeout time.Duration) (Answer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var d net.Dialer
	if local.IsValid() {
		if proto == "tcp" {
			d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
		} else {
			d.LocalAddr = &net.UDPAddr{IP: local.AsSlice()}
		}
	}
	c, err := d.DialContext(ctx, proto, addr)
	if err != nil {
		return Answer{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if proto == "tcp" {
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr)
	} else if _, err := c.Write([]byte("who?")); err != nil {
		return Answer{}, err
	}
	buf := make([]byte, 4096)
	var got []byte
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if proto != "tcp" || err != nil {
			if len(got) == 0 && err != nil {
				return Answer{}, err
			}
			break
		}
	}
	if Hostname(string(got)) == "" {
		return Answer{}, fmt.Errorf("no whoami answer from %s", addr)
	}
	return ParseAnswer(string(got))
}
