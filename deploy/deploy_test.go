package deploy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"go/version"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/distribution/reference"
	"sigs.k8s.io/yaml"
)

// repoRoot is where docker-compose.yaml, the Dockerfile and go.mod live;
// tests run in this package's directory.
const repoRoot = ".."

// The compose services the stack is made of.
const (
	svcRegistryd  = "registryd"
	svcCollector  = "otel-collector"
	svcJaeger     = "jaeger"
	svcPrometheus = "prometheus"
)

// Ports of the stack that its documentation promises.
const (
	otlpGRPCPort   = "4317"
	jaegerUIPort   = "16686"
	prometheusPort = "9090"
)

// loadProject loads docker-compose.yaml with the Compose Specification's
// own loader, as docker compose does: schema validation, normalisation,
// consistency checks, paths resolved against the repository root.
func loadProject(t *testing.T, more ...cli.ProjectOptionsFn) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(repoRoot, "docker-compose.yaml")},
		append([]cli.ProjectOptionsFn{
			cli.WithWorkingDirectory(repoRoot),
			cli.WithName("registry-test"),
			// An empty environment and no .env file: the project is what
			// the file says, whatever this machine's environment holds,
			// and a ${VAR:-default} takes its default as on a fresh
			// machine.
			cli.WithEnv(nil),
		}, more...)...,
	)
	if err != nil {
		t.Fatalf("compose options: %v", err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("loading docker-compose.yaml: %v", err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("docker-compose.yaml: %v", err)
	}
	return s
}

// env returns a service's environment variable, as compose resolved it.
func env(s types.ServiceConfig, key string) (string, bool) {
	v, ok := s.Environment[key]
	if !ok || v == nil {
		return "", false
	}
	return *v, true
}

// rel names a path for a failure message, relative to the repository.
func rel(path string) string {
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		return path
	}
	if r, err := filepath.Rel(root, path); err == nil {
		return r
	}
	return path
}

func TestComposeDefinesTheStack(t *testing.T) {
	p := loadProject(t)
	for _, name := range []string{svcRegistryd, svcCollector, svcJaeger, svcPrometheus} {
		if _, err := p.GetService(name); err != nil {
			t.Errorf("docker-compose.yaml: %v", err)
		}
	}
}

