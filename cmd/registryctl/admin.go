package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/version"
)

func (a *app) statsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Show objects and bytes by state, leases, limits and GC figures",
		Long: `Show registryd's figures: objects and bytes by state, leases, pins,
watchers, calls, collections, limits and the garbage collector.

With --cluster, every node's counters and their sum, one row a node: the
figures that are one node's own (limits, GC) are in each node's own
'stats' (-w json carries them all).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.clusterMode() {
				return a.clusterStats(cmd.Context())
			}
			st, err := adminCall(cmd.Context(), a, "stats", registryv1.AdminServiceClient.GetStats, &registryv1.GetStatsRequest{})
			if err != nil {
				return err
			}
			return a.emit(st, func(w io.Writer) { statsTable(w, st, time.Now()) })
		},
	}
}

func statsTable(w io.Writer, st *registryv1.GetStatsResponse, now time.Time) {
	row(w, "SERVER", fmt.Sprintf("registryd %s, epoch %d, up %s", orDash(st.GetServerVersion()), st.GetEpoch(), age(st.GetEpochStartTime(), now)))
	row(w)
	row(w, "STATE", "OBJECTS", "BYTES")
	o, b := st.GetObjects(), st.GetBytes()
	row(w, "pinned", o.GetPinned(), size(b.GetPinned()))
	row(w, "lingering", o.GetLingering(), size(b.GetLingering()))
	row(w, "weak", o.GetWeak(), size(b.GetWeak()))
	row(w)
	row(w, "LEASES", fmt.Sprintf("%d attached, %d detached", st.GetLeasesAttached(), st.GetLeasesDetached()))
	row(w, "PINS", st.GetPins())
	row(w, "WATCHERS", st.GetWatchers())
	row(w, "PUTS", st.GetPuts())
	row(w, "RESOLVES", resolveSummary(st))
	row(w, "COLLECTED", fmt.Sprintf("%d objects, %s", st.GetCollectedObjects(), size(st.GetCollectedBytes())))
	row(w, "DELETED", fmt.Sprintf("%d objects", st.GetDeletedObjects()))
	row(w, "GC", gcSummary(st, now))
	if h := st.GetWatchHistory(); h.GetCapacity() > 0 {
		row(w, "WATCH HISTORY", fmt.Sprintf("%d of %d events kept, sequences %d to %d", h.GetEvents(), h.GetCapacity(), h.GetOldestSequence(), h.GetNewestSequence()))
	}
	row(w, "SUSPECTED LEAKS", st.GetSuspectedLeaks())
	if sc := st.GetSoftCache(); sc.GetMaxBytes() > 0 {
		row(w, "SOFT CACHE", fmt.Sprintf("%d objects, %s of %s, %d hits, %d evictions",
			sc.GetObjects(), size(sc.GetBytes()), size(sc.GetMaxBytes()), sc.GetHits(), sc.GetEvictions()))
	} else {
		row(w, "SOFT CACHE", "off")
	}
	row(w)
	row(w, "LIMIT", "MAX", "USED", "FULL")
	for _, l := range st.GetLimits() {
		used, full := "-", "-"
		if l.GetUsed() >= 0 {
			used = limitValue(l.GetUsed(), l.GetUnit())
			if l.GetMax() > 0 {
				full = fmt.Sprintf("%.1f%%", 100*float64(l.GetUsed())/float64(l.GetMax()))
			}
		}
		maxText := "unlimited"
		if l.GetMax() > 0 {
			maxText = limitValue(l.GetMax(), l.GetUnit())
		}
		row(w, l.GetName(), maxText, used, full)
	}
}

func limitValue(v int64, unit string) string {
	switch unit {
	case "bytes":
		return size(v)
	case "seconds":
		return shortDuration(time.Duration(v) * time.Second)
	}
	return fmt.Sprint(v)
}

func resolveSummary(st *registryv1.GetStatsResponse) string {
	var missed int64
	reasons := make([]string, 0, len(st.GetResolveMisses()))
	for r, n := range st.GetResolveMisses() {
		if n == 0 {
			continue
		}
		missed += n
		reasons = append(reasons, fmt.Sprintf("%s %d", r, n))
	}
	sort.Strings(reasons)
	out := fmt.Sprintf("%d hits, %d misses", st.GetResolveHits(), missed)
	if len(reasons) > 0 {
		out += " (" + strings.Join(reasons, ", ") + ")"
	}
	return out
}

func gcSummary(st *registryv1.GetStatsResponse, now time.Time) string {
	gc := st.GetGc()
	out := fmt.Sprintf("%d cycles", st.GetGcCycles())
	if gc == nil {
		return out
	}
	if gc.GetLastGcTime() != nil {
		out += ", last " + age(gc.GetLastGcTime(), now) + " ago"
	}
	out += fmt.Sprintf(", heap %s, next at %s, pauses %s", size(int64(gc.GetHeapAllocBytes())), size(int64(gc.GetNextGcBytes())),
		gc.GetPauseTotal().AsDuration().Round(time.Microsecond))
	if l := gc.GetMemoryLimitBytes(); l > 0 && l < math.MaxInt64 {
		out += ", GOMEMLIMIT " + size(l)
	}
	return out
}

func (a *app) gcCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Run the garbage collector now and show what it freed",
		Long: `Run registryd's Go garbage collector now. Unpinned objects that nothing
