package e2e

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

var metricsAddr = regexp.MustCompile(`msg="metrics serving" addr=(127\.0\.0\.1:[0-9]+)`)

// scrape fetches url and parses it with Prometheus's text parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return fams
}

// sample is one series: a family name and labels, written
// name{k="v",...} for failure messages.
type sample struct {
	name   string
	labels map[string]string
}

func (s sample) String() string {
	var ls []string
	for k, v := range s.labels {
		ls = append(ls, fmt.Sprintf("%s=%q", k, v))
	}
	return s.name + "{" + strings.Join(ls, ",") + "}"
}

// value returns the series' value: a counter's or gauge's value, or a
// histogram's count when name ends in _count. ok is false when the series
// does not exist.
func value(fams map[string]*dto.MetricFamily, s sample) (v float64, ok bool) {
	name, count := s.name, false
	if f := fams[name]; f == nil && strings.HasSuffix(name, "_count") {
		name, count = strings.TrimSuffix(name, "_count"), true
	}
	f := fams[name]
	if f == nil {
		return 0, false
	}
metrics:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range s.labels {
			if labels[k] != v {
				continue metrics
			}
		}
		switch {
		case count:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// wantValues fails for each series whose value is not the one wanted.
func wantValues(t *testing.T, fams map[string]*dto.MetricFamily, want map[string]float64) {
	t.Helper()
	for key, w := range want {
		s := parseSample(t, key)
		got, ok := value(fams, s)
		if !ok {
			t.Errorf("%s: no such series", s)
		} else if got != w {
			t.Errorf("%s = %v, want %v", s, got, w)
		}
	}
}

// parseSample reads `name` or `name{k="v",k2="v2"}`.
func parseSample(t *testing.T, key string) sample {
	t.Helper()
	name, rest, found := strings.Cut(key, "{")
	s := sample{name: name, labels: map[string]string{}}
	if !found {
		return s
	}
	for kv := range strings.SplitSeq(strings.TrimSuffix(rest, "}"), ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("bad series %q", key)
		}
		s.labels[k] = strings.Trim(v, `"`)
	}
	return s
}

// TestMetricsAreExact scrapes a real registryd's metrics endpoint after a
// known sequence of operations and checks the counters and gauges to the
// unit, then again after the lease ended and a collection took both
// objects.
func TestMetricsAreExact(t *testing.T) {
	d := startDaemon(t, "--metrics-addr=127.0.0.1:0")
	m := metricsAddr.FindStringSubmatch(d.Stderr())
	if m == nil {
		t.Fatalf("registryd did not log its metrics address:\n%s", d.Stderr())
	}
	base := "http://" + m[1]
	c := dial(t, d.Addr)

	l := openLease(t, c, &registryv1.OpenLease{ClientName: "e2e-metrics"})
	a := put(t, c, make([]byte, 100), l.ID())
	b := put(t, c, make([]byte, 200), l.ID())
	wantResolves(t, c, a, make([]byte, 100))
	wantResolves(t, c, a, make([]byte, 100))
	wantResolves(t, c, b, make([]byte, 200))
	_, err := c.reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: "obj_bad"})
	wantStatus(t, err, codes.InvalidArgument, "HANDLE_MALFORMED")
	// The last character is MAC: a handle this registry never issued.
	forged := a[:len(a)-1] + map[bool]string{true: "B", false: "A"}[a[len(a)-1] == 'A']
	_, err = c.reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: forged})
	wantStatus(t, err, codes.NotFound, "HANDLE_UNKNOWN")

	before := scrape(t, base+"/metrics")
	wantValues(t, before, map[string]float64{
		`registry_objects{state="pinned"}`:                                             2,
		`registry_objects{state="weak"}`:                                               0,
		`registry_objects{state="lingering"}`:                                          0,
		`registry_object_bytes{state="pinned"}`:                                        300,
		`registry_object_bytes{state="weak"}`:                                          0,
		`registry_pins`:                                                                2,
		`registry_leases{state="attached"}`:                                            1,
		`registry_leases{state="detached"}`:                                            0,
		`registry_puts_total`:                                                          2,
		`registry_resolves_total{outcome="hit"}`:                                       3,
		`registry_resolves_total{outcome="malformed"}`:                                 1,
		`registry_resolves_total{outcome="unknown"}`:                                   1,
		`registry_resolves_total{outcome="collected"}`:                                 0,
		`registry_resolves_total{outcome="deleted"}`:                                   0,
		`registry_collected_objects_total`:                                             0,
		`registry_collected_bytes_total`:                                               0,
		`registry_deleted_objects_total`:                                               0,
		`registry_watchers`:                                                            0,
		`grpc_server_handled_total{grpc_method="Put",grpc_code="OK"}`:                  2,
		`grpc_server_handled_total{grpc_method="Resolve",grpc_code="OK"}`:              3,
		`grpc_server_handled_total{grpc_method="Resolve",grpc_code="InvalidArgument"}`: 1,
		`grpc_server_handled_total{grpc_method="Resolve",grpc_code="NotFound"}`:        1,
		`grpc_server_started_total{grpc_method="Lease"}`:                               1,
		`grpc_server_handled_total{grpc_method="Lease",grpc_code="OK"}`:                0,
	})
	gcBefore, _ := value(before, sample{name: "registry_gc_cycles_total"})

	l.send(t, &registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Unpin{Unpin: &registryv1.UnpinHandles{Handles: []string{b}}}})
	l.in.mustNext(t)
	l.close(t, 1)
	if got := collect(t, c).GetCollectedObjects(); got != 2 {
		// The runtime may have taken them before the forced collection;
		// the counters below are exact either way.
		t.Logf("the forced collection freed %d objects", got)
	}
	wantGone(t, c, a, codes.NotFound, "OBJECT_COLLECTED")

	// The Lease stream's end is counted after its last message is sent.
	var after map[string]*dto.MetricFamily
	poll(t, waitTimeout, "the lease stream counted as handled", func() bool {
		after = scrape(t, base+"/metrics")
		v, _ := value(after, parseSample(t, `grpc_server_handled_total{grpc_method="Lease",grpc_code="OK"}`))
		return v == 1
	})
	wantValues(t, after, map[string]float64{
		`registry_objects{state="pinned"}`:                                      0,
		`registry_objects{state="weak"}`:                                        0,
		`registry_object_bytes{state="pinned"}`:                                 0,
		`registry_object_bytes{state="weak"}`:                                   0,
		`registry_pins`:                                                         0,
		`registry_leases{state="attached"}`:                                     0,
		`registry_leases{state="detached"}`:                                     0,
		`registry_puts_total`:                                                   2,
		`registry_resolves_total{outcome="hit"}`:                                3,
		`registry_resolves_total{outcome="collected"}`:                          1,
		`registry_collected_objects_total`:                                      2,
		`registry_collected_bytes_total`:                                        300,
		`registry_collection_delay_seconds_count`:                               2,
		`grpc_server_handled_total{grpc_method="Collect",grpc_code="OK"}`:       1,
		`grpc_server_handled_total{grpc_method="Resolve",grpc_code="NotFound"}`: 2,
		`grpc_server_handled_total{grpc_method="Stat",grpc_code="NotFound"}`:    1,
	})
	if gc, _ := value(after, sample{name: "registry_gc_cycles_total"}); gc < gcBefore+1 {
		t.Errorf("registry_gc_cycles_total went from %v to %v across a forced collection", gcBefore, gc)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "process_cpu_seconds_total", "grpc_server_handling_seconds", "target_info"} {
		if after[name] == nil {
			t.Errorf("no %s on /metrics", name)
		}
	}

	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %s, want 200", resp.Status)
	}
}

