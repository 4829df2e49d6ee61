package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/weakref/registry/internal/cluster"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/membership"
	"github.com/weakref/registry/internal/netaddr"
	"github.com/weakref/registry/internal/server"
)

// envPrefix: every flag --some-name has the environment twin
// REGISTRYD_SOME_NAME. A flag given on the command line wins.
const envPrefix = "REGISTRYD_"

// config is registryd's configuration, from flags and environment.
type config struct {
	addr            string
	keyFile         string
	node            uint
	logLevel        slog.Level
	logFormat       string
	logSlow         time.Duration
	maxObjectBytes  byteSize
	maxMessageBytes byteSize
	maxPinnedBytes  byteSize
	maxPinsPerLease int
	maxLeases       int
	// Per identity (never for "anonymous", everyone when auth is off):
	// by default a quarter of the global limit, so that one identity
	// cannot take all of it from the others.
	identityMaxLeases      int
	identityMaxPinnedBytes byteSize
	maxWatchers            int
	maxUploadBytes         byteSize
	maxStreams             uint
	// Limits per identity, for auth on (server.Limits says which).
	identityUploadBytes byteSize
	identityStreams     int
	identityRate        float64
	identityBurst       int
	maxGrace            time.Duration
	maxLinger           time.Duration
	collectInterval     time.Duration
	softCacheBytes      byteSize
	leakGCCycles        int
	tombstones          int
	watchBuffer         int
	watchHistory        int
	keepaliveTime       time.Duration
	keepaliveTimeout    time.Duration
	shutdownTimeout     time.Duration
	streamStall         time.Duration
	metricsAddr         string
	pprof               bool
	telemetry           onOff
	// Authentication: on iff authFile is set.
	authFile           string
	authAllowPlaintext bool
	authzPolicy        string
	reloadInterval     time.Duration
	// TLS: on iff tlsCert is set; mutual TLS iff tlsClientCA is too.
	tlsCert     string
	tlsKey      string
	tlsClientCA string
	// Cluster: on iff cluster is set, with etcdEndpoints (membership).
	etcdEndpoints []string
	cluster       string
	advertiseAddr string // "": --addr's host with the port listened on
	etcdTTL       time.Duration
}

// urlList is a flag of comma-separated URLs: --etcd-endpoints a,b.
type urlList []string

func (l *urlList) String() string { return strings.Join(*l, ",") }

func (l *urlList) Set(s string) error {
	var urls []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u == "" {
			return errors.New("want URLs separated by commas, such as http://10.0.0.1:2379,http://10.0.0.2:2379, with none empty")
		}
		urls = append(urls, u)
	}
	*l = urls
	return nil
}

// onOff is a boolean flag that also takes "on" and "off":
// --telemetry=off, REGISTRYD_TELEMETRY=off.
type onOff bool

func (o *onOff) String() string {
	if o != nil && *o {
		return "on"
	}
	return "off"
}

func (o *onOff) Set(s string) error {
	switch strings.ToLower(s) {
	case "on", "true", "1":
		*o = true
	case "off", "false", "0":
		*o = false
	default:
		return fmt.Errorf("want on or off")
	}
	return nil
}

// IsBoolFlag lets --telemetry alone mean on.
func (o *onOff) IsBoolFlag() bool { return true }

// byteSize is a flag of bytes that takes "16MiB", "4GB" or "1048576".
type byteSize int64

func (b *byteSize) String() string { return humanize.IBytes(uint64(*b)) }

func (b *byteSize) Set(s string) error {
	n, err := humanize.ParseBytes(s)
	if err != nil || n > 1<<62 {
		return fmt.Errorf("want a size such as 16MiB, 4GB or 1048576")
	}
	*b = byteSize(n)
	return nil
}

// fromMemoryLimit is a byte limit's default: 1/part of the Go memory limit
// when GOMEMLIMIT sets one, else otherwise. The defaults that derive from
// it, pinned bytes a half and uploads in flight a quarter, add up to less
// than the limit, so that what registryd holds on its clients' behalf
// cannot take it past GOMEMLIMIT; the rest is for weak objects, the Go
// runtime and gRPC.
func fromMemoryLimit(part int64, otherwise byteSize) byteSize {
	if limit := debug.SetMemoryLimit(-1); limit < math.MaxInt64 { // a negative value only reads it
		return byteSize(limit / part)
	}
	return otherwise
}

