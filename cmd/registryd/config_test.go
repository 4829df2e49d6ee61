package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/registry"
)

func TestConfigFlagsEnvAndDefaults(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, c *config)
	}{
		{"defaults", nil, nil, func(t *testing.T, c *config) {
			if c.addr != "127.0.0.1:7600" || c.maxObjectBytes != 1<<30 || c.maxPinnedBytes != 4<<30 ||
				c.maxGrace != 5*time.Minute || c.logLevel != slog.LevelInfo || c.logFormat != "text" ||
				c.metricsAddr != "" || !c.telemetry || c.maxLinger != 10*time.Minute || c.softCacheBytes != 0 || c.leakGCCycles != 3 ||
				c.collectInterval != 250*time.Millisecond || c.logSlow != DefaultLogSlow {
				t.Fatalf("defaults: %+v", c)
			}
		}},
		{"env twin applies", nil, map[string]string{"REGISTRYD_ADDR": "127.0.0.1:9", "REGISTRYD_MAX_OBJECT_BYTES": "2MiB",
			"REGISTRYD_LOG_LEVEL": "debug", "REGISTRYD_MAX_GRACE": "30s"}, func(t *testing.T, c *config) {
			if c.addr != "127.0.0.1:9" || c.maxObjectBytes != 2<<20 || c.logLevel != slog.LevelDebug || c.maxGrace != 30*time.Second {
				t.Fatalf("env: %+v", c)
			}
		}},
		{"flag wins over env", []string{"--addr", "127.0.0.1:8", "--max-object-bytes=1KB"},
			map[string]string{"REGISTRYD_ADDR": "127.0.0.1:9", "REGISTRYD_MAX_OBJECT_BYTES": "2MiB"}, func(t *testing.T, c *config) {
				if c.addr != "127.0.0.1:8" || c.maxObjectBytes != 1000 {
					t.Fatalf("flags: %+v", c)
				}
			}},
		{"metrics and telemetry from env", nil, map[string]string{"REGISTRYD_METRICS_ADDR": "0.0.0.0:9464", "REGISTRYD_TELEMETRY": "on"},
			func(t *testing.T, c *config) {
				if c.metricsAddr != "0.0.0.0:9464" || !c.telemetry {
					t.Fatalf("metrics: %+v", c)
				}
			}},
		{"linger and soft cache from env", nil, map[string]string{"REGISTRYD_MAX_LINGER": "30s", "REGISTRYD_SOFT_CACHE_BYTES": "64MiB"},
			func(t *testing.T, c *config) {
				if c.maxLinger != 30*time.Second || c.softCacheBytes != 64<<20 {
					t.Fatalf("linger, soft cache: %+v", c)
				}
			}},
		{"slow-call threshold from env", nil, map[string]string{"REGISTRYD_LOG_SLOW": "0"}, func(t *testing.T, c *config) {
			if c.logSlow != 0 {
				t.Fatalf("log slow: %v", c.logSlow)
			}
		}},
		{"slow-call threshold flag wins over env", []string{"--log-slow=2s"}, map[string]string{"REGISTRYD_LOG_SLOW": "0"}, func(t *testing.T, c *config) {
			if c.logSlow != 2*time.Second {
				t.Fatalf("log slow: %v", c.logSlow)
			}
		}},
		{"telemetry off by env", nil, map[string]string{"REGISTRYD_TELEMETRY": "off"}, func(t *testing.T, c *config) {
			if c.telemetry || c.metricsAddr != "" {
				t.Fatalf("telemetry: %+v", c)
			}
		}},
		{"telemetry flag wins over env", []string{"--telemetry", "--metrics-addr=127.0.0.1:0"}, map[string]string{"REGISTRYD_TELEMETRY": "off"},
			func(t *testing.T, c *config) {
				if !c.telemetry || c.metricsAddr != "127.0.0.1:0" {
					t.Fatalf("telemetry: %+v", c)
				}
			}},
		{"stream stall timeout default", nil, nil, func(t *testing.T, c *config) {
			if c.streamStall != 10*time.Second {
				t.Fatalf("stream stall timeout: %v, want 10s", c.streamStall)
			}
		}},
		{"stream stall timeout from env", nil, map[string]string{"REGISTRYD_STREAM_STALL_TIMEOUT": "3s"}, func(t *testing.T, c *config) {
			if c.streamStall != 3*time.Second {
				t.Fatalf("stream stall timeout: %v, want 3s", c.streamStall)
			}
		}},
		{"watch history default", nil, nil, func(t *testing.T, c *config) {
			if c.watchHistory != 10000 {
				t.Fatalf("watch history: %d, want 10000", c.watchHistory)
			}
		}},
		{"watch history from env", nil, map[string]string{"REGISTRYD_WATCH_HISTORY": "8"}, func(t *testing.T, c *config) {
			if c.watchHistory != 8 {
				t.Fatalf("watch history: %d, want 8", c.watchHistory)
			}
		}},
		{"watch history flag wins over env", []string{"--watch-history=0"}, map[string]string{"REGISTRYD_WATCH_HISTORY": "8"}, func(t *testing.T, c *config) {
			if c.watchHistory != 0 {
				t.Fatalf("watch history: %d, want 0", c.watchHistory)
			}
		}},
		{"identity limits default to a quarter of the global ones", []string{"--max-leases=400", "--max-pinned-bytes=1GiB"}, nil, func(t *testing.T, c *config) {
			if c.identityMaxLeases != 100 || c.identityMaxPinnedBytes != 256<<20 {
				t.Fatalf("identity limits: %d leases, %d bytes; want 100 and 256 MiB", c.identityMaxLeases, c.identityMaxPinnedBytes)
			}
		}},
		{"identity limits from env", nil, map[string]string{"REGISTRYD_IDENTITY_MAX_LEASES": "7", "REGISTRYD_IDENTITY_MAX_PINNED_BYTES": "1MiB"}, func(t *testing.T, c *config) {
			if c.identityMaxLeases != 7 || c.identityMaxPinnedBytes != 1<<20 {
				t.Fatalf("identity limits: %d leases, %d bytes; want 7 and 1 MiB", c.identityMaxLeases, c.identityMaxPinnedBytes)
			}
		}},
		{"identity limit flag wins over env, 0 is none", []string{"--identity-max-leases=0", "--identity-max-pinned-bytes=0"}, map[string]string{"REGISTRYD_IDENTITY_MAX_LEASES": "7"}, func(t *testing.T, c *config) {
			if c.identityMaxLeases != 0 || c.identityMaxPinnedBytes != 0 {
				t.Fatalf("identity limits: %d leases, %d bytes; want 0 and 0", c.identityMaxLeases, c.identityMaxPinnedBytes)
			}
		}},
		{"auth off and reload every 30s by default", nil, nil, func(t *testing.T, c *config) {
			if c.authFile != "" || c.authAllowPlaintext || c.authzPolicy != "" || c.reloadInterval != 30*time.Second {
				t.Fatalf("auth: %+v", c)
			}
		}},
		{"auth from env", nil, map[string]string{"REGISTRYD_AUTH_FILE": "/etc/registryd/auth", "REGISTRYD_AUTH_ALLOW_PLAINTEXT": "true",
			"REGISTRYD_AUTHZ_POLICY": "/etc/registryd/policy.json", "REGISTRYD_RELOAD_INTERVAL": "5s"}, func(t *testing.T, c *config) {
			if c.authFile != "/etc/registryd/auth" || !c.authAllowPlaintext || c.authzPolicy != "/etc/registryd/policy.json" || c.reloadInterval != 5*time.Second {
				t.Fatalf("auth: %+v", c)
			}
		}},
		{"auth flags win over env", []string{"--auth-file=a", "--auth-allow-plaintext=false", "--reload-interval=1m"},
			map[string]string{"REGISTRYD_AUTH_FILE": "b", "REGISTRYD_AUTH_ALLOW_PLAINTEXT": "true"}, func(t *testing.T, c *config) {
				if c.authFile != "a" || c.authAllowPlaintext || c.reloadInterval != time.Minute {
					t.Fatalf("auth: %+v", c)
				}
			}},
		{"identity limits default", nil, nil, func(t *testing.T, c *config) {
			if c.identityUploadBytes != c.maxUploadBytes/4 || c.identityStreams != 256 || c.identityRate != 1000 || c.identityBurst != 2000 {
				t.Fatalf("identity limits: uploads %d (global %d), streams %d, rate %g, burst %d", c.identityUploadBytes, c.maxUploadBytes, c.identityStreams, c.identityRate, c.identityBurst)
			}
		}},
		{"identity upload bytes follow the global budget", []string{"--max-upload-bytes=64MiB"}, nil, func(t *testing.T, c *config) {
			if c.identityUploadBytes != 16<<20 {
				t.Fatalf("identity upload bytes: %d, want 16 MiB", c.identityUploadBytes)
			}
		}},
		{"identity limits from env", nil, map[string]string{"REGISTRYD_IDENTITY_MAX_UPLOAD_BYTES": "0", "REGISTRYD_IDENTITY_MAX_STREAMS": "8",
			"REGISTRYD_IDENTITY_RATE": "2.5", "REGISTRYD_IDENTITY_BURST": "5"}, func(t *testing.T, c *config) {
			if c.identityUploadBytes != 0 || c.identityStreams != 8 || c.identityRate != 2.5 || c.identityBurst != 5 {
				t.Fatalf("identity limits: %+v", c)
			}
		}},
		{"identity limit flag wins over env", []string{"--identity-rate=0", "--identity-max-upload-bytes=1MiB"},
			map[string]string{"REGISTRYD_IDENTITY_RATE": "7", "REGISTRYD_IDENTITY_MAX_UPLOAD_BYTES": "2MiB"}, func(t *testing.T, c *config) {
				if c.identityRate != 0 || c.identityUploadBytes != 1<<20 {
					t.Fatalf("identity limits: rate %g, uploads %d", c.identityRate, c.identityUploadBytes)
				}
			}},
		{"tls defaults", nil, nil, func(t *testing.T, c *config) {
			if c.tlsCert != "" || c.tlsKey != "" || c.tlsClientCA != "" || c.reloadInterval != 30*time.Second {
				t.Fatalf("tls defaults: %+v", c)
			}
		}},
		{"tls from env", nil, map[string]string{"REGISTRYD_TLS_CERT": "c.pem", "REGISTRYD_TLS_KEY": "k.pem",
			"REGISTRYD_TLS_CLIENT_CA": "ca.pem", "REGISTRYD_RELOAD_INTERVAL": "5s"}, func(t *testing.T, c *config) {
			if c.tlsCert != "c.pem" || c.tlsKey != "k.pem" || c.tlsClientCA != "ca.pem" || c.reloadInterval != 5*time.Second {
				t.Fatalf("tls env: %+v", c)
			}
		}},
		{"tls flag wins over env", []string{"--tls-cert=f.pem", "--tls-key=fk.pem"}, map[string]string{"REGISTRYD_TLS_CERT": "c.pem", "REGISTRYD_TLS_KEY": "k.pem"},
			func(t *testing.T, c *config) {
				if c.tlsCert != "f.pem" || c.tlsKey != "fk.pem" {
					t.Fatalf("tls flags: %+v", c)
				}
			}},
		{"no cluster by default, a 10s TTL when there is one", nil, nil, func(t *testing.T, c *config) {
			if c.cluster != "" || c.etcdEndpoints != nil || c.advertiseAddr != "" || c.etcdTTL != 10*time.Second {
				t.Fatalf("cluster defaults: %+v", c)
			}
		}},
		{"cluster from env", nil, map[string]string{"REGISTRYD_CLUSTER": "prod", "REGISTRYD_ETCD_ENDPOINTS": "http://10.0.0.1:2379, http://10.0.0.2:2379",
			"REGISTRYD_ADVERTISE_ADDR": "node1.example:7600", "REGISTRYD_ETCD_TTL": "5s"}, func(t *testing.T, c *config) {
			if c.cluster != "prod" || !slices.Equal(c.etcdEndpoints, []string{"http://10.0.0.1:2379", "http://10.0.0.2:2379"}) ||
				c.advertiseAddr != "node1.example:7600" || c.etcdTTL != 5*time.Second {
				t.Fatalf("cluster env: %+v", c)
			}
		}},
		{"cluster flags win over env", []string{"--cluster=b", "--etcd-endpoints=127.0.0.1:2379", "--advertise-addr=10.0.0.9:7600", "--etcd-ttl=3s"},
			map[string]string{"REGISTRYD_CLUSTER": "a", "REGISTRYD_ETCD_ENDPOINTS": "http://x:1", "REGISTRYD_ADVERTISE_ADDR": "y:2", "REGISTRYD_ETCD_TTL": "9s"},
			func(t *testing.T, c *config) {
				if c.cluster != "b" || !slices.Equal(c.etcdEndpoints, []string{"127.0.0.1:2379"}) || c.advertiseAddr != "10.0.0.9:7600" || c.etcdTTL != 3*time.Second {
					t.Fatalf("cluster flags: %+v", c)
				}
			}},
		{"advertise address defaults to a host --addr", []string{"--cluster=c", "--etcd-endpoints=http://127.0.0.1:2379", "--addr=10.1.2.3:0"}, nil,
			func(t *testing.T, c *config) {
				if c.advertiseAddr != "" || c.addr != "10.1.2.3:0" {
					t.Fatalf("advertise: %+v", c)
				}
				if got := advertised(c.addr, &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 7609}); got != "10.1.2.3:7609" {
					t.Fatalf("advertised = %q, want --addr's host and the port listened on", got)
				}
			}},
		{"plain byte counts", []string{"--max-pinned-bytes=0", "--max-message-bytes=1048576"}, nil, func(t *testing.T, c *config) {
			if c.maxPinnedBytes != 0 || c.maxMessageBytes != 1<<20 {
				t.Fatalf("sizes: %+v", c)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			c, err := parseConfig(tt.args)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestConfigErrorsNameTheProblem(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"bad size flag", []string{"--max-object-bytes=lots"}, nil, "max-object-bytes"},
		{"bad size env", nil, map[string]string{"REGISTRYD_MAX_OBJECT_BYTES": "lots"}, "REGISTRYD_MAX_OBJECT_BYTES"},
		{"unknown flag", []string{"--nope"}, nil, "-nope"},
		{"stray argument", []string{"serve"}, nil, `"serve"`},
		{"node too big", []string{"--node=70000"}, nil, "--node"},
		{"negative tombstones", []string{"--tombstones=-1"}, nil, "--tombstones"},
		{"negative linger", []string{"--max-linger=-1s"}, nil, "--max-linger"},
		{"negative identity leases", []string{"--identity-max-leases=-1"}, nil, "--identity-max-leases"},
		{"negative leak cycles", nil, map[string]string{"REGISTRYD_LEAK_GC_CYCLES": "-2"}, "--leak-gc-cycles"},
		{"negative collect interval", []string{"--collect-min-interval", "-1s"}, nil, "--collect-min-interval"},
		{"bad soft cache size", nil, map[string]string{"REGISTRYD_SOFT_CACHE_BYTES": "big"}, "REGISTRYD_SOFT_CACHE_BYTES"},
		{"negative watch history", []string{"--watch-history=-1"}, nil, "--watch-history"},
		{"bad watch history env", nil, map[string]string{"REGISTRYD_WATCH_HISTORY": "lots"}, "REGISTRYD_WATCH_HISTORY"},
		{"log format", []string{"--log-format=xml"}, nil, "--log-format"},
		{"negative slow-call threshold", []string{"--log-slow=-1s"}, nil, "--log-slow (REGISTRYD_LOG_SLOW)"},
		{"bad slow-call threshold env", nil, map[string]string{"REGISTRYD_LOG_SLOW": "soon"}, "REGISTRYD_LOG_SLOW"},
		{"telemetry word", []string{"--telemetry=maybe"}, nil, "telemetry"},
		{"telemetry env word", nil, map[string]string{"REGISTRYD_TELEMETRY": "maybe"}, "REGISTRYD_TELEMETRY"},
		{"metrics without telemetry", []string{"--telemetry=off", "--metrics-addr=127.0.0.1:0"}, nil, "--metrics-addr"},
		{"pprof without metrics", []string{"--pprof"}, nil, "--pprof (REGISTRYD_PPROF) needs a loopback --metrics-addr"},
		{"pprof on a public metrics address", []string{"--metrics-addr=0.0.0.0:9464"}, map[string]string{"REGISTRYD_PPROF": "true"}, "not \"0.0.0.0:9464\""},
		{"pprof on every interface", []string{"--pprof", "--metrics-addr=:9464"}, nil, "--pprof"},
		{"zero object size", []string{"--max-object-bytes=0"}, nil, "--max-object-bytes"},
		{"zero reload interval", []string{"--reload-interval=0s"}, nil, "--reload-interval"},
		{"bad reload interval env", nil, map[string]string{"REGISTRYD_RELOAD_INTERVAL": "often"}, "REGISTRYD_RELOAD_INTERVAL"},
		{"plaintext tokens without an auth file", []string{"--auth-allow-plaintext"}, nil, "need --auth-file"},
		{"authz policy without an auth file", nil, map[string]string{"REGISTRYD_AUTHZ_POLICY": "p.json"}, "need --auth-file"},
		{"negative identity streams", []string{"--identity-max-streams=-1"}, nil, "--identity-max-streams"},
		{"negative identity rate", nil, map[string]string{"REGISTRYD_IDENTITY_RATE": "-1"}, "REGISTRYD_IDENTITY_RATE"},
		{"infinite identity rate", []string{"--identity-rate=+Inf"}, nil, "--identity-rate"},
		{"zero burst with a rate", []string{"--identity-burst=0"}, nil, "--identity-burst"},
		{"bad identity upload size", []string{"--identity-max-upload-bytes=lots"}, nil, "identity-max-upload-bytes"},
		{"client CA without TLS", []string{"--tls-client-ca=ca.pem"}, nil, "--tls-client-ca"},
		{"client CA env without TLS", nil, map[string]string{"REGISTRYD_TLS_CLIENT_CA": "ca.pem"}, "needs --tls-cert"},
		{"cert without key", []string{"--tls-cert=c.pem"}, nil, "go together"},
		{"cluster without etcd", []string{"--cluster=c"}, nil, "--cluster and --etcd-endpoints (REGISTRYD_CLUSTER, REGISTRYD_ETCD_ENDPOINTS) go together"},
		{"etcd without a cluster", nil, map[string]string{"REGISTRYD_ETCD_ENDPOINTS": "http://127.0.0.1:2379"}, "go together"},
		{"empty etcd endpoint", []string{"--cluster=c", "--etcd-endpoints=http://a:1,,http://b:2"}, nil, "-etcd-endpoints: want URLs separated by commas"},
		{"bad cluster name", []string{"--cluster=a/b", "--etcd-endpoints=http://a:1"}, nil, "--cluster (REGISTRYD_CLUSTER)"},
		{"TTL too short", []string{"--cluster=c", "--etcd-endpoints=http://a:1", "--advertise-addr=a:1", "--etcd-ttl=1s"}, nil, "--etcd-ttl (REGISTRYD_ETCD_TTL) 1s: want whole seconds from 2s to 5m"},
		{"TTL too long", nil, map[string]string{"REGISTRYD_CLUSTER": "c", "REGISTRYD_ETCD_ENDPOINTS": "http://a:1", "REGISTRYD_ADVERTISE_ADDR": "a:1", "REGISTRYD_ETCD_TTL": "6m"}, "--etcd-ttl"},
		{"TTL in fractions", []string{"--cluster=c", "--etcd-endpoints=http://a:1", "--advertise-addr=a:1", "--etcd-ttl=2500ms"}, nil, "whole seconds"},
		{"wildcard addr without advertise", []string{"--cluster=c", "--etcd-endpoints=http://a:1", "--addr=0.0.0.0:7600"}, nil, "set --advertise-addr (REGISTRYD_ADVERTISE_ADDR)"},
		{"empty-host addr without advertise", []string{"--cluster=c", "--etcd-endpoints=http://a:1", "--addr=:7600"}, nil, "listens on every address"},
		{"IPv6 wildcard without advertise", []string{"--cluster=c", "--etcd-endpoints=http://a:1", "--addr=[::]:7600"}, nil, "--advertise-addr"},
		{"wildcard advertise", []string{"--cluster=c", "--etcd-endpoints=http://a:1", "--advertise-addr=0.0.0.0:7600"}, nil, "--advertise-addr (REGISTRYD_ADVERTISE_ADDR) \"0.0.0.0:7600\""},
		{"advertise without a port", []string{"--cluster=c", "--etcd-endpoints=http://a:1", "--advertise-addr=node1"}, nil, "--advertise-addr"},
		{"advertise port 0", []string{"--cluster=c", "--etcd-endpoints=http://a:1", "--advertise-addr=node1:0"}, nil, "--advertise-addr"},
		{"advertise without a cluster", []string{"--advertise-addr=node1:7600"}, nil, "need --cluster"},
		{"TTL without a cluster", nil, map[string]string{"REGISTRYD_ETCD_TTL": "5s"}, "need --cluster"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, err := parseConfig(tt.args)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

func TestDecodeKey(t *testing.T) {
	key := bytes.Repeat([]byte{0xab}, 32)
	tests := []struct {
		name    string
		in      []byte
		want    []byte
		wantErr string
	}{
		{"hex with newline", []byte(hex.EncodeToString(key) + "\n"), key, ""},
		{"base64", []byte(base64.StdEncoding.EncodeToString(key)), key, ""},
		{"base64url", []byte(base64.RawURLEncoding.EncodeToString(key)), key, ""},
		{"raw bytes", append([]byte{0xff, 0xfe}, key...), append([]byte{0xff, 0xfe}, key...), ""},
		{"too short", []byte("abc"), nil, "at least 32"},
		{"short hex", []byte(hex.EncodeToString(key[:16])), nil, "16 bytes read as hex"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeKey(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Fatalf("got %x, %v; want %x", got, err, tt.want)
			}
		})
	}
}

func TestLoadKeyPrefersEnvThenFileThenRandom(t *testing.T) {
	file := filepath.Join(t.TempDir(), "registry.key")
	if err := os.WriteFile(file, []byte(strings.Repeat("11", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &config{keyFile: file}
	key, random, err := loadKey(c)
	if err != nil || random || !bytes.Equal(key, bytes.Repeat([]byte{0x11}, 32)) {
		t.Fatalf("from file: %x %v %v", key, random, err)
	}
	t.Setenv("REGISTRYD_KEY", strings.Repeat("22", 32))
	key, random, err = loadKey(c)
	if err != nil || random || !bytes.Equal(key, bytes.Repeat([]byte{0x22}, 32)) {
		t.Fatalf("from env: %x %v %v", key, random, err)
	}
	t.Setenv("REGISTRYD_KEY", "")
	key, random, err = loadKey(&config{})
	if err != nil || !random || len(key) != 32 {
		t.Fatalf("random: %x %v %v", key, random, err)
	}
}

// TestTombstonesZeroRemembersNone: --tombstones 0 gives a registry that
// remembers no deleted handle (registry.Config reads 0 as its default).
func TestTombstonesZeroRemembersNone(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want error
	}{
		{nil, registry.ErrDeleted},
		{[]string{"--tombstones", "0"}, registry.ErrCollected},
	} {
		c, err := parseConfig(tt.args)
		if err != nil {
			t.Fatal(err)
		}
		codec, err := handle.NewCodec(handle.Config{Key: bytes.Repeat([]byte{1}, handle.MinKeyLen)})
		if err != nil {
			t.Fatal(err)
		}
		reg := registry.New(registry.Config{Codec: codec, Tombstones: c.tombstones})
		info, err := reg.Put([]byte("x"), registry.Meta{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := reg.Delete(info.ID, false); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.Resolve(info.Handle); !errors.Is(err, tt.want) {
			t.Errorf("%v: Resolve of a deleted handle: %v, want %v", tt.args, err, tt.want)
		}
		reg.Close()
	}
}

// TestByteLimitsDeriveFromGOMEMLIMIT: with a Go memory limit set, the
// pinned-bytes and upload budgets default to a half and a quarter of it,
// so that what registryd holds for its clients stays under it.
func TestByteLimitsDeriveFromGOMEMLIMIT(t *testing.T) {
	old := debug.SetMemoryLimit(1 << 30)
	defer debug.SetMemoryLimit(old)
	c, err := parseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.maxPinnedBytes != 512<<20 || c.maxUploadBytes != 256<<20 || c.identityMaxPinnedBytes != 128<<20 {
		t.Errorf("under a 1 GiB memory limit: pinned %d (%d per identity), uploads %d; want 512 MiB (128 MiB) and 256 MiB",
			c.maxPinnedBytes, c.identityMaxPinnedBytes, c.maxUploadBytes)
	}
	// 64 MiB for watchers, 256 KiB each with 1,024-event buffers.
	if c.maxWatchers != 256 {
		t.Errorf("under a 1 GiB memory limit: %d watchers, want 256", c.maxWatchers)
	}
	if c, err := parseConfig([]string{"--watch-buffer=64"}); err != nil || c.maxWatchers != 1024 {
		t.Errorf("with small buffers, at most the default: %d, %v", c.maxWatchers, err)
	}
	if c, err := parseConfig([]string{"--max-watchers=5000"}); err != nil || c.maxWatchers != 5000 {
		t.Errorf("--max-watchers still wins: %d, %v", c.maxWatchers, err)
	}
	c, err = parseConfig([]string{"--max-pinned-bytes", "2GiB"})
	if err != nil || c.maxPinnedBytes != 2<<30 {
		t.Errorf("a flag still wins: %v, %v", c.maxPinnedBytes, err)
	}
}

func TestMetricsWarningIsForNonLoopbackAddresses(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:9464", true},
		{"[::1]:9464", true},
		{"0.0.0.0:9464", false},
		{"[::]:9464", false},
		{"192.0.2.7:9464", false},
	}
	for _, tt := range tests {
		a, err := net.ResolveTCPAddr("tcp", tt.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := isLoopback(a); got != tt.want {
			t.Errorf("isLoopback(%s) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}

func TestClusterNeedsASharedKey(t *testing.T) {
	t.Setenv("REGISTRYD_KEY", "")
	cfg, err := parseConfig([]string{"--cluster=c", "--etcd-endpoints=http://127.0.0.1:1", "--telemetry=off"})
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	_, err = build(cfg, slog.New(slog.NewTextHandler(&log, nil)))
	if err == nil || !strings.Contains(err.Error(), "--key-file or REGISTRYD_KEY") {
		t.Fatalf("build of a cluster node without a key = %v, want an error naming --key-file", err)
	}
	if log.Len() != 0 {
		t.Errorf("it logged besides the error:\n%s", log.String())
	}
}