// versionTag is a release tag: 1.2.3 or v1.2.3, with an optional suffix.
var versionTag = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+([-.][0-9A-Za-z.-]+)?$`)

// pinned reports why image may change under the same name, or nil when it
// cannot: it names a digest, or a release tag. A missing tag means latest.
func pinned(image string, needVersion bool) error {
	ref, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return fmt.Errorf("image %q: %w", image, err)
	}
	if _, ok := ref.(reference.Digested); ok {
		return nil
	}
	tagged, ok := ref.(reference.Tagged)
	if !ok {
		return fmt.Errorf("image %q has no tag, so it means :latest; pin a release tag", image)
	}
	switch tag := tagged.Tag(); {
	case tag == "latest":
		return fmt.Errorf("image %q floats; pin a release tag", image)
	case needVersion && !versionTag.MatchString(tag):
		return fmt.Errorf("image %q: tag %q is not a release version such as 1.2.3; pin one", image, tag)
	}
	return nil
}

func TestComposeImagesArePinned(t *testing.T) {
	p := loadProject(t)
	// The images each service must run; jaegertracing/all-in-one is Jaeger
	// v1, at end of life since 2025-12-31.
	tests := []struct {
		service, repo string
	}{
		{svcCollector, "otel/opentelemetry-collector-contrib"},
		{svcJaeger, "jaegertracing/jaeger"},
		{svcPrometheus, "prom/prometheus"},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			s := service(t, p, tt.service)
			ref, err := reference.ParseNormalizedNamed(s.Image)
			if err != nil {
				t.Fatalf("image %q: %v", s.Image, err)
			}
			if got := reference.FamiliarName(ref); got != tt.repo {
				t.Errorf("image %q is %s, want %s", s.Image, got, tt.repo)
			}
		})
	}
	// Every service, these and any added later: built here, or pinned.
	for name, s := range p.Services {
		if s.Build != nil && s.Image == "" {
			continue // compose names the image it builds
		}
		if err := pinned(s.Image, s.Build == nil); err != nil {
			t.Errorf("service %s: %v", name, err)
		}
	}
}

// TestComposeReferencedFilesExist checks every file the project reads from
// the repository: bind mounts, configs, secrets, env files, the build
// context and its Dockerfile. They must exist and lie inside the
// repository, so that the stack runs from any checkout.
func TestComposeReferencedFilesExist(t *testing.T) {
	p := loadProject(t)
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	// kind is "file", "dir", or "" for either.
	check := func(what, path, kind string) {
		t.Helper()
		if !filepath.IsAbs(path) {
			path = filepath.Join(root, path)
		}
		if r, err := filepath.Rel(root, path); err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
			t.Errorf("%s %s, outside the repository", what, path)
			return
		}
		fi, err := os.Stat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			t.Errorf("%s %s, which does not exist", what, rel(path))
		case err != nil:
			t.Errorf("%s %s: %v", what, rel(path), err)
		case kind == "dir" && !fi.IsDir():
			t.Errorf("%s %s, not a directory", what, rel(path))
		case kind == "file" && fi.IsDir():
			t.Errorf("%s %s, a directory, want a file", what, rel(path))
		}
	}
	files := 0
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeBind {
				// Docker creates a missing source as an empty directory,
				// and the service starts without its configuration.
				check("service "+name+" mounts", v.Source, "")
				files++
			}
		}
		for _, f := range s.EnvFiles {
			if f.Required {
				check("service "+name+" env_file", f.Path, "file")
			}
		}
		if b := s.Build; b != nil {
			check("service "+name+" build context", b.Context, "dir")
			if b.DockerfileInline == "" {
				df := b.Dockerfile
				if df == "" {
					df = "Dockerfile"
				}
				if !filepath.IsAbs(df) {
					df = filepath.Join(b.Context, df)
				}
				check("service "+name+" Dockerfile", df, "file")
			}
		}
	}
	for name, c := range p.Configs {
		if c.File != "" {
			check("config "+name, c.File, "file")
		}
	}
	for name, s := range p.Secrets {
		if s.File != "" {
			check("secret "+name, s.File, "file")
		}
	}
	if files == 0 {
		t.Error("no service mounts a file from the repository; the configs in deploy/ go unused")
	}
}

// configFile returns the repository file that a service's process reads as
// its configuration: the file mounted at the path its command gives to flag,
// or at def when the command does not name one.
func configFile(t *testing.T, p *types.Project, s types.ServiceConfig, flag, def string) string {
	t.Helper()
	target := def
	cmd := s.Command
	for i, arg := range cmd {
		if v, ok := strings.CutPrefix(arg, flag+"="); ok {
			target = v
		} else if arg == flag && i+1 < len(cmd) {
			target = cmd[i+1]
		}
	}
	// The collector takes a URI: file:/path is a path.
	target = strings.TrimPrefix(target, "file:")
	if target == "" {
		t.Fatalf("service %s names no configuration file with %s", s.Name, flag)
	}
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind && v.Target == target {
			return v.Source
		}
	}
	for _, c := range s.Configs {
		if c.Target == target {
			if pc, ok := p.Configs[c.Source]; ok && pc.File != "" {
				return pc.File
			}
		}
	}
	t.Fatalf("service %s reads its configuration from %s, but no file of the repository is mounted there", s.Name, target)
	return ""
}

// otelConfig is the part of an OpenTelemetry Collector configuration, or of
// Jaeger v2's (a collector build), that says where data goes.
type otelConfig struct {
	Receivers  map[string]any `json:"receivers"`
	Processors map[string]any `json:"processors"`
	Exporters  map[string]any `json:"exporters"`
	Connectors map[string]any `json:"connectors"`
	Extensions map[string]any `json:"extensions"`
	Service    struct {
		Extensions []string `json:"extensions"`
		Pipelines  map[string]struct {
			Receivers  []string `json:"receivers"`
			Processors []string `json:"processors"`
			Exporters  []string `json:"exporters"`
		} `json:"pipelines"`
	} `json:"service"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s does not exist", rel(path))
	} else if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", rel(path), err)
	}
}

