package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// serve listens on --addr, joins --cluster if set, listens on
// --metrics-addr if set, and serves until SIGINT or SIGTERM; then it
// leaves the cluster and shuts down gracefully within --shutdown-timeout.
// A second signal kills at once.
func (d *daemon) serve() error {
	cfg, log := d.cfg, d.log
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another registryd running? choose another --addr)", cfg.addr, err)
	}
	if d.view != nil {
		// Listen, join, serve: the node is registered only once it can
		// answer, and one refused never serves.
		if err := d.join(ctx, lis); err != nil {
			lis.Close()
			return err
		}
		defer d.leave()
	}
	serveErr := make(chan error, 2)
	var metrics *http.Server
	if cfg.metricsAddr != "" {
		mlis, err := lc.Listen(ctx, "tcp", cfg.metricsAddr)
		if err != nil {
			lis.Close()
			return fmt.Errorf("listen on %s: %w (choose another --metrics-addr)", cfg.metricsAddr, err)
		}
		handler, paths := d.tel.Handler(d.srv.Healthy), "/metrics /healthz"
		if cfg.pprof {
			handler, paths = withPprof(handler), paths+" /debug/pprof/"
			enableContentionProfiles()
		}
		metrics = &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          d.tel.ErrorLogger(),
		}
		scheme := "http"
		if d.tls != nil {
			// The gRPC listener's certificate, reloaded with it; no client
			// certificate asked for, so that a scraper needs only the CA.
			metrics.TLSConfig = d.tls.HTTPConfig()
			mlis = tls.NewListener(mlis, metrics.TLSConfig)
			scheme = "https"
		} else if !isLoopback(mlis.Addr()) {
			log.Warn("metrics and healthz are served over plain HTTP, with no authentication, on a non-loopback address: anyone who reaches it reads them (set --tls-cert, or a 127.0.0.1 --metrics-addr)", "addr", mlis.Addr().String())
		}
		go func() {
			if err := metrics.Serve(mlis); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("metrics: %w", err)
			}
		}()
		log.Info("metrics serving", "addr", mlis.Addr().String(), "scheme", scheme, "paths", paths)
	}
	if d.tls != nil {
		defer d.tls.Close()
	}
	// SIGHUP re-reads the certificates and the auth file at once; it is also re-read when it
	// changes, every --reload-interval.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reloadCtx, stopReload := context.WithCancel(ctx)
	defer stopReload()
	if d.auth != nil {
		go d.auth.Watch(reloadCtx, cfg.reloadInterval)
	}
	if d.policy != nil {
		defer d.policy.Close()
	}
	go func() { serveErr <- d.srv.Serve(lis) }()
	attrs := []any{"addr", lis.Addr().String(), "epoch", d.codec.Epoch(), "node", d.codec.Node(), "tracing", d.tel.Tracing(),
		"tls", d.tls != nil, "mtls", d.tls != nil && d.tls.MutualTLS(), "auth", d.auth != nil}
	if d.member != nil {
		attrs = append(attrs, "cluster", cfg.cluster, "advertise_addr", d.advertise)
	}
	log.Info("registryd serving", attrs...)

	for wait := true; wait; {
		select {
		case err := <-serveErr:
			return fmt.Errorf("serve: %w", err)
		case <-hup:
			d.reload()
		case <-ctx.Done():
			wait = false
		}
	}
	stop() // a second signal kills at once
	log.Info("shutting down", "timeout", cfg.shutdownTimeout)
	// Leave first: peers and clients stop sending here while the calls
	// already here drain.
	d.leave()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	if err := d.srv.Shutdown(sctx); err != nil {
		log.Warn("calls still in flight were cut", "err", err)
	}
	if metrics != nil {
		// After the gRPC server: a scrape during the drain still works,
		// and /healthz has said 503 since it began.
		if err := metrics.Shutdown(sctx); err != nil {
			log.Warn("metrics connections still open were cut", "err", err)
		}
	}
	log.Info("stopped")
	return nil
}

// isLoopback reports whether addr listens on a loopback address only.
func isLoopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
