// Command registryd serves the object registry over gRPC: objects held
// strongly while a lease pins them and weakly otherwise, reclaimed by the
// Go garbage collector when nobody pins them.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.opentelemetry.io/otel"

	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/server"
	"github.com/weakref/registry/internal/telemetry"
	"github.com/weakref/registry/internal/version"
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

func run(args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	log := newLogger(cfg)
	key, random, err := loadKey(cfg)
	if err != nil {
		return err
	}
	if random {
		log.Warn("no key configured: using a random one, so handles from this run mean nothing to the next (set --key-file or REGISTRYD_KEY)")
	}
	codec, err := handle.NewCodec(handle.Config{Key: key, Node: uint16(cfg.node)})
	if err != nil {
		return err
	}
	// The exporter reports what it cannot send through this handler;
	// otherwise the OpenTelemetry SDK would print to the standard logger.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("telemetry", "err", err) }))
	tel, err := telemetry.New(context.Background(), telemetry.Config{
		ServiceName:    "registryd",
		ServiceVersion: version.String(),
		Disabled:       !bool(cfg.telemetry),
		Metrics:        cfg.metricsAddr != "",
		Logger:         log,
	})
	if err != nil {
		return err
	}
	defer func() {
		// Last: the spans of the calls that shutdown ended go out too.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(ctx); err != nil {
			log.Warn("telemetry did not flush", "err", err)
		}
	}()
	reg := registry.New(registry.Config{
		Codec:          codec,
		MaxObjectBytes: int64(cfg.maxObjectBytes),
		MaxPinnedBytes: int64(cfg.maxPinnedBytes),
		SoftCacheBytes: int64(cfg.softCacheBytes),
		LeakGCCycles:   cfg.leakGCCycles,
		Tombstones:     cfg.tombstones,
		WatchBuffer:    cfg.watchBuffer,
		WatchHistory:   cmp.Or(cfg.watchHistory, -1), // the registry reads 0 as its default, the flag as none
		Observe:        tel.RegistryObserver(),
	})
	leases := lease.New(lease.Config{
		Codec:           codec,
		Registry:        reg,
		MaxGrace:        cfg.maxGrace,
		MaxLeases:       cfg.maxLeases,
		MaxPinsPerLease: cfg.maxPinsPerLease,
		Observe:         tel.LeaseObserver(),
	})
	if err := tel.Instrument(reg, leases); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	srv := server.New(server.Config{
		Registry:  reg,
		Leases:    leases,
		Logger:    log,
		Telemetry: tel,
		Limits: server.Limits{
			MaxObjectBytes:       int64(cfg.maxObjectBytes),
			MaxMessageBytes:      int(cfg.maxMessageBytes),
			MaxPinnedBytes:       int64(cfg.maxPinnedBytes),
			MaxPinsPerLease:      cfg.maxPinsPerLease,
			MaxLeases:            cfg.maxLeases,
			MaxConcurrentStreams: uint32(cfg.maxStreams),
			MaxGrace:             cfg.maxGrace,
			MaxLinger:            cfg.maxLinger,
		},
		KeepaliveTime:    cfg.keepaliveTime,
		KeepaliveTimeout: cfg.keepaliveTimeout,

		StreamStallTimeout: cfg.streamStall,
	})

	lis, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another registryd running? choose another --addr)", cfg.addr, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	serveErr := make(chan error, 2)
	var metrics *http.Server
	if cfg.metricsAddr != "" {
		mlis, err := net.Listen("tcp", cfg.metricsAddr)
		if err != nil {
			lis.Close()
			return fmt.Errorf("listen on %s: %w (choose another --metrics-addr)", cfg.metricsAddr, err)
		}
		metrics = &http.Server{
			Handler:           tel.Handler(srv.Healthy),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          tel.ErrorLogger(),
		}
		go func() {
			if err := metrics.Serve(mlis); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("metrics: %w", err)
			}
		}()
		log.Info("metrics serving", "addr", mlis.Addr().String(), "paths", "/metrics /healthz")
	}
	go func() { serveErr <- srv.Serve(lis) }()
	log.Info("registryd serving", "addr", lis.Addr().String(), "epoch", codec.Epoch(), "node", codec.Node(), "tracing", tel.Tracing())

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	stop() // a second signal kills at once
	log.Info("shutting down", "timeout", cfg.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("calls still in flight were cut", "err", err)
	}
	if metrics != nil {
		// After the gRPC server: a scrape during the drain still works,
		// and /healthz has said 503 since it began.
		metrics.Shutdown(sctx)
	}
	log.Info("stopped")
	return nil
}

func newLogger(cfg *config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.logLevel}
	if cfg.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
