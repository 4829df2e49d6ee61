package e2e

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

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
