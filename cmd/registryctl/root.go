package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"

	"github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/netaddr"
	"github.com/weakref/registry/internal/telemetry"
	"github.com/weakref/registry/internal/version"
)

// envPrefix prefixes the environment twin of every global flag:
// --addr is REGISTRYCTL_ADDR, --cacert is REGISTRYCTL_CACERT.
const envPrefix = "REGISTRYCTL_"

// app is one run of registryctl: its global flags, its streams and its
// connection, dialled on first use.
type app struct {
	addr    string
	timeout time.Duration
	output  string
	tls     bool
	cacert  string
	cert    string
	key     string
	token   string

	cluster       string // --cluster, as given
	etcdEndpoints string

	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	cl      *client.Client            // the client of addr
	clients map[string]*client.Client // by address: --addr's and each node's
	tel     *telemetry.Telemetry

	clusterName string   // the cluster's name, from --cluster
	etcdURLs    []string // --etcd-endpoints, split
	nodes       []member // the live nodes, read from etcd on first use
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "registryctl",
		Short: "Operate a registryd: objects, leases, collections and events",
		Long: `registryctl talks to a registryd over gRPC.

Objects are held weakly unless a lease pins them; once unpinned, the Go
garbage collector may take them, and their handles then answer "collected".
Use 'put --hold' or 'hold' to keep objects alive from the command line.

Every global flag has an environment twin: --addr is REGISTRYCTL_ADDR,
--timeout is REGISTRYCTL_TIMEOUT, and so on. A flag wins over its variable.

With --cluster (a target etcd:///registry/NAME, or NAME), registryctl finds
the cluster's nodes in etcd (--etcd-endpoints) and talks to each at the
address it advertises: a command about one handle or lease goes to the
node that issued it, ls, leases ls, stats and watch ask every node, and
'cluster ls' lists the nodes.

Exit status: 0 ok, 1 error, 2 bad usage, 3 not found (collected, deleted,
unknown, or from an earlier run of registryd), 4 registryd unreachable or
not serving.`,
		SilenceErrors:     true,
		SilenceUsage:      true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return a.setup(cmd) },
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q", args[0])
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %q?)", s[0])
			}
			return &usageError{msg: msg}
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })

	f := root.PersistentFlags()
	f.StringVar(&a.addr, "addr", "127.0.0.1:7600", "registryd's gRPC address, host:port")
	f.DurationVar(&a.timeout, "timeout", 10*time.Second, "how long one call may take; streams use it to start")
	f.StringVarP(&a.output, "output", "w", "table", "output format: table, json or yaml")
	f.BoolVar(&a.tls, "tls", false, "connect with TLS (implied by --cacert, --cert and --key)")
	f.StringVar(&a.cacert, "cacert", "", "PEM file of the CA that signed registryd's certificate (default: the system's roots)")
	f.StringVar(&a.cert, "cert", "", "PEM client certificate, for mutual TLS (with --key)")
	f.StringVar(&a.key, "key", "", "PEM private key of --cert")
	f.StringVar(&a.token, "token", "", "bearer token sent with every call (needs TLS, except to a loopback --addr)")
	f.StringVar(&a.cluster, "cluster", "", "a cluster of registryd nodes found in etcd, instead of --addr: etcd:///registry/NAME, or NAME")
	f.StringVar(&a.etcdEndpoints, "etcd-endpoints", defaultEtcd, "with --cluster, etcd's client URLs, comma-separated")
	f.VisitAll(func(fl *pflag.Flag) { fl.Usage += " (env " + envName(fl.Name) + ")" })
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))

	root.AddGroup(
		&cobra.Group{ID: "objects", Title: "Objects:"},
		&cobra.Group{ID: "leases", Title: "Leases:"},
		&cobra.Group{ID: "server", Title: "The server:"},
		&cobra.Group{ID: "cluster", Title: "The cluster:"},
	)
	for _, c := range []*cobra.Command{a.putCommand(), a.getCommand(), a.statCommand(), a.lsCommand(), a.inspectCommand(), a.rmCommand(), a.watchCommand()} {
		c.GroupID = "objects"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{a.holdCommand(), a.leasesCommand()} {
		c.GroupID = "leases"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{a.statsCommand(), a.gcCommand(), a.healthCommand(), a.versionCommand()} {
		c.GroupID = "server"
		root.AddCommand(c)
	}
	c := a.clusterCommand()
	c.GroupID = "cluster"
	root.AddCommand(c)
	return root
}

// envName is the environment twin of a global flag.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// setup fills global flags not given on the command line from their
// environment twins, then checks them together.
func (a *app) setup(cmd *cobra.Command) error {
	var err error
	fromEnv := map[string]bool{}
	cmd.Root().PersistentFlags().VisitAll(func(fl *pflag.Flag) {
		if err != nil || fl.Changed {
			return
		}
		if v := a.getenv(envName(fl.Name)); v != "" {
			fromEnv[fl.Name] = true
			if e := fl.Value.Set(v); e != nil {
				err = usagef("%s=%q: %v", envName(fl.Name), v, e)
			}
		}
	})
	if err != nil {
		return err
	}
	// name is how the user gave a flag: --output, or REGISTRYCTL_OUTPUT
	// when it came from the environment.
	name := func(flag string) string {
		if fromEnv[flag] {
			return envName(flag)
		}
		return "--" + flag
	}
	switch a.output {
	case "table", "json", "yaml":
	default:
		return usagef("%s %q: want table, json or yaml", name("output"), a.output)
	}
	if a.timeout <= 0 {
		return usagef("%s must be positive, got %s", name("timeout"), a.timeout)
	}
	if (a.cert == "") != (a.key == "") {
		return usagef("%s and %s go together", name("cert"), name("key"))
	}
	if a.cacert != "" || a.cert != "" {
		a.tls = true
	}
	// --addr and --cluster each name the registry: a flag wins over the
	// other's variable, and two of a kind are a mistake.
	pf := cmd.Root().PersistentFlags()
	addrFlag, clusterFlag := pf.Changed("addr"), pf.Changed("cluster")
	if a.cluster != "" && addrFlag && !clusterFlag {
		a.cluster = ""
	}
	if err := a.setupCluster(name, addrFlag && clusterFlag || fromEnv["addr"] && fromEnv["cluster"]); err != nil {
		return err
	}
	if err := a.refuseInCluster(cmd); err != nil {
		return err
	}
	if a.token != "" && !a.tls && !a.clusterMode() && !netaddr.Loopback(a.addr) {
		return usagef("%s would be sent in clear text; use it with --tls (or --cacert), or on a loopback --addr only", name("token"))
	}
	return nil
}

// client returns the Go client of registryd at --addr (or, with
// --cluster, of the node route chose), made on first use. Making it does
// not contact the server: the first call does, and fails with UNAVAILABLE
// at once if nothing listens.
func (a *app) client() (*client.Client, error) {
	if a.cl != nil && a.cl == a.clients[a.addr] {
		return a.cl, nil
	}
	cl, err := a.clientAt(a.addr)
	if err != nil {
		return nil, err
	}
	a.cl = cl
	return cl, nil
}

// clientAt returns the Go client of the registryd at addr, made on first
// use and kept for the run.
func (a *app) clientAt(addr string) (*client.Client, error) {
	if cl, ok := a.clients[addr]; ok {
		return cl, nil
	}
	if a.token != "" && !a.tls && !netaddr.Loopback(addr) {
		// A node's advertised address, checked as --addr is in setup.
		return nil, usagef("--token would be sent in clear text to %s; use it with --tls (or --cacert), or on loopback nodes only", addr)
	}
	opts := []client.Option{
		client.WithDialOptions(grpc.WithUserAgent("registryctl/" + strings.Fields(version.String())[0])),
	}
	if a.tls {
		cfg, err := a.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithTLS(cfg))
	}
	if a.token != "" {
		opts = append(opts, client.WithToken(a.token))
	}
	if a.tel == nil {
		// Traces go where the OTEL_* variables say, as registryd's do;
		// with none set there is no tracing at all.
		tel, err := telemetry.New(context.Background(), telemetry.Config{
			ServiceName:    "registryctl",
			ServiceVersion: version.String(),
			Logger:         slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
		if err != nil {
			return nil, fmt.Errorf("OpenTelemetry configuration: %w", err)
		}
		a.tel = tel
	}
	opts = append(opts, client.WithoutTracing(), client.WithDialOptions(a.tel.DialOptions()...))
	cl, err := client.Dial(addr, opts...)
	if err != nil {
		if a.clusterMode() {
			return nil, fmt.Errorf("node address %q: %w", addr, err)
		}
		return nil, usagef("--addr %q: %v", addr, err)
	}
	if a.clients == nil {
		a.clients = map[string]*client.Client{}
	}
	a.clients[addr] = cl
	return cl, nil
}

// dial returns the connection under the client, for the services the
// client does not wrap: AdminService and health.
func (a *app) dial() (*grpc.ClientConn, error) {
	cl, err := a.client()
	if err != nil {
		return nil, err
	}
	return cl.Conn(), nil
}

func (a *app) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if a.cacert != "" {
		pem, err := os.ReadFile(a.cacert)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert %s: no PEM certificate in it", a.cacert)
		}
		cfg.RootCAs = pool
	}
	if a.cert != "" {
		pair, err := tls.LoadX509KeyPair(a.cert, a.key)
		if err != nil {
			return nil, fmt.Errorf("--cert/--key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// close closes the connection and flushes traces, if any.
func (a *app) close() {
	for _, cl := range a.clients {
		cl.Close()
	}
	if a.tel != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		// Spans that cannot be flushed must not change the exit code.
		_ = a.tel.Shutdown(ctx)
	}
}

// registry and admin return the service clients.
func (a *app) registry() (registryv1.RegistryServiceClient, error) {
	conn, err := a.dial()
	if err != nil {
		return nil, err
	}
	return registryv1.NewRegistryServiceClient(conn), nil
}

func (a *app) admin() (registryv1.AdminServiceClient, error) {
	conn, err := a.dial()
	if err != nil {
		return nil, err
	}
	return registryv1.NewAdminServiceClient(conn), nil
}

// adminCall makes one AdminService call, bounded by --timeout; op names
// what it was about in an error.
func adminCall[Req, Resp any](ctx context.Context, a *app, op string,
	method func(registryv1.AdminServiceClient, context.Context, *Req, ...grpc.CallOption) (*Resp, error), req *Req) (*Resp, error) {
	ac, err := a.admin()
	if err != nil {
		return nil, err
	}
	ctx, cancel := a.callCtx(ctx)
	defer cancel()
	resp, err := method(ac, ctx, req)
	if err != nil {
		return nil, opErr(op, err)
	}
	return resp, nil
}

// callCtx bounds one unary call by --timeout.
func (a *app) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.timeout)
}

// exactArgs and minArgs check positional arguments as usage errors.
func exactArgs(n int, names string) cobra.PositionalArgs { //nolint:unparam // the pair with minArgs reads as cobra.ExactArgs does
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("want %s, got %d argument%s", names, len(args), plural(len(args)))
		}
		return nil
	}
}

func minArgs(n int, names string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef("want %s", names)
		}
		return nil
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// parseLabels parses repeated --label k=v flags.
func parseLabels(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usagef("--label %q: want key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}