func readOtelConfig(t *testing.T, path string) *otelConfig {
	t.Helper()
	// The collector refuses unknown top-level keys, a misspelt section
	// among them.
	var top map[string]any
	readYAML(t, path, &top)
	for k := range top {
		switch k {
		case "receivers", "processors", "exporters", "connectors", "extensions", "service":
		default:
			t.Fatalf("%s: unknown top-level key %q", rel(path), k)
		}
	}
	var c otelConfig
	readYAML(t, path, &c)
	if len(c.Service.Pipelines) == 0 {
		t.Fatalf("%s: no service.pipelines", rel(path))
	}
	return &c
}

// undefined lists the components the service section uses but does not
// define; the collector refuses to start with any.
func (c *otelConfig) undefined() []string {
	var missing []string
	has := func(m map[string]any, id string) bool { _, ok := m[id]; return ok }
	for _, id := range c.Service.Extensions {
		if !has(c.Extensions, id) {
			missing = append(missing, "extension "+id)
		}
	}
	for name, pl := range c.Service.Pipelines {
		if len(pl.Receivers) == 0 || len(pl.Exporters) == 0 {
			missing = append(missing, "pipeline "+name+" needs receivers and exporters")
		}
		for _, id := range pl.Receivers {
			if !has(c.Receivers, id) && !has(c.Connectors, id) {
				missing = append(missing, "pipeline "+name+": receiver "+id)
			}
		}
		for _, id := range pl.Processors {
			if !has(c.Processors, id) {
				missing = append(missing, "pipeline "+name+": processor "+id)
			}
		}
		for _, id := range pl.Exporters {
			if !has(c.Exporters, id) && !has(c.Connectors, id) {
				missing = append(missing, "pipeline "+name+": exporter "+id)
			}
		}
	}
	slices.Sort(missing)
	return missing
}

