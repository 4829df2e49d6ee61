// Command registryd serves the object registry over gRPC: objects held
// strongly while a lease pins them and weakly otherwise, reclaimed by the
// Go garbage collector when nobody pins them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/server"
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
	reg := registry.New(registry.Config{
		Codec:          codec,
		MaxObjectBytes: int64(cfg.maxObjectBytes),
		MaxPinnedBytes: int64(cfg.maxPinnedBytes),
		Tombstones:     cfg.tombstones,
		WatchBuffer:    cfg.watchBuffer,
	})
	leases := lease.New(lease.Config{
		Codec:           codec,
		Registry:        reg,
		MaxGrace:        cfg.maxGrace,
		MaxLeases:       cfg.maxLeases,
		MaxPinsPerLease: cfg.maxPinsPerLease,
	})
	srv := server.New(server.Config{
		Registry: reg,
		Leases:   leases,
		Logger:   log,
		Limits: server.Limits{
			MaxObjectBytes:       int64(cfg.maxObjectBytes),
			MaxMessageBytes:      int(cfg.maxMessageBytes),
			MaxPinnedBytes:       int64(cfg.maxPinnedBytes),
			MaxPinsPerLease:      cfg.maxPinsPerLease,
			MaxLeases:            cfg.maxLeases,
			MaxConcurrentStreams: uint32(cfg.maxStreams),
			MaxGrace:             cfg.maxGrace,
		},
		KeepaliveTime:    cfg.keepaliveTime,
		KeepaliveTimeout: cfg.keepaliveTimeout,
	})

	lis, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another registryd running? choose another --addr)", cfg.addr, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	log.Info("registryd serving", "addr", lis.Addr().String(), "epoch", codec.Epoch(), "node", codec.Node())

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
