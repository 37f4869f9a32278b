// Command e2etable prints the markdown table of the README's wider Service
// e2e run: one row per spec, one column per proxy, from the JUnit reports
// ginkgo wrote for each (hack/cluster/e2e-table.sh).
//
//	e2etable NAME=REPORT.xml [NAME=REPORT.xml ...]
package main

import (
	"encoding/xml"
	"fmt"
	"os"
	"slices"
	"strings"
)

// The part of a ginkgo JUnit report the table needs.
type report struct {
	Suites []struct {
		Cases []struct {
			Name    string    `xml:"name,attr"`
			Status  string    `xml:"status,attr"`
			Skipped *struct{} `xml:"skipped"`
			Failure *struct {
				Message string `xml:"message,attr"`
			} `xml:"failure"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: e2etable NAME=REPORT.xml [NAME=REPORT.xml ...]")
		os.Exit(2)
	}
	var names []string
	results := map[string]map[string]string{} // spec -> proxy -> status
	for _, arg := range os.Args[1:] {
		name, path, ok := strings.Cut(arg, "=")
		if !ok {
			fail(fmt.Errorf("%q: want NAME=REPORT.xml", arg))
		}
		r, err := read(path)
		if err != nil {
			fail(err)
		}
		names = append(names, name)
		for spec, st := range r {
			if results[spec] == nil {
				results[spec] = map[string]string{}
			}
			results[spec][name] = st
		}
	}
	fmt.Print(table(names, results))
}

// table is the markdown table of every spec some report ran (a spec every
// report skipped, one outside the focus, is no row), then each report's
// totals, which count every spec.
func table(names []string, results map[string]map[string]string) string {
	var b strings.Builder
	specs := make([]string, 0, len(results))
	for s := range results {
		specs = append(specs, s)
	}
	slices.Sort(specs)
	fmt.Fprintf(&b, "| spec | %s |\n|---|%s\n", strings.Join(names, " | "), strings.Repeat("---|", len(names)))
	totals := make([]map[string]int, len(names))
	for i := range totals {
		totals[i] = map[string]int{}
	}
	for _, s := range specs {
		row := make([]string, len(names))
		ran := false
		for i, n := range names {
			st := results[s][n]
			if st == "" {
				st = "not run"
			}
			row[i] = st
			totals[i][strings.Fields(st)[0]]++ // "failed (timedout)" is a failure
			ran = ran || st != "skipped"
		}
		if ran {
			fmt.Fprintf(&b, "| %s | %s |\n", s, strings.Join(row, " | "))
		}
	}
	for i, n := range names {
		fmt.Fprintf(&b, "\n%s: %d passed, %d failed, %d skipped", n, totals[i]["passed"], totals[i]["failed"], totals[i]["skipped"])
	}
	b.WriteString("\n")
	return b.String()
}

// read returns the status (passed, failed, skipped) of every spec of a
// report that ran or was skipped, by its text without the "[It] " prefix.
// Suite-level nodes (BeforeSuite and the like) are left out.
func read(path string) (map[string]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r report
	if err := xml.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := map[string]string{}
	for _, s := range r.Suites {
		for _, c := range s.Cases {
			name, ok := strings.CutPrefix(c.Name, "[It] ")
			if !ok {
				continue
			}
			st := c.Status
			switch {
			case st == "pending":
				continue
			case st == "" && c.Failure != nil:
				st = "failed"
			case st == "" && c.Skipped != nil:
				st = "skipped"
			case st == "":
				st = "passed"
			case st == "panicked" || st == "interrupted" || st == "timedout" || st == "aborted":
				st = "failed (" + st + ")"
			}
			out[name] = st
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no spec in the report", path)
	}
	return out, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "e2etable:", err)
	os.Exit(1)
}
