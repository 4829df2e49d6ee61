package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel"
	"google.golang.org/grpc/authz"
	"google.golang.org/grpc/credentials"

	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/cluster"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/membership"
	"github.com/weakref/registry/internal/netaddr"
	"github.com/weakref/registry/internal/observe"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/server"
	"github.com/weakref/registry/internal/telemetry"
	"github.com/weakref/registry/internal/tlsconfig"
	"github.com/weakref/registry/internal/version"
)

// daemon is registryd built from its configuration, not serving yet.
type daemon struct {
	cfg   *config
	log   *slog.Logger
	codec *handle.Codec
	tel   *telemetry.Telemetry
	srv   *server.Server
	// auth is nil when authentication is off; policy, when there is no
	// --authz-policy.
	auth   *auth.Authenticator
	policy *authz.FileWatcherInterceptor
	tls    *tlsconfig.Source // nil: plaintext
	// In a cluster: the view of the peers the codec's answers use, the
	// key's fingerprint, and, once joined, the membership and the address
	// it published. view is nil outside a cluster.
	view      *peerView
	keyID     string
	member    *membership.Membership
	advertise string
}

// build wires the pieces from cfg: the handle codec, telemetry and its
// observer, the registry, the lease manager and the gRPC server. On
// success the caller owes flushTelemetry.
func build(cfg *config, log *slog.Logger) (_ *daemon, err error) {
	key, random, err := loadKey(cfg)
	if err != nil {
		return nil, err
	}
	if random && cfg.cluster != "" {
		return nil, errors.New("--cluster needs the handle key every node of the cluster shares, or each answers HANDLE_UNKNOWN for the others' handles: set --key-file or REGISTRYD_KEY")
	}
	if random {
		log.Warn("no key configured: using a random one, so handles from this run mean nothing to the next (set --key-file or REGISTRYD_KEY)")
	}
	var view *peerView
	var peers server.Peers // nil outside a cluster: not a nil *peerView
	if cfg.cluster != "" {
		view = &peerView{}
		peers = view
	}
	codec, err := handle.NewCodec(handle.Config{Key: key, Node: uint16(cfg.node), Foreign: server.ClusterAnswers(peers)})
	if err != nil {
		return nil, err
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
		return nil, err
	}
	d := &daemon{cfg: cfg, log: log, codec: codec, tel: tel, view: view, keyID: cluster.KeyID(key)}
	defer func() {
		if err != nil {
			d.flushTelemetry()
		}
	}()
	var creds credentials.TransportCredentials
	if cfg.tlsCert != "" {
		d.tls, err = tlsconfig.New(tlsconfig.Config{CertFile: cfg.tlsCert, KeyFile: cfg.tlsKey, ClientCAFile: cfg.tlsClientCA, Refresh: cfg.reloadInterval, Logger: log})
		if err != nil {
			return nil, err
		}
		creds = d.tls.Credentials()
	}
	obs, err := observe.New(tel)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	reg := registry.New(registry.Config{
		Codec:                     codec,
		MaxObjectBytes:            int64(cfg.maxObjectBytes),
		MaxPinnedBytes:            int64(cfg.maxPinnedBytes),
		MaxPinnedBytesPerIdentity: int64(cfg.identityMaxPinnedBytes),
		SoftCacheBytes:            int64(cfg.softCacheBytes),
		LeakGCCycles:              cfg.leakGCCycles,
		CollectMinInterval:        cfg.collectInterval,
		MaxWatchers:               cfg.maxWatchers,
		Tombstones:                cfg.tombstones,
		WatchBuffer:               cfg.watchBuffer,
		WatchHistory:              cmp.Or(cfg.watchHistory, -1), // the registry reads 0 as its default, the flag as none
		Observe:                   obs.Registry(),
		// Every payload the server puts is a request's or an upload
		// chunk's bytes, which protobuf decodes into an allocation of
		// their own and nothing keeps after the call.
		OwnedPayloads: true,
	})
	leases := lease.New(lease.Config{
		Codec:                codec,
		Registry:             reg,
		MaxGrace:             cfg.maxGrace,
		MaxLeases:            cfg.maxLeases,
		MaxPinsPerLease:      cfg.maxPinsPerLease,
		MaxLeasesPerIdentity: cfg.identityMaxLeases,
		Observe:              obs.Lease(),
	})
	if err := obs.Instrument(reg, leases); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if err := d.buildAuth(); err != nil {
		return nil, err
	}
	d.srv = server.New(server.Config{
		Auth:        d.auth,
		AuthzPolicy: d.policy,
		Registry:    reg,
		Leases:      leases,
		Logger:      log,
		LogSlow:     cfg.logSlow,
		Telemetry:   tel,
		Observer:    obs,
		Limits: server.Limits{
			MaxObjectBytes:            int64(cfg.maxObjectBytes),
			MaxMessageBytes:           int(cfg.maxMessageBytes),
			MaxPinnedBytes:            int64(cfg.maxPinnedBytes),
			MaxPinsPerLease:           cfg.maxPinsPerLease,
			MaxLeases:                 cfg.maxLeases,
			MaxWatchers:               cfg.maxWatchers,
			MaxUploadBytes:            int64(cfg.maxUploadBytes),
			MaxConcurrentStreams:      uint32(cfg.maxStreams),
			MaxGrace:                  cfg.maxGrace,
			MaxLinger:                 cfg.maxLinger,
			MaxLeasesPerIdentity:      cfg.identityMaxLeases,
			MaxPinnedBytesPerIdentity: int64(cfg.identityMaxPinnedBytes),
			IdentityMaxUploadBytes:    int64(cfg.identityUploadBytes),
			IdentityMaxStreams:        cfg.identityStreams,
			IdentityRate:              cfg.identityRate,
			IdentityBurst:             cfg.identityBurst,
		},
		KeepaliveTime:      cfg.keepaliveTime,
		KeepaliveTimeout:   cfg.keepaliveTimeout,
		StreamStallTimeout: cfg.streamStall,
		Creds:              creds,
	})
	return d, nil
}