// eventBytes bounds what one buffered watch event holds: its 120-byte
// struct and the handle and lease id strings it refers to.
const eventBytes = 256

// watchersFromMemoryLimit is --max-watchers' default under GOMEMLIMIT:
// as many watchers as fit a sixteenth of it with full buffers of
// buffer events (each watcher's buffer is allocated when it opens), at
// most otherwise. Pinned bytes (a half), uploads (a quarter) and watchers
// (a sixteenth) then leave 3/16 of GOMEMLIMIT to gRPC's streams, the
// objects' metadata, the weak objects and the runtime.
func watchersFromMemoryLimit(buffer, otherwise int) int {
	limit := fromMemoryLimit(16, 0)
	if limit == 0 {
		return otherwise
	}
	n := int64(limit) / (int64(buffer) * eventBytes)
	return int(max(1, min(n, int64(otherwise))))
}

func parseConfig(args []string) (*config, error) {
	c := &config{
		maxObjectBytes:  1 << 30,
		maxMessageBytes: 17 << 20,
		maxPinnedBytes:  fromMemoryLimit(2, 4<<30),
		maxUploadBytes:  fromMemoryLimit(4, 1<<30),
		telemetry:       true,
	}
	fs := flag.NewFlagSet("registryd", flag.ContinueOnError)
	// The flag package would print an error and the whole usage for a bad
	// flag; main prints the error on one line instead, and the usage goes
	// out, to stdout, only for -h.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&c.addr, "addr", "127.0.0.1:7600", "`host:port` to serve gRPC on")
	fs.StringVar(&c.keyFile, "key-file", "", "`file` holding the handle MAC key (hex, base64 or raw, at least 32 bytes); also REGISTRYD_KEY holds the key itself. Without either a random key is made, and handles mean nothing to another run")
	fs.UintVar(&c.node, "node", 0, "this node's tag (0-65535), carried in its handles")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "log `level`: debug, info, warn or error")
	fs.DurationVar(&c.logSlow, "log-slow", DefaultLogSlow, "log at info a call that ends OK after this long or longer, as every call that fails; quicker OK calls are logged at debug only (0: every call at info)")
	fs.StringVar(&c.logFormat, "log-format", "text", "log `format`: text or json")
	fs.Var(&c.maxObjectBytes, "max-object-bytes", "largest object accepted, as a `size` such as 16MiB; objects larger than one message move by Upload and Download")
	fs.Var(&c.maxMessageBytes, "max-message-bytes", "largest gRPC message received or sent, as a `size`: bounds Put and Resolve")
	fs.Var(&c.maxPinnedBytes, "max-pinned-bytes", "most bytes held strongly (payloads with their content types and labels) on leases' behalf (pinned, lingering, handed off), all together, as a `size` (default: half of GOMEMLIMIT when it is set, else 4GiB; 0: no limit)")
	fs.IntVar(&c.maxPinsPerLease, "max-pins-per-lease", 100000, "most objects one lease may pin (0: no limit)")
	fs.IntVar(&c.maxLeases, "max-leases", 10000, "most live leases, attached or detached (0: no limit)")
	fs.IntVar(&c.identityMaxLeases, "identity-max-leases", 0, "most live leases one identity may own (default: a quarter of --max-leases; 0 with --max-leases=0: no limit)")
	fs.Var(&c.identityMaxPinnedBytes, "identity-max-pinned-bytes", "most payload bytes held strongly (pinned, lingering, handed off) charged to one identity, as a `size` (default: a quarter of --max-pinned-bytes)")
	fs.Var(&c.maxUploadBytes, "max-upload-bytes", "most bytes all uploads in flight hold together, as a `size`: each reserves the size its header declares until it ends (default: a quarter of GOMEMLIMIT when it is set, else 1GiB; 0: no limit)")
	fs.IntVar(&c.maxWatchers, "max-watchers", 1024, "most open Watch and WatchEvents streams, each of which may hold --watch-buffer events (default: as many as a sixteenth of GOMEMLIMIT holds, at most 1024, when it is set; 0: no limit)")
	fs.UintVar(&c.maxStreams, "max-streams", 1024, "most concurrent streams per client connection")
	fs.DurationVar(&c.maxGrace, "max-grace", 5*time.Minute, "longest grace a lease may ask for")
	fs.DurationVar(&c.maxLinger, "max-linger", 10*time.Minute, "longest linger an object may ask for: strongly held after its last pin goes (0: no linger)")
	fs.DurationVar(&c.collectInterval, "collect-min-interval", 250*time.Millisecond, "least time between two forced collections (AdminService.Collect, registryctl gc); callers in between share the next one, which also waits 4× the last one's duration")
	fs.IntVar(&c.leakGCCycles, "leak-gc-cycles", 3, "report a WEAK object that survives this many garbage collections as a suspected leak (0: never)")
	fs.Var(&c.softCacheBytes, "soft-cache-bytes", "keep the most recently resolved objects strongly held up to this `size` of payload, least recently used going weak first (0: off)")
	fs.IntVar(&c.tombstones, "tombstones", 10000, "how many deleted handles to remember, to answer OBJECT_DELETED (0: none)")
	fs.IntVar(&c.watchBuffer, "watch-buffer", 1024, "events a watcher may fall behind before it is dropped")
	fs.IntVar(&c.watchHistory, "watch-history", 10000, "latest events kept for watchers that resume from a sequence; older ones answer WATCH_HISTORY_COMPACTED (0: none)")
	fs.DurationVar(&c.keepaliveTime, "keepalive-time", 20*time.Second, "ping a client idle this long")
	fs.DurationVar(&c.keepaliveTimeout, "keepalive-timeout", 20*time.Second, "drop a client that does not answer a ping this long (its leases end)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 10*time.Second, "on SIGINT/SIGTERM, wait this long for calls in flight")
	fs.Var(&c.identityUploadBytes, "identity-max-upload-bytes", "most bytes one identity's uploads in flight hold together, as a `size` (default: a quarter of --max-upload-bytes; 0: no limit; not applied with auth off)")
	fs.IntVar(&c.identityStreams, "identity-max-streams", DefaultIdentityStreams, "most Lease, Watch, WatchEvents, Upload and Download streams one identity may have open (0: no limit; not applied with auth off)")
	fs.Float64Var(&c.identityRate, "identity-rate", DefaultIdentityRate, "requests per second one identity may send: unary calls, stream starts and lease stream requests (0: no limit; not applied with auth off)")
	fs.IntVar(&c.identityBurst, "identity-burst", DefaultIdentityBurst, "requests one identity may send at once, above --identity-rate")
	fs.DurationVar(&c.streamStall, "stream-stall-timeout", server.DefaultStreamStallTimeout, "end a lease or watch stream whose client has not taken a message for this long, or an upload whose client has sent nothing for this long (RESOURCE_EXHAUSTED, STREAM_STALLED); a lease stream's lease is detached")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "`host:port` to serve Prometheus /metrics and /healthz on over HTTP (empty: no metrics)")
	fs.BoolVar(&c.pprof, "pprof", false, "serve Go's profiles (net/http/pprof) under /debug/pprof/ on --metrics-addr, which must then be a loopback address")
	fs.Var(&c.telemetry, "telemetry", "telemetry `on|off`: off turns tracing and metrics off whatever OTEL_* says (traces are exported only when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER=otlp is set; see docs/OBSERVABILITY.md)")
	fs.StringVar(&c.authFile, "auth-file", "", "`file` of token and certificate rules (see README, Security): authentication is on with it, and every call but health needs a token or a client certificate whose role may call its method; re-read every --reload-interval and on SIGHUP")
	fs.BoolVar(&c.authAllowPlaintext, "auth-allow-plaintext", false, "accept bearer tokens without TLS from loopback peers (never from others: anyone on the path could read them)")
	fs.StringVar(&c.authzPolicy, "authz-policy", "", "`file` holding a gRPC authz policy (JSON, google.golang.org/grpc/authz) checked after the roles, on mTLS principals and headers; re-read every --reload-interval; needs --auth-file")
	fs.DurationVar(&c.reloadInterval, "reload-interval", 30*time.Second, "how often the auth file, the authz policy and the certificates are checked for changes (also re-read on SIGHUP)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM `file` of the server certificate: serve gRPC, and --metrics-addr, over TLS (with --tls-key; re-read every --reload-interval and on SIGHUP)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM `file` of --tls-cert's private key, in the same directory")
	fs.StringVar(&c.tlsClientCA, "tls-client-ca", "", "PEM `file` of the CAs that sign client certificates: mutual TLS, every client must present one (needs --tls-cert)")
	fs.Var((*urlList)(&c.etcdEndpoints), "etcd-endpoints", "etcd's client `URLs`, comma separated: with --cluster, this node joins that cluster (see docs/CLUSTER.md)")
	fs.StringVar(&c.cluster, "cluster", "", "`name` of the cluster to join in etcd (1-64 letters, digits, '.', '_', '-'); needs --etcd-endpoints and a shared --key-file")
	fs.StringVar(&c.advertiseAddr, "advertise-addr", "", "`host:port` at which peers and clients reach this node, published in etcd (default: --addr, when it names a host rather than every address)")
	fs.DurationVar(&c.etcdTTL, "etcd-ttl", membership.DefaultTTL, "TTL of this node's etcd lease, whole seconds from 2s to 5m: a node that stops renewing it (crashed, cut off) is counted gone this long after")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Printf("Usage: registryd [flags]\n\nServes the object registry over gRPC. Every flag --some-name may also be\nset as the environment variable %sSOME_NAME; a flag wins over its variable.\n\nFlags:\n", envPrefix)
			fs.SetOutput(os.Stdout)
			fs.PrintDefaults()
			return nil, err
		}
		return nil, fmt.Errorf("%w (see registryd -h)", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q; registryd takes flags only", fs.Arg(0))
	}
	if err := applyEnv(fs); err != nil {
		return nil, err
	}
	set := map[string]bool{} // on the command line or from the environment
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["identity-max-leases"] {
		c.identityMaxLeases = c.maxLeases / 4
	}
	if !set["identity-max-pinned-bytes"] {
		c.identityMaxPinnedBytes = c.maxPinnedBytes / 4
	}
	if c.identityMaxLeases < 0 {
		return nil, fmt.Errorf("--identity-max-leases (REGISTRYD_IDENTITY_MAX_LEASES) %d: want 0 or more", c.identityMaxLeases)
	}
	if !given(fs, "max-watchers") && c.watchBuffer > 0 {
		c.maxWatchers = watchersFromMemoryLimit(c.watchBuffer, c.maxWatchers)
	}
	if !given(fs, "identity-max-upload-bytes") {
		c.identityUploadBytes = c.maxUploadBytes / 4
	}
	if c.identityStreams < 0 || c.identityBurst < 0 || c.identityRate < 0 || math.IsNaN(c.identityRate) || math.IsInf(c.identityRate, 0) {
		return nil, errors.New("--identity-max-streams, --identity-rate and --identity-burst (REGISTRYD_IDENTITY_MAX_STREAMS, REGISTRYD_IDENTITY_RATE, REGISTRYD_IDENTITY_BURST) want a finite number, 0 or more")
	}
	if c.identityRate > 0 && c.identityBurst < 1 {
		return nil, fmt.Errorf("--identity-burst (REGISTRYD_IDENTITY_BURST) %d: want 1 or more with --identity-rate %g", c.identityBurst, c.identityRate)
	}
	if c.node > 0xffff {
		return nil, fmt.Errorf("--node (REGISTRYD_NODE) %d: want 0 to 65535", c.node)
	}
	if c.logSlow < 0 {
		return nil, fmt.Errorf("--log-slow (REGISTRYD_LOG_SLOW) %s: want 0 or more", c.logSlow)
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return nil, fmt.Errorf("--log-format (REGISTRYD_LOG_FORMAT) %q: want text or json", c.logFormat)
	}
	if c.pprof && (c.metricsAddr == "" || !netaddr.Loopback(c.metricsAddr)) {
		return nil, fmt.Errorf("--pprof (REGISTRYD_PPROF) needs a loopback --metrics-addr (REGISTRYD_METRICS_ADDR), such as 127.0.0.1:9464, not %q: profiles show the process's internals to whoever can fetch them; reach it through a tunnel", c.metricsAddr)
	}
	if c.metricsAddr != "" && !c.telemetry {
		return nil, errors.New("--metrics-addr (REGISTRYD_METRICS_ADDR) needs --telemetry=on (REGISTRYD_TELEMETRY)")
	}
	if c.tlsClientCA != "" && c.tlsCert == "" {
		return nil, errors.New("--tls-client-ca (REGISTRYD_TLS_CLIENT_CA) needs --tls-cert and --tls-key: mutual TLS needs TLS")
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, errors.New("--tls-cert and --tls-key (REGISTRYD_TLS_CERT, REGISTRYD_TLS_KEY) go together")
	}
	if c.reloadInterval <= 0 {
		return nil, fmt.Errorf("--reload-interval (REGISTRYD_RELOAD_INTERVAL) %s: want more than 0", c.reloadInterval)
	}
	if c.leakGCCycles < 0 {
		return nil, fmt.Errorf("--leak-gc-cycles (REGISTRYD_LEAK_GC_CYCLES) %d: want 0 or more", c.leakGCCycles)
	}
	if c.tombstones < 0 {
		return nil, fmt.Errorf("--tombstones (REGISTRYD_TOMBSTONES) %d: want 0 or more", c.tombstones)
	}
	if c.tombstones == 0 {
		c.tombstones = -1 // registry.Config reads 0 as its default and a negative count as none
	}
	if c.watchHistory < 0 {
		return nil, fmt.Errorf("--watch-history (REGISTRYD_WATCH_HISTORY) %d: want 0 or more", c.watchHistory)
	}
	if c.maxWatchers < 0 {
		return nil, fmt.Errorf("--max-watchers (REGISTRYD_MAX_WATCHERS) %d: want 0 or more", c.maxWatchers)
	}
	if c.collectInterval < 0 {
		return nil, fmt.Errorf("--collect-min-interval (REGISTRYD_COLLECT_MIN_INTERVAL) %s: want 0 or more", c.collectInterval)
	}
	if c.maxLinger < 0 {
		return nil, fmt.Errorf("--max-linger (REGISTRYD_MAX_LINGER) %s: want 0 or more", c.maxLinger)
	}
	if c.reloadInterval <= 0 {
		return nil, fmt.Errorf("--reload-interval (REGISTRYD_RELOAD_INTERVAL) %s: want more than 0", c.reloadInterval)
	}
	if c.authFile == "" && (c.authAllowPlaintext || c.authzPolicy != "") {
		return nil, errors.New("--auth-allow-plaintext and --authz-policy (REGISTRYD_AUTH_ALLOW_PLAINTEXT, REGISTRYD_AUTHZ_POLICY) need --auth-file (REGISTRYD_AUTH_FILE): without it authentication is off")
	}
	if err := c.checkCluster(set); err != nil {
		return nil, err
	}
	if c.maxObjectBytes <= 0 || c.maxMessageBytes <= 0 {
		return nil, errors.New("--max-object-bytes and --max-message-bytes (REGISTRYD_MAX_OBJECT_BYTES, REGISTRYD_MAX_MESSAGE_BYTES) must be positive")
	}
	return c, nil
}