// TestPprofOnlyWhenAsked: --pprof serves Go's profiles on the metrics
// listener, and without it nothing is there.
func TestPprofOnlyWhenAsked(t *testing.T) {
	for _, on := range []bool{true, false} {
		args := []string{"--metrics-addr=127.0.0.1:0"}
		if on {
			args = append(args, "--pprof")
		}
		d := startDaemon(t, args...)
		m := metricsAddr.FindStringSubmatch(d.Stderr())
		if m == nil {
			t.Fatalf("registryd did not log its metrics address:\n%s", d.Stderr())
		}
		for path, want := range map[string]string{
			"/debug/pprof/goroutine?debug=1": "goroutine profile: total",
			"/debug/pprof/heap?debug=1":      "heap profile:",
			"/debug/pprof/cmdline":           "registryd",
		} {
			resp, err := http.Get("http://" + m[1] + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case on && (resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want)):
				t.Errorf("--pprof: GET %s: %s, %.80q; want 200 with %q", path, resp.Status, body, want)
			case !on && resp.StatusCode != http.StatusNotFound:
				t.Errorf("without --pprof: GET %s: %s, want 404 Not Found", path, resp.Status)
			}
		}
		// The metrics are still there beside it.
		if resp, err := http.Get("http://" + m[1] + "/metrics"); err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("/metrics: %v, %v", resp, err)
		} else {
			resp.Body.Close()
		}
	}
}
