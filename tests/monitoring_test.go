package tests

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/internal/counters"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/metrics"
	"github.com/erofsd/erofsd/ondemand"
	"github.com/erofsd/erofsd/ondemand/cachefiles"
	"github.com/erofsd/erofsd/ondemand/fanotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// exported scrapes a registry built the way erofsd builds it, with both
// front ends present, and returns the series names and label names it
// serves.
func exported(t *testing.T) (names, labels map[string]bool) {
	t.Helper()
	reg := prometheus.NewRegistry()
	metrics.NewHistograms(reg)
	core := ondemand.NewRegistry()
	defer core.Close()
	metrics.Register(reg, "test", core, &cachefiles.Server{}, &fanotify.Server{}, &blobstore.Stats{},
		counters.Func{Descs: []*counters.Desc{ondemand.Mounts}, Emit: func(emit func(counters.Value)) { counters.Emitter(emit).Add(ondemand.Mounts, 0) }})
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names, labels = map[string]bool{}, map[string]bool{"job": true, "instance": true}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	labelRE := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		names[name] = true
		for _, m := range labelRE.FindAllStringSubmatch(rest, -1) {
			labels[m[1]] = true
		}
	}
	return names, labels
}

var (
	quotedRE  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	rangeRE   = regexp.MustCompile(`\[[^\]]*\]`)
	groupRE   = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	matcherRE = regexp.MustCompile(`\{([^}]*)\}`)
	identRE   = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	keywords  = []string{"sum", "min", "max", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "absent",
		"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "topk", "bottomk"}
)

// promqlNames returns the metric names and label names a PromQL
// expression uses (enough PromQL for the expressions shipped here).
func promqlNames(expr string) (names, labels []string) {
	for _, m := range groupRE.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(m[2], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
	}
	expr = groupRE.ReplaceAllString(expr, " ")
	for _, m := range matcherRE.FindAllStringSubmatch(quotedRE.ReplaceAllString(expr, `""`), -1) {
		for _, kv := range strings.Split(m[1], ",") {
			if k := strings.TrimSpace(strings.FieldsFunc(kv, func(r rune) bool { return strings.ContainsRune("=!~", r) })[0]); k != "" {
				labels = append(labels, k)
			}
		}
	}
	expr = matcherRE.ReplaceAllString(quotedRE.ReplaceAllString(expr, `""`), " ")
	expr = rangeRE.ReplaceAllString(expr, " ")
	for _, loc := range identRE.FindAllStringIndex(expr, -1) {
		id := expr[loc[0]:loc[1]]
		after := strings.TrimLeft(expr[loc[1]:], " \t\n")
		if slices.Contains(keywords, id) || strings.HasPrefix(after, "(") || (loc[0] > 0 && expr[loc[0]-1] == '$') {
			continue
		}
		names = append(names, id)
	}
	return names, labels
}

// ruleExprs returns the expr: values of a Prometheus rule file (single
// line or a block scalar).
func ruleExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	var out []string
	for i := 0; i < len(lines); i++ {
		trimmed := strings.TrimSpace(lines[i])
		v, ok := strings.CutPrefix(trimmed, "expr:")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if v != "|" && v != ">" && v != ">-" && v != "|-" {
			out = append(out, v)
			continue
		}
		indent := len(lines[i]) - len(strings.TrimLeft(lines[i], " "))
		var block []string
		for i+1 < len(lines) {
			next := lines[i+1]
			if strings.TrimSpace(next) != "" && len(next)-len(strings.TrimLeft(next, " ")) <= indent {
				break
			}
			block = append(block, strings.TrimSpace(next))
			i++
		}
		out = append(out, strings.Join(block, " "))
	}
	return out
}