// checkCluster checks the cluster flags: all or none, a name etcd's keys
// can hold, a TTL etcd takes, and an address peers can reach.
func (c *config) checkCluster(set map[string]bool) error {
	if (c.cluster == "") != (len(c.etcdEndpoints) == 0) {
		return errors.New("--cluster and --etcd-endpoints (REGISTRYD_CLUSTER, REGISTRYD_ETCD_ENDPOINTS) go together")
	}
	if c.cluster == "" {
		if set["advertise-addr"] || set["etcd-ttl"] {
			return errors.New("--advertise-addr and --etcd-ttl (REGISTRYD_ADVERTISE_ADDR, REGISTRYD_ETCD_TTL) need --cluster and --etcd-endpoints")
		}
		return nil
	}
	if err := cluster.CheckName(c.cluster); err != nil {
		return fmt.Errorf("--cluster (REGISTRYD_CLUSTER): %w", err)
	}
	if err := membership.CheckTTL(c.etcdTTL); err != nil {
		return fmt.Errorf("--etcd-ttl (REGISTRYD_ETCD_TTL) %w", err)
	}
	if c.advertiseAddr != "" {
		host, port, err := net.SplitHostPort(c.advertiseAddr)
		if err != nil || wildcard(host) || port == "" || port == "0" {
			return fmt.Errorf("--advertise-addr (REGISTRYD_ADVERTISE_ADDR) %q: want the host:port peers and clients reach this node at, with a host and a port", c.advertiseAddr)
		}
		return nil
	}
	if host, _, err := net.SplitHostPort(c.addr); err != nil || wildcard(host) {
		return fmt.Errorf("--addr %q listens on every address, and peers need one to reach this node at: set --advertise-addr (REGISTRYD_ADVERTISE_ADDR)", c.addr)
	}
	return nil
}

