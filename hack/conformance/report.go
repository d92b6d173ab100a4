package main

import (
	"bufio"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// conformanceTest is one entry of `e2e.test --list-conformance-tests`.
type conformanceTest struct {
	TestName    string `json:"testname"`
	CodeName    string `json:"codename"`
	Description string `json:"description"`
	Release     string `json:"release"`
	File        string `json:"file"`
}

// exclusion is a spec that cannot apply to a device, with the reason.
type exclusion struct {
	Spec   string
	Reason string
}

// result is how one spec of the set ended.
type result struct {
	Test    conformanceTest
	Status  string // passed, failed, ..., "excluded", "not run"
	Seconds float64
	Message string // the first line of the failure
	Reason  string // of an exclusion
}

// junit is the subset of ginkgo's JUnit report the document needs.
type junit struct {
	Suites []struct {
		Cases []struct {
			Name    string  `xml:"name,attr"`
			Status  string  `xml:"status,attr"`
			Time    float64 `xml:"time,attr"`
			Failure *struct {
				Message string `xml:"message,attr"`
				Body    string `xml:",chardata"`
			} `xml:"failure"`
			Error *struct {
				Message string `xml:"message,attr"`
				Body    string `xml:",chardata"`
			} `xml:"error"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

func reportCmd(args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	list := fs.String("conformance", "", "output of `e2e.test --list-conformance-tests` (required)")
	focus := fs.String("focus", "", "regular expression selecting the specs of the set (required)")
	skip := fs.String("skip", "", "regular expression removing specs from the set")
	junitPath := fs.String("junit", "", "ginkgo's JUnit report (required)")
	exclPath := fs.String("exclusions", "", "the exclusions file")
	out := fs.String("out", "", "where to write the document (default: stdout)")
	title := fs.String("title", "Conformance of device Nodes", "the document's title")
	header := fs.String("header", "", "a paragraph put below the title (how the run was made)")
	notesPath := fs.String("notes", "", "a Markdown file put after the summary (the failures' diagnosis)")
	onlyRun := fs.Bool("only-run", false, "leave out the specs of the set that did not run (a subset's report)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *list == "" || *focus == "" || *junitPath == "" {
		return errors.New("report needs -conformance, -focus and -junit")
	}
	tests, err := readConformance(*list)
	if err != nil {
		return err
	}
	set, err := selectTests(tests, *focus, *skip)
	if err != nil {
		return err
	}
	var excl []exclusion
	if *exclPath != "" {
		if excl, err = readExclusions(*exclPath); err != nil {
			return err
		}
	}
	cases, err := readJUnit(*junitPath)
	if err != nil {
		return err
	}
	results := join(set, excl, cases)
	if *onlyRun {
		var ran []result
		for _, r := range results {
			if r.Status != "not run" {
				ran = append(ran, r)
			}
		}
		results = ran
	}
	w := io.Writer(os.Stdout)
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return fmt.Errorf("creating report: %w", err)
		}
		defer f.Close()
		w = f
	}
	var notes []byte
	if *notesPath != "" {
		if notes, err = os.ReadFile(*notesPath); err != nil {
			return fmt.Errorf("reading notes: %w", err)
		}
	}
	bw := bufio.NewWriter(w)
	writeReport(bw, *title, *header, results, excl, notes)
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	c := count(results)
	fmt.Fprintf(os.Stderr, "conformance: %d specs: %d passed, %d failed, %d excluded, %d not run\n",
		len(results), c["passed"], c["failed"], c["excluded"], c["not run"])
	return nil
}

func readConformance(path string) ([]conformanceTest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading conformance list: %w", err)
	}
	var tests []conformanceTest
	if err := yaml.Unmarshal(b, &tests); err != nil {
		return nil, fmt.Errorf("parsing conformance list %s: %w", path, err)
	}
	return tests, nil
}

func selectTests(tests []conformanceTest, focus, skip string) ([]conformanceTest, error) {
	f, err := regexp.Compile(focus)
	if err != nil {
		return nil, fmt.Errorf("focus: %w", err)
	}
	var s *regexp.Regexp
	if skip != "" {
		if s, err = regexp.Compile(skip); err != nil {
			return nil, fmt.Errorf("skip: %w", err)
		}
	}
	var set []conformanceTest
	for _, t := range tests {
		if f.MatchString(t.CodeName) && (s == nil || !s.MatchString(t.CodeName)) {
			set = append(set, t)
		}
	}
	sort.Slice(set, func(i, j int) bool { return set[i].CodeName < set[j].CodeName })
	return set, nil
}

// readExclusions reads lines "<spec text> | <reason>"; blank lines and
// lines starting with # are ignored. Every exclusion needs a reason.
func readExclusions(path string) ([]exclusion, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading exclusions: %w", err)
	}
	defer f.Close()
	var excl []exclusion
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		spec, reason, ok := strings.Cut(line, " | ")
		if !ok || strings.TrimSpace(reason) == "" {
			return nil, fmt.Errorf("%s:%d: want \"<spec> | <reason>\"", path, n)
		}
		excl = append(excl, exclusion{Spec: strings.TrimSpace(spec), Reason: strings.TrimSpace(reason)})
	}
	return excl, sc.Err()
}

// caseResult is a JUnit test case reduced to what the report shows.
type caseResult struct {
	Status  string
	Seconds float64
	Message string
}

// readJUnit maps the normalised name of every spec in the report to its result.
func readJUnit(path string) (map[string]caseResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading junit report: %w", err)
	}
	var j junit
	if err := xml.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("parsing junit report %s: %w", path, err)
	}
	cases := map[string]caseResult{}
	for _, s := range j.Suites {
		for _, c := range s.Cases {
			r := caseResult{Status: c.Status, Seconds: c.Time}
			switch {
			case c.Failure != nil:
				r.Message = firstLine(c.Failure.Message, c.Failure.Body)
			case c.Error != nil:
				r.Message = firstLine(c.Error.Message, c.Error.Body)
			}
			cases[normalise(c.Name)] = r
		}
	}
	return cases, nil
}

var brackets = regexp.MustCompile(`\[[^\]]*\]`)

// normalise drops every [tag] (ginkgo's leaf type, the spec's tags in
// whatever order, the label list JUnit appends) and extra spaces, so that
// a JUnit name and a conformance codename of one spec compare equal.
func normalise(name string) string {
	return strings.Join(strings.Fields(brackets.ReplaceAllString(name, " ")), " ")
}

func firstLine(msgs ...string) string {
	for _, m := range msgs {
		for _, l := range strings.Split(m, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				if len(l) > 300 {
					l = l[:300] + "…"
				}
				return l
			}
		}
	}
	return ""
}

func join(set []conformanceTest, excl []exclusion, cases map[string]caseResult) []result {
	reasons := map[string]string{}
	for _, e := range excl {
		reasons[normalise(e.Spec)] = e.Reason
	}
	var rs []result
	for _, t := range set {
		key := normalise(t.CodeName)
		r := result{Test: t, Status: "not run"}
		if c, ok := cases[key]; ok && c.Status != "skipped" {
			r.Status, r.Seconds, r.Message = c.Status, c.Seconds, c.Message
		} else if ok && c.Message != "" {
			r.Message = c.Message
		}
		if reason, ok := reasons[key]; ok {
			r.Reason = reason
			if r.Status == "not run" {
				r.Status = "excluded"
			}
		}
		rs = append(rs, r)
	}
	return rs
}

func count(rs []result) map[string]int {
	c := map[string]int{}
	for _, r := range rs {
		switch r.Status {
		case "passed", "excluded", "not run":
			c[r.Status]++
		default: // failed, panicked, timedout, interrupted, aborted
			c["failed"]++
		}
	}
	return c
}

func writeReport(w io.Writer, title, header string, rs []result, excl []exclusion, notes []byte) {
	c := count(rs)
	fmt.Fprintf(w, "# %s\n\n", title)
	fmt.Fprintf(w, "Written by `hack/conformance.sh` on %s from its JUnit report; do not edit.\n\n",
		time.Now().UTC().Format("2006-01-02"))
	if header != "" {
		fmt.Fprintf(w, "%s\n\n", header)
	}
	applicable := len(rs) - c["excluded"]
	pct := 0.0
	if applicable > 0 {
		pct = 100 * float64(c["passed"]) / float64(applicable)
	}
	fmt.Fprintf(w, "| specs in the set | excluded | applicable | passed | failed | not run |\n|---|---|---|---|---|---|\n")
	fmt.Fprintf(w, "| %d | %d | %d | %d (%.0f %%) | %d | %d |\n\n", len(rs), c["excluded"], applicable, c["passed"], pct, c["failed"], c["not run"])

	if len(notes) > 0 {
		fmt.Fprintf(w, "%s\n", strings.TrimSpace(string(notes)))
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "## Exclusions\n\nSpecs that cannot apply to a device, from `hack/conformance/exclusions.txt`. ")
	fmt.Fprintf(w, "They are not run (`--with-excluded` runs them anyway).\n\n")
	if len(excl) == 0 {
		fmt.Fprintf(w, "None.\n\n")
	} else {
		fmt.Fprintf(w, "| spec | why it cannot apply to a device |\n|---|---|\n")
		for _, e := range excl {
			fmt.Fprintf(w, "| %s | %s |\n", cell(e.Spec), cell(e.Reason))
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintf(w, "## Every spec\n\n| spec | result | seconds | failure |\n|---|---|---|---|\n")
	for _, r := range rs {
		status := r.Status
		switch status {
		case "passed":
			status = "pass"
		case "excluded", "not run":
		default:
			status = "**FAIL** (" + status + ")"
		}
		secs := ""
		if r.Seconds > 0 {
			secs = fmt.Sprintf("%.0f", r.Seconds)
		}
		note := r.Message
		if r.Reason != "" {
			note = "excluded: " + r.Reason
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", cell(r.Test.CodeName), status, secs, cell(note))
	}
}

// cell escapes s for a Markdown table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}