// lookup walks nested YAML maps.
func lookup(v any, path ...string) (any, bool) {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

func lookupString(v any, path ...string) string {
	x, _ := lookup(v, path...)
	s, _ := x.(string)
	return s
}

// componentType is the type part of a component ID such as otlp_grpc/jaeger.
func componentType(id string) string {
	typ, _, _ := strings.Cut(id, "/")
	return typ
}

// splitEndpoint takes host:port, or a URL (http://host:port, dns:///host:port).
func splitEndpoint(endpoint string) (host, port string, err error) {
	hostport := endpoint
	if strings.Contains(endpoint, "://") {
		u, err := url.Parse(endpoint)
		if err != nil {
			return "", "", err
		}
		hostport = u.Host
		if hostport == "" { // dns:///host:port
			hostport = strings.TrimPrefix(u.Path, "/")
		}
	}
	return net.SplitHostPort(hostport)
}

// listensBeyondLoopback checks a server endpoint that other containers must
// reach: a loopback address, or none (the collector's default is
// localhost), would refuse them.
func listensBeyondLoopback(what, endpoint string) error {
	if endpoint == "" {
		return fmt.Errorf("%s has no endpoint; the default listens on localhost only, out of other containers' reach: set 0.0.0.0:port", what)
	}
	host, _, err := splitEndpoint(endpoint)
	if err != nil {
		return fmt.Errorf("%s endpoint %q: %w", what, endpoint, err)
	}
	if host == "localhost" || net.ParseIP(host).IsLoopback() {
		return fmt.Errorf("%s listens on %s, loopback, out of other containers' reach: use 0.0.0.0", what, endpoint)
	}
	return nil
}

// otlpGRPCReceiverPort checks that a traces pipeline receives OTLP over gRPC
// from other containers, and returns the port.
func otlpGRPCReceiverPort(t *testing.T, file string, c *otelConfig) string {
	t.Helper()
	traces, ok := c.Service.Pipelines["traces"]
	if !ok {
		t.Fatalf("%s: no traces pipeline", file)
	}
	if !slices.Contains(traces.Receivers, "otlp") {
		t.Fatalf("%s: traces pipeline receivers %v, want otlp among them", file, traces.Receivers)
	}
	if _, ok := lookup(c.Receivers["otlp"], "protocols", "grpc"); !ok {
		t.Fatalf("%s: receiver otlp has no protocols.grpc", file)
	}
	endpoint := lookupString(c.Receivers["otlp"], "protocols", "grpc", "endpoint")
	if err := listensBeyondLoopback(file+": receiver otlp grpc", endpoint); err != nil {
		t.Fatal(err)
	}
	_, port, _ := splitEndpoint(endpoint)
	return port
}

func TestCollectorConfigDefinesEveryComponent(t *testing.T) {
	p := loadProject(t)
	path := configFile(t, p, service(t, p, svcCollector), "--config", "/etc/otelcol-contrib/config.yaml")
	if missing := readOtelConfig(t, path).undefined(); len(missing) > 0 {
		t.Errorf("%s uses components it does not define:\n\t%s", rel(path), strings.Join(missing, "\n\t"))
	}
}

func TestCollectorRoutesTracesToJaeger(t *testing.T) {
	p := loadProject(t)
	path := configFile(t, p, service(t, p, svcCollector), "--config", "/etc/otelcol-contrib/config.yaml")
	file := rel(path)
	c := readOtelConfig(t, path)
	otlpGRPCReceiverPort(t, file, c)

	// One of the traces exporters sends OTLP to the jaeger service.
	var (
		toJaeger []string
		problems []string
	)
	for _, id := range c.Service.Pipelines["traces"].Exporters {
		cfg := c.Exporters[id]
		var wantPort string
		switch componentType(id) {
		case "otlp_grpc", "otlp": // otlp: the name before collector v0.144
			wantPort = otlpGRPCPort
		case "otlp_http", "otlphttp":
			wantPort = "4318"
		default:
			continue
		}
		endpoint := lookupString(cfg, "endpoint")
		host, port, err := splitEndpoint(endpoint)
		if err != nil || host != svcJaeger {
			continue
		}
		toJaeger = append(toJaeger, id)
		if port != wantPort {
			problems = append(problems, fmt.Sprintf("exporter %s sends to %s, want port %s, where Jaeger takes OTLP", id, endpoint, wantPort))
		}
		// Jaeger serves plaintext here: without tls.insecure (or an
		// http:// endpoint) the exporter tries TLS and every export fails.
		insecure, _ := lookup(cfg, "tls", "insecure")
		if insecure != true && !strings.HasPrefix(endpoint, "http://") {
			problems = append(problems, fmt.Sprintf("exporter %s: set tls.insecure: true, Jaeger serves OTLP without TLS here", id))
		}
	}
	if len(toJaeger) == 0 {
		t.Fatalf("%s: no exporter of the traces pipeline %v sends OTLP to %s:%s",
			file, c.Service.Pipelines["traces"].Exporters, svcJaeger, otlpGRPCPort)
	}
	for _, pr := range problems {
		t.Errorf("%s: %s", file, pr)
	}
}

func TestRegistrydExportsTracesToCollector(t *testing.T) {
	p := loadProject(t)
	reg := service(t, p, svcRegistryd)
	path := configFile(t, p, service(t, p, svcCollector), "--config", "/etc/otelcol-contrib/config.yaml")
	port := otlpGRPCReceiverPort(t, rel(path), readOtelConfig(t, path))

	endpoint, ok := env(reg, "OTEL_EXPORTER_OTLP_ENDPOINT")
	if !ok {
		t.Fatal("registryd has no OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatalf("OTEL_EXPORTER_OTLP_ENDPOINT=%q: %v", endpoint, err)
	}
	if u.Scheme != "http" {
		t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT=%q: want http://, the collector serves plaintext OTLP here", endpoint)
	}
	if u.Hostname() != svcCollector || u.Port() != port {
		t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT=%q, want http://%s:%s, where the collector receives OTLP gRPC", endpoint, svcCollector, port)
	}
	if name, _ := env(reg, "OTEL_SERVICE_NAME"); name == "" {
		t.Error("registryd has no OTEL_SERVICE_NAME; its traces would be filed under unknown_service")
	}
}

func TestJaegerReceivesOTLPAndServesUI(t *testing.T) {
	p := loadProject(t)
	jaeger := service(t, p, svcJaeger)
	// The image's default configuration would do too, but a mounted file
	// keeps the ports this stack relies on written down.
	path := configFile(t, p, jaeger, "--config", "")
	file := rel(path)
	c := readOtelConfig(t, path)
	if missing := c.undefined(); len(missing) > 0 {
		t.Errorf("%s uses components it does not define:\n\t%s", file, strings.Join(missing, "\n\t"))
	}
	if port := otlpGRPCReceiverPort(t, file, c); port != otlpGRPCPort {
		t.Errorf("%s: Jaeger receives OTLP gRPC on %s, but the collector sends to %s", file, port, otlpGRPCPort)
	}

	// Traces go to a storage backend that the query service (the UI) reads.
	backends, _ := lookup(c.Extensions["jaeger_storage"], "backends")
	bm, _ := backends.(map[string]any)
	stored := ""
	for _, id := range c.Service.Pipelines["traces"].Exporters {
		if componentType(id) == "jaeger_storage_exporter" {
			stored = lookupString(c.Exporters[id], "trace_storage")
		}
	}
	if _, ok := bm[stored]; !ok {
		t.Errorf("%s: the traces pipeline stores to %q, not a jaeger_storage backend (%v)", file, stored, slices.Sorted(maps.Keys(bm)))
	}
	if queried := lookupString(c.Extensions["jaeger_query"], "storage", "traces"); queried != stored {
		t.Errorf("%s: jaeger_query reads traces from %q, but the pipeline stores them in %q", file, queried, stored)
	}

	ui := lookupString(c.Extensions["jaeger_query"], "http", "endpoint")
	if err := listensBeyondLoopback(file+": jaeger_query http", ui); ui != "" && err != nil {
		t.Error(err)
	}
	if _, port, _ := splitEndpoint(ui); ui != "" && port != jaegerUIPort {
		t.Errorf("%s: the UI is on %s, want port %s", file, ui, jaegerUIPort)
	}
	if !publishes(jaeger, jaegerUIPort) {
		t.Errorf("service jaeger does not publish the UI port %s", jaegerUIPort)
	}
}

// publishes reports whether a service publishes a container port on the
// host under the same number, as the documentation promises.
func publishes(s types.ServiceConfig, port string) bool {
	for _, p := range s.Ports {
		if fmt.Sprint(p.Target) == port && p.Published == port {
			return true
		}
	}
	return false
}

// metricsPort is the port of registryd's metrics listener, from
// REGISTRYD_METRICS_ADDR in docker-compose.yaml.
func metricsPort(t *testing.T, p *types.Project) string {
	t.Helper()
	addr, ok := env(service(t, p, svcRegistryd), "REGISTRYD_METRICS_ADDR")
	if !ok || addr == "" {
		t.Fatal("registryd has no REGISTRYD_METRICS_ADDR: its metrics listener is off, nothing for Prometheus to scrape")
	}
	if err := listensBeyondLoopback("REGISTRYD_METRICS_ADDR", addr); err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("REGISTRYD_METRICS_ADDR=%q: %v", addr, err)
	}
	return port
}

type promConfig struct {
	ScrapeConfigs []struct {
		JobName       string `json:"job_name"`
		MetricsPath   string `json:"metrics_path"`
		Scheme        string `json:"scheme"`
		StaticConfigs []struct {
			Targets []string `json:"targets"`
		} `json:"static_configs"`
	} `json:"scrape_configs"`
}

func TestPrometheusScrapesRegistrydMetricsPort(t *testing.T) {
	p := loadProject(t)
	port := metricsPort(t, p)
	prom := service(t, p, svcPrometheus)
	path := configFile(t, p, prom, "--config.file", "/etc/prometheus/prometheus.yml")
	var c promConfig
	readYAML(t, path, &c)

	want := net.JoinHostPort(svcRegistryd, port)
	var seen []string
	found := false
	for _, sc := range c.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				seen = append(seen, target)
				host, _, _ := net.SplitHostPort(target)
				if host != svcRegistryd {
					continue
				}
				if target != want {
					t.Errorf("%s: job %s scrapes %s, but registryd serves metrics on %s (REGISTRYD_METRICS_ADDR)", rel(path), sc.JobName, target, want)
					continue
				}
				found = true
				if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
					t.Errorf("%s: job %s scrapes path %s, registryd serves /metrics", rel(path), sc.JobName, sc.MetricsPath)
				}
				if sc.Scheme != "" && sc.Scheme != "http" {
					t.Errorf("%s: job %s scrapes over %s, registryd serves plain http", rel(path), sc.JobName, sc.Scheme)
				}
			}
		}
	}
	if !found {
		t.Errorf("%s: no scrape job targets %s; targets are %v", rel(path), want, seen)
	}
	if !publishes(prom, prometheusPort) {
		t.Errorf("service prometheus does not publish its UI port %s", prometheusPort)
	}
}