type dashboard struct {
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Query any `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../deploy/grafana/erofsd-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var out []string
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q has an empty query", p.Title)
			}
			out = append(out, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(string); ok && strings.HasPrefix(q, "label_values(") {
			// label_values(metric{...}, label): the metric part.
			out = append(out, strings.TrimSuffix(strings.SplitN(strings.TrimPrefix(q, "label_values("), ",", 2)[0], ")"))
		}
	}
	if len(out) < 10 {
		t.Fatalf("dashboard has %d queries", len(out))
	}
	return out
}

// TestMonitoringNamesExported checks that every metric and label the
// alert rules and the Grafana dashboard use is one erofsd's metrics
// package exports, so they cannot drift apart.
func TestMonitoringNamesExported(t *testing.T) {
	names, labels := exported(t)
	names["up"] = true // Prometheus' own, per target
	exprs := map[string][]string{
		"deploy/prometheus/erofsd-rules.yml":   ruleExprs(t, "../deploy/prometheus/erofsd-rules.yml"),
		"deploy/grafana/erofsd-dashboard.json": dashboardExprs(t),
	}
	if len(exprs["deploy/prometheus/erofsd-rules.yml"]) < 5 {
		t.Fatalf("rules: %d expressions found", len(exprs["deploy/prometheus/erofsd-rules.yml"]))
	}
	used := map[string]bool{}
	for file, list := range exprs {
		for _, e := range list {
			ns, ls := promqlNames(e)
			if len(ns) == 0 {
				t.Errorf("%s: no metric in %q", file, e)
			}
			for _, n := range ns {
				used[n] = true
				if !names[n] {
					t.Errorf("%s: %q uses %s, which erofsd does not export", file, e, n)
				}
			}
			for _, l := range ls {
				if !labels[l] && l != "le" && l != "__name__" {
					t.Errorf("%s: %q uses label %s, which no erofsd series has", file, e, l)
				}
			}
		}
	}
	// The extraction itself must work: these are certainly used.
	for _, n := range []string{"erofsd_kernel_requests_total", "erofsd_read_duration_seconds_bucket", "erofsd_chunk_digest_failures_total", "up"} {
		if !used[n] {
			t.Errorf("%s not found in the rules or the dashboard", n)
		}
	}
}

func TestPromqlNames(t *testing.T) {
	ns, ls := promqlNames(`histogram_quantile(0.99, sum by (frontend, le) (rate(erofsd_read_duration_seconds_bucket{job="$job", instance=~"a{b}"}[$__rate_interval]))) > 1 and up == 0`)
	if !slices.Equal(ns, []string{"erofsd_read_duration_seconds_bucket", "up"}) || !slices.Equal(ls, []string{"frontend", "le", "job", "instance"}) {
		t.Fatalf("names %q, labels %q", ns, ls)
	}
}

// TestPromtool validates the Prometheus files with promtool (Debian's
// prometheus package; scripts/install-deps.sh installs the tool alone):
// the example config and the rules check, the rules' unit tests pass
// (each alert fires on a series that should trip it), and every
// dashboard query parses as PromQL.
func TestPromtool(t *testing.T) {
	require.Host(t, require.Tool("promtool", "prometheus (scripts/install-deps.sh unpacks it)"))
	promtool, _ := exec.LookPath("promtool")
	dir := "../deploy/prometheus"
	for _, args := range [][]string{
		{"check", "config", "prometheus.yml"},
		{"check", "rules", "erofsd-rules.yml"},
		{"test", "rules", "erofsd-rules.test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// Dashboard queries as recording rules, Grafana's variables filled in.
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	fill := strings.NewReplacer("$__rate_interval", "5m", "$job", "erofsd", "$instance", ".*")
	for i, e := range dashboardExprs(t) {
		q, _ := json.Marshal(fill.Replace(e))
		b.WriteString("      - record: dashboard:query" + string(rune('a'+i/26)) + string(rune('a'+i%26)) + "\n        expr: " + string(q) + "\n")
	}
	path := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	os.WriteFile(path, []byte(b.String()), 0o644)
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Errorf("dashboard queries: %v\n%s", err, out)
	}
}