// wildcard reports whether host names every address (or none).
func wildcard(host string) bool {
	ip := net.ParseIP(host)
	return host == "" || ip != nil && ip.IsUnspecified()
}

// Defaults of the limits per identity. Measured on a 2-core machine, a
// registryd serves about 20,000 Resolve calls a second (registrybench,
// 16 callers): 1,000 requests/s lets one identity use a twentieth of it,
// so that its flood, even of calls ten times a Resolve's cost, leaves
// the others more than half; a client serving people (registryctl, a
// service resolving a few handles a request) stays far below it. The
// burst lets a client that was idle catch up (a reconnect re-pinning its
// handles, a batch of Puts) without waiting.
const (
	DefaultIdentityStreams = 256
	DefaultIdentityRate    = 1000
	DefaultIdentityBurst   = 2000
)

// DefaultLogSlow is --log-slow's default: etcd's threshold for a request
// that "took too long", and a thousand times a Resolve's usual time here,
// so that a slow call stands out and a busy server writes no line per OK
// call (a line per call cost a third of Resolve's throughput).
const DefaultLogSlow = 100 * time.Millisecond

// given reports whether the flag was set, on the command line or from its
// environment twin.
func given(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// applyEnv sets each flag not given on the command line from its
// environment twin.
func applyEnv(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, e)
			}
		}
	})
	return err
}