func TestRegistrydService(t *testing.T) {
	p := loadProject(t)
	reg := service(t, p, svcRegistryd)
	if reg.Build == nil {
		t.Error("registryd has no build section; it should build the repository's Dockerfile")
	}
	addr, ok := env(reg, "REGISTRYD_ADDR")
	if !ok {
		t.Error("registryd has no REGISTRYD_ADDR; set it to 0.0.0.0:7600, so that the published port reaches it")
	} else if err := listensBeyondLoopback("REGISTRYD_ADDR", addr); err != nil {
		t.Error(err)
	} else if _, port, _ := net.SplitHostPort(addr); !publishes(reg, port) {
		t.Errorf("registryd serves gRPC on %s but does not publish port %s", addr, port)
	}
	if port := metricsPort(t, p); !publishes(reg, port) {
		t.Errorf("registryd serves metrics on port %s but does not publish it", port)
	}
}

// TestComposeStartOrder checks the depends_on edges that start each service
// after the one it sends to: none of the images has a shell or curl for a
// healthcheck, so order is what compose can give.
func TestComposeStartOrder(t *testing.T) {
	p := loadProject(t)
	tests := []struct{ service, after string }{
		{svcRegistryd, svcCollector},
		{svcCollector, svcJaeger},
		{svcPrometheus, svcRegistryd},
	}
	for _, tt := range tests {
		s := service(t, p, tt.service)
		if _, ok := s.DependsOn[tt.after]; !ok {
			t.Errorf("service %s does not depend_on %s", tt.service, tt.after)
		}
	}
}

