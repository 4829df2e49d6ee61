package e2e

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// startMetricsDaemon starts registryd with its metrics endpoint and
// returns a client to it and the endpoint's base URL.
func startMetricsDaemon(t *testing.T) (*client, string) {
	t.Helper()
	d := startDaemon(t, "--metrics-addr=127.0.0.1:0")
	m := metricsAddr.FindStringSubmatch(d.Stderr())
	if m == nil {
		t.Fatalf("registryd did not log its metrics address:\n%s", d.Stderr())
	}
	return dial(t, d.Addr), "http://" + m[1]
}

// scrapeText fetches url's exposition as text.
func scrapeText(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v\n%s", url, resp.Status, err, b)
	}
	return b
}

// TestMetricsPassPromlint runs the linter of 'promtool check metrics'
// over a real registryd's /metrics, after calls of every kind have made
// their series: every name, type, unit and help text must pass it.
func TestMetricsPassPromlint(t *testing.T) {
	t.Parallel()
	c, base := startMetricsDaemon(t)
	l := openLease(t, c, &registryv1.OpenLease{ClientName: "e2e-lint"})
	h := put(t, c, []byte("linted"), l.ID())
	wantResolves(t, c, h, []byte("linted"))
	l.close(t, 1)
	collect(t, c)

	problems, err := promlint.New(bytes.NewReader(scrapeText(t, base+"/metrics"))).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// TestMetricsHandlingTimeResolvesSubMillisecond: the gRPC handling-time
// histogram has buckets below a millisecond, where a Resolve's latency
// lies, so that its quantiles can be read.
func TestMetricsHandlingTimeResolvesSubMillisecond(t *testing.T) {
	t.Parallel()
	c, base := startMetricsDaemon(t)
	l := openLease(t, c, &registryv1.OpenLease{ClientName: "e2e-timed"})
	h := put(t, c, []byte("timed"), l.ID())
	wantResolves(t, c, h, []byte("timed"))

	const name = "grpc_server_handling_seconds"
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(scrapeText(t, base+"/metrics")))
	if err != nil {
		t.Fatal(err)
	}
	fam := fams[name]
	if fam == nil || fam.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("no histogram %s in /metrics", name)
	}
	var bounds []float64
	for _, m := range fam.GetMetric() {
		if labelOf(m, "grpc_method") != "Resolve" {
			continue
		}
		for _, b := range m.GetHistogram().GetBucket() {
			bounds = append(bounds, b.GetUpperBound())
		}
		break
	}
	if len(bounds) == 0 {
		t.Fatalf("%s has no buckets for Resolve", name)
	}
	var below int
	for _, b := range bounds {
		if b < 0.001 {
			below++
		}
	}
	// Three or more, so that 100 µs and 500 µs can be told apart.
	if below < 3 {
		t.Errorf("%s has %d buckets below 1ms (%s), want at least 3", name, below, strconv.Quote(fmtBounds(bounds)))
	}
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func fmtBounds(bs []float64) string {
	var out []byte
	for i, b := range bs {
		if i > 0 {
			out = append(out, ' ')
		}
		out = strconv.AppendFloat(out, b, 'g', -1, 64)
	}
	return string(out)
}