// buildAuth reads the auth file and the authz policy, if any, and warns
// about an address that lets more in than the operator may think.
func (d *daemon) buildAuth() error {
	cfg, log := d.cfg, d.log
	if cfg.authFile == "" && cfg.tlsClientCA != "" {
		// Mutual TLS without an auth file: the transport authenticates,
		// and every verified certificate is its own identity, role admin
		// (as etcd's --client-cert-auth without RBAC): ownership and the
		// limits per identity still apply per certificate.
		a, err := auth.New(auth.Config{Logger: log})
		if err != nil {
			return err
		}
		d.auth = a
		return nil
	}
	if cfg.authFile == "" {
		if !netaddr.Loopback(cfg.addr) {
			log.Warn("authentication is off and --addr is not loopback: anyone who can reach it may do anything (set --auth-file)", "addr", cfg.addr)
		}
		return nil
	}
	a, err := auth.New(auth.Config{File: cfg.authFile, AllowPlaintext: cfg.authAllowPlaintext, Logger: log})
	if err != nil {
		return err
	}
	d.auth = a
	if cfg.authzPolicy != "" {
		p, err := authz.NewFileWatcher(cfg.authzPolicy, cfg.reloadInterval)
		if err != nil {
			return fmt.Errorf("--authz-policy %s: %w", cfg.authzPolicy, err)
		}
		d.policy = p
	}
	return nil
}

// reload re-reads, on SIGHUP, what registryd reads from files while it
// runs: the certificates and the auth file. What fails to load is logged
// and the last good version stays.
func (d *daemon) reload() {
	if d.tls != nil {
		if err := d.tls.Reload(); err != nil {
			d.log.Warn("TLS files not reloaded; the previous certificate stays in use", "err", err)
		} else {
			d.log.Info("TLS files reloaded", "cert", d.cfg.tlsCert)
		}
	}
	if d.auth != nil {
		_ = d.auth.Reload() // logged; the rules in force stay on failure
	}
}

// flushTelemetry sends the spans not exported yet and stops telemetry,
// within 5s.
func (d *daemon) flushTelemetry() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.tel.Shutdown(ctx); err != nil {
		d.log.Warn("telemetry did not flush", "err", err)
	}
}