// TestPortsAreDocumented checks that each port the stack publishes on the
// host has a row in the ports table of deploy/README.md.
func TestPortsAreDocumented(t *testing.T) {
	p := loadProject(t)
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for name, s := range p.Services {
		for _, port := range s.Ports {
			row := regexp.MustCompile(`(?m)^\|\s*` + "`?" + regexp.QuoteMeta(port.Published) + "`?" + `\s*\|`)
			if !row.MatchString(readme) {
				t.Errorf("service %s publishes port %s, which deploy/README.md's ports table does not list", name, port.Published)
			}
		}
	}
}

// The Dockerfile is checked by a small line-based reader rather than
// BuildKit's parser (github.com/moby/buildkit/frontend/dockerfile/parser):
// its module's current release requires go 1.26.8, which would raise this
// module's go directive for a test, and brings a 245-line go.mod and
// protobuf for reading a dozen instructions.

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int    // where it starts, from 1
	cmd  string // upper case: FROM, RUN, ...
	args string
}

// stage is one FROM and the instructions up to the next.
type stage struct {
	from  instruction
	image string // the base image, global ARGs expanded
	name  string // its AS name, if any
	insts []instruction
}

func (s stage) find(cmd string) []instruction {
	var out []instruction
	for _, in := range s.insts {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

func parseDockerfile(src string) ([]stage, error) {
	var (
		insts   []instruction
		pending strings.Builder
		start   int
		// Parser directives (# key=value) count only above everything else.
		directives = regexp.MustCompile(`^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$`)
		atTop      = true
	)
	sc := bufio.NewScanner(strings.NewReader(src))
	for n := 1; sc.Scan(); n++ {
		trimmed := strings.TrimSpace(sc.Text())
		if m := directives.FindStringSubmatch(trimmed); atTop && m != nil {
			if strings.EqualFold(m[1], "escape") && m[2] != `\` {
				return nil, fmt.Errorf("line %d: this reader knows only the default escape character \\", n)
			}
			continue
		}
		atTop = false
		if strings.HasPrefix(trimmed, "#") {
			continue // comments, and comment lines inside a continuation
		}
		if trimmed == "" && pending.Len() == 0 {
			continue
		}
		if pending.Len() == 0 {
			start = n
		}
		if body, ok := strings.CutSuffix(trimmed, `\`); ok {
			pending.WriteString(body + " ")
			continue
		}
		pending.WriteString(trimmed)
		cmd, args, _ := strings.Cut(strings.TrimSpace(pending.String()), " ")
		insts = append(insts, instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		pending.Reset()
	}
	if pending.Len() > 0 {
		return nil, fmt.Errorf("line %d: continuation runs off the end of the file", start)
	}

	globals := map[string]string{}
	var stages []stage
	for _, in := range insts {
		switch {
		case in.cmd == "ARG" && len(stages) == 0:
			for _, a := range strings.Fields(in.args) {
				k, v, _ := strings.Cut(a, "=")
				globals[k] = strings.Trim(v, `"`)
			}
		case in.cmd == "FROM":
			var words []string
			for _, w := range strings.Fields(in.args) {
				if !strings.HasPrefix(w, "--") { // --platform=...
					words = append(words, w)
				}
			}
			if len(words) == 0 {
				return nil, fmt.Errorf("line %d: FROM without an image", in.line)
			}
			st := stage{from: in, image: os.Expand(words[0], func(k string) string { return globals[k] })}
			if len(words) == 3 && strings.EqualFold(words[1], "AS") {
				st.name = words[2]
			}
			stages = append(stages, st)
		case len(stages) == 0:
			return nil, fmt.Errorf("line %d: %s before the first FROM", in.line, in.cmd)
		default:
			stages[len(stages)-1].insts = append(stages[len(stages)-1].insts, in)
		}
	}
	return stages, nil
}

// goDirective is the go line of go.mod, as a go/version string ("go1.26.0").
func goDirective(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "go "); ok {
			return "go" + strings.TrimSpace(v)
		}
	}
	t.Fatal("go.mod has no go directive")
	return ""
}