// loadKey returns the MAC key from REGISTRYD_KEY or the key file, or a
// random one. random says which.
func loadKey(c *config) (key []byte, random bool, err error) {
	if v := os.Getenv("REGISTRYD_KEY"); v != "" {
		key, err = decodeKey([]byte(v))
		if err != nil {
			return nil, false, fmt.Errorf("REGISTRYD_KEY: %w", err)
		}
		return key, false, nil
	}
	if c.keyFile != "" {
		raw, err := os.ReadFile(c.keyFile) //nolint:gosec // the operator names the key file; reading it is the point
		if err != nil {
			return nil, false, fmt.Errorf("reading the key file: %w", err)
		}
		key, err = decodeKey(raw)
		if err != nil {
			return nil, false, fmt.Errorf("key file %s: %w", c.keyFile, err)
		}
		return key, false, nil
	}
	key = make([]byte, handle.MinKeyLen)
	rand.Read(key)
	return key, true, nil
}

// decodeKey accepts a key as hex, as base64, or as raw bytes, in that
// order of preference, and insists on at least 32 bytes of it.
func decodeKey(raw []byte) ([]byte, error) {
	s := strings.TrimSpace(string(raw))
	key, as := raw, "raw bytes"
	if k, err := hex.DecodeString(s); err == nil {
		key, as = k, "hex"
	} else if k, err := base64.StdEncoding.DecodeString(s); err == nil {
		key, as = k, "base64"
	} else if k, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		key, as = k, "base64"
	}
	if len(key) < handle.MinKeyLen {
		return nil, fmt.Errorf("key is %d bytes read as %s, want at least %d (make one with: openssl rand -hex 32)", len(key), as, handle.MinKeyLen)
	}
	return key, nil
}
