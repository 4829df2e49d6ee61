// Package deploy holds the configuration of the stack that
// docker-compose.yaml, at the repository root, runs beside registryd: an
// OpenTelemetry Collector (otel-collector.yaml), Jaeger v2 (jaeger.yaml) and
// Prometheus (prometheus.yml). README.md here says how to run it and what to
// open in the browser.
//
// The package has no code of its own. Its tests check, with no Docker engine,
// that the pieces fit together: they load docker-compose.yaml with the
// Compose Specification's Go loader, find the file each service reads as its
// configuration, and check that every referenced file exists, that every
// image is pinned, that traces go from registryd through the collector to
// Jaeger, that Prometheus scrapes registryd's metrics port, and that the
// Dockerfile builds a static binary into a non-root image.
package deploy