else references are collected; their handles then answer "collected".
Pinned objects are never collected.

With --cluster, every node collects at once, one row a node.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.clusterMode() {
				return a.clusterGC(cmd.Context())
			}
			resp, err := adminCall(cmd.Context(), a, "gc", registryv1.AdminServiceClient.Collect, &registryv1.CollectRequest{})
			if err != nil {
				return err
			}
			return a.emit(resp, func(w io.Writer) {
				fmt.Fprintf(w, "collected %d object%s (%s) in %s; heap %s -> %s\n",
					resp.GetCollectedObjects(), plural(int(resp.GetCollectedObjects())), size(resp.GetCollectedBytes()),
					resp.GetDuration().AsDuration().Round(time.Microsecond),
					size(int64(resp.GetHeapBeforeBytes())), size(int64(resp.GetHeapAfterBytes())))
			})
		},
	}
}

func (a *app) healthCommand() *cobra.Command {
	var service string
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Ask registryd's gRPC health check; exit 0 when serving, 4 when not",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := a.dial()
			if err != nil {
				return err
			}
			ctx, cancel := a.callCtx(cmd.Context())
			defer cancel()
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
			if err != nil {
				return opErr("health", err)
			}
			if err := a.emit(resp, func(w io.Writer) { fmt.Fprintln(w, resp.GetStatus()) }); err != nil {
				return err
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				return &cmdError{msg: fmt.Sprintf("registryd at %s is %s", a.addr, resp.GetStatus()), code: exitUnavailable}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&service, "service", "", `the service to ask about (default: the whole server), e.g. "registry.v1.RegistryService"`)
	return cmd
}

func (a *app) versionCommand() *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show registryctl's version and the server's",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := struct {
				Client string `json:"client"`
				Server string `json:"server,omitempty"`
			}{Client: version.String()}
			var serverErr error
			if !clientOnly {
				ac, err := a.admin()
				if err != nil {
					return err
				}
				ctx, cancel := a.callCtx(cmd.Context())
				st, err := ac.GetStats(ctx, &registryv1.GetStatsRequest{})
				cancel()
				if err != nil {
					serverErr = opErr("server version", err)
				}
				out.Server = st.GetServerVersion()
			}
			if a.output == "table" {
				fmt.Fprintf(a.stdout, "registryctl %s\n", out.Client)
				if out.Server != "" {
					fmt.Fprintf(a.stdout, "registryd   %s (at %s)\n", out.Server, a.addr)
				}
			} else {
				raw, err := json.Marshal(out)
				if err != nil {
					return err
				}
				if err := encodeJSON(a.stdout, raw, a.output, false); err != nil {
					return err
				}
			}
			return serverErr
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "show registryctl's version only, without asking the server")
	return cmd
}
