package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/sluice-lb/sluice/internal/version"
)

// run calls Main with args, as cmd/sluice does, and returns its exit
// status and what it wrote to stdout and stderr. None of the command lines
// below gets as far as touching the kernel: they run unprivileged.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	capture := func(f **os.File) func() string {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		saved := *f
		*f = w
		done := make(chan string)
		go func() {
			b, _ := io.ReadAll(r)
			done <- string(b)
		}()
		return func() string {
			*f = saved
			w.Close()
			s := <-done
			r.Close()
			return s
		}
	}
	out, errOut := capture(&os.Stdout), capture(&os.Stderr)
	code = Main(args)
	stdout, stderr = out(), errOut()
	return code, stdout, stderr
}

// Asking for help is not an error: every command and subcommand prints
// its usage and exits 0, without "flag: help requested".
func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{
		{"-h"}, {"--help"}, {"help"},
		{"agent", "--help"}, {"agent", "-h"},
		{"lb", "--help"}, {"lb", "-h"}, {"lb", "list", "--help"},
		{"stats", "--help"}, {"stats", "-h"},
		{"ct", "--help"}, {"ct", "list", "--help"}, {"ct", "flush", "-h"},
		{"uninstall", "--help"},
		{"whoami", "--help"},
		{"lab", "--help"}, {"lab", "-h"}, {"lab", "up", "--help"}, {"lab", "traffic", "-h"},
		{"version", "--help"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, stdout, stderr := run(t, args...)
			if code != 0 {
				t.Errorf("exit %d, want 0; stderr:\n%s", code, stderr)
			}
			if strings.Contains(stderr, "help requested") {
				t.Errorf("help reported as an error:\n%s", stderr)
			}
			if all := stdout + stderr; !strings.Contains(strings.ToLower(all), "usage") {
				t.Errorf("no usage printed:\nstdout: %s\nstderr: %s", stdout, stderr)
			}
		})
	}
}

// Misuse still fails, with status 2 as before.
func TestUnknownCommandFails(t *testing.T) {
	for _, args := range [][]string{nil, {"frobnicate"}, {"--frobnicate"}} {
		if code, _, stderr := run(t, args...); code != 2 || !strings.Contains(stderr, "usage") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and the usage", args, code, stderr)
		}
	}
}

// -o takes table or json and nothing else: any other format is refused
// with the value and the accepted ones, before anything is read.
func TestOutputFormatIsChecked(t *testing.T) {
	pins := t.TempDir() // never the real pin dir
	for _, args := range [][]string{
		{"lb", "list", "--pin-dir", pins, "-o", "yaml"},
		{"stats", "--pin-dir", pins, "-o", "yaml"},
		{"stats", "--pin-dir", pins, "-o", "JSON"},
		{"version", "-o", "yaml"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, stdout, stderr := run(t, args...)
			if code == 0 {
				t.Errorf("exit 0, want an error; stdout:\n%s", stdout)
			}
			value := args[len(args)-1]
			if !strings.Contains(stderr, `"`+value+`"`) || !strings.Contains(stderr, "table") || !strings.Contains(stderr, "json") {
				t.Errorf("error does not name %q and the accepted formats:\n%s", value, stderr)
			}
			if stdout != "" {
				t.Errorf("printed %q", stdout)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	want := fmt.Sprintf("sluice %s %s %s/%s\n", version.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	for _, args := range [][]string{{"version"}, {"version", "-o", "table"}} {
		code, stdout, stderr := run(t, args...)
		if code != 0 || stdout != want {
			t.Errorf("%q: exit %d, stdout %q, want 0 and %q; stderr:\n%s", args, code, stdout, want, stderr)
		}
	}

	code, stdout, stderr := run(t, "version", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	var got map[string]string
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout)
	}
	wantJSON := map[string]string{"version": version.Version, "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH}
	if fmt.Sprint(got) != fmt.Sprint(wantJSON) {
		t.Errorf("json %v, want %v", got, wantJSON)
	}

	if code, _, stderr := run(t, "version", "extra"); code == 0 {
		t.Errorf("version with an argument: exit 0, want an error (stderr %q)", stderr)
	}
}
