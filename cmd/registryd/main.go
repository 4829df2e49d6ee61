// Command registryd serves the object registry over gRPC: objects held
// strongly while a lease pins them and weakly otherwise, reclaimed by the
// Go garbage collector when nobody pins them.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0) // -h: the usage went to stdout
		}
		fmt.Fprintln(os.Stderr, "registryd:", err)
		os.Exit(1)
	}
}

// run loads the configuration, builds the daemon (wiring.go) and serves
// until a signal (serve.go).
func run(args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	log := newLogger(cfg, os.Stderr)
	d, err := build(cfg, log)
	if err != nil {
		return err
	}
	defer d.flushTelemetry() // last: the spans of the calls that shutdown ended go out too
	return d.serve()
}

// newLogger returns the logger of cfg's level and format, writing to w
// (stderr; a file in the benchmarks).
func newLogger(cfg *config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.logLevel}
	if cfg.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