func TestDockerfile(t *testing.T) {
	p := loadProject(t)
	reg := service(t, p, svcRegistryd)
	if reg.Build == nil {
		t.Fatal("registryd has no build section")
	}
	path := reg.Build.Dockerfile
	if !filepath.IsAbs(path) {
		path = filepath.Join(reg.Build.Context, path)
	}
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	stages, err := parseDockerfile(string(src))
	if err != nil {
		t.Fatalf("%s: %v", rel(path), err)
	}
	if len(stages) < 2 {
		t.Fatalf("%s has %d stage(s); want a multi-stage build, the toolchain left out of the final image", rel(path), len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]
	runs := func(s stage) string {
		var all []string
		for _, in := range s.insts {
			if in.cmd == "RUN" || in.cmd == "ENV" {
				all = append(all, in.args)
			}
		}
		return strings.Join(all, "\n")
	}
	metrics := metricsPort(t, p)

	tests := []struct {
		name  string
		check func() error
	}{
		{"build stage uses a pinned Go at least go.mod's", func() error {
			if err := pinned(build.image, true); err != nil {
				return err
			}
			ref, _ := reference.ParseNormalizedNamed(build.image)
			if reference.FamiliarName(ref) != "golang" {
				return fmt.Errorf("build stage is FROM %s, want the golang image", build.image)
			}
			tag := ref.(reference.Tagged).Tag()
			goVer := "go" + strings.SplitN(tag, "-", 2)[0]
			if want := goDirective(t); !version.IsValid(goVer) || version.Compare(goVer, want) < 0 {
				return fmt.Errorf("build stage is FROM %s, but go.mod says %s", build.image, want)
			}
			return nil
		}},
		{"build is static", func() error {
			if !regexp.MustCompile(`\bCGO_ENABLED=0\b`).MatchString(runs(build)) {
				return fmt.Errorf("the build stage does not set CGO_ENABLED=0; the binary would need libc, which the final image lacks")
			}
			return nil
		}},
		{"build is trimmed", func() error {
			if !strings.Contains(runs(build), "-trimpath") {
				return fmt.Errorf("go build without -trimpath records the builder's paths in the binary")
			}
			return nil
		}},
		{"build makes registryd and registryctl", func() error {
			for _, cmd := range []string{"./cmd/registryd", "./cmd/registryctl"} {
				if !strings.Contains(runs(build), cmd) {
					return fmt.Errorf("the build stage does not build %s", cmd)
				}
			}
			return nil
		}},
		{"final image is pinned", func() error {
			// Distroless publishes no version tags; an explicit,
			// non-latest tag or a digest is as pinned as it gets.
			return pinned(final.image, false)
		}},
		{"final image copies the build's output", func() error {
			earlier := map[string]bool{}
			for i, st := range stages[:len(stages)-1] {
				earlier[fmt.Sprint(i)] = true
				if st.name != "" {
					earlier[st.name] = true
				}
			}
			copied := false
			for _, in := range final.find("COPY") {
				for _, f := range strings.Fields(in.args) {
					from, ok := strings.CutPrefix(f, "--from=")
					if !ok {
						continue
					}
					// A --from naming no stage names an image to pull.
					if !earlier[from] {
						return fmt.Errorf("line %d: COPY --from=%s names no earlier stage", in.line, from)
					}
					copied = true
				}
			}
			if !copied {
				return fmt.Errorf("the final stage copies nothing from the build stage")
			}
			return nil
		}},
		{"final image runs as non-root", func() error {
			users := final.find("USER")
			if len(users) == 0 {
				return fmt.Errorf("the final stage sets no USER; it would run as its base image's default")
			}
			user, _, _ := strings.Cut(users[len(users)-1].args, ":")
			if user == "root" || user == "0" || user == "" {
				return fmt.Errorf("line %d: USER %s is root", users[len(users)-1].line, users[len(users)-1].args)
			}
			return nil
		}},
		{"final image exposes gRPC and metrics", func() error {
			var ports []string
			for _, in := range final.find("EXPOSE") {
				for _, f := range strings.Fields(in.args) {
					ports = append(ports, strings.TrimSuffix(f, "/tcp"))
				}
			}
			for _, want := range []string{"7600", metrics} {
				if !slices.Contains(ports, want) {
					return fmt.Errorf("the final stage exposes %v, want %s among them", ports, want)
				}
			}
			return nil
		}},
		{"final image runs registryd", func() error {
			eps := final.find("ENTRYPOINT")
			if len(eps) == 0 || !strings.Contains(eps[len(eps)-1].args, "registryd") {
				return fmt.Errorf("the final stage's ENTRYPOINT does not run registryd")
			}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.check(); err != nil {
				t.Errorf("%s: %v", rel(path), err)
			}
		})
	}
}

// TestDockerignoreKeepsSourcesIn checks that .dockerignore leaves out what
// the build does not need, and keeps what it does.
func TestDockerignoreKeepsSourcesIn(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for line := range strings.Lines(string(b)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, strings.TrimSuffix(strings.TrimPrefix(line, "/"), "/"))
		}
	}
	ignored := func(path string) bool {
		for _, pat := range patterns {
			if strings.HasPrefix(pat, "!") {
				continue
			}
			// ** matches any number of directories, none included.
			for _, pat := range []string{pat, strings.TrimPrefix(pat, "**/")} {
				if ok, _ := filepath.Match(pat, path); ok {
					return true
				}
			}
		}
		return false
	}
	for _, path := range []string{".git", "registry.test"} {
		if !ignored(path) {
			t.Errorf(".dockerignore does not leave out %s", path)
		}
	}
	for _, path := range []string{"go.mod", "go.sum", "cmd", "internal", "gen"} {
		if ignored(path) {
			t.Errorf(".dockerignore leaves out %s, which the build needs", path)
		}
	}
}
