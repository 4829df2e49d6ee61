package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

func (a *app) watchCommand() *cobra.Command {
	var (
		kinds []string
		from  uint64
		epoch uint64
	)
	cmd := &cobra.Command{
		Use:   "watch [HANDLE...]",
		Short: "Print lifecycle events as they happen, until interrupted",
		Long: `Print lifecycle events as they happen: of the objects HANDLE names, or of
every object when none is named. Ends when interrupted (Ctrl-C), or, for
named objects, when all of them have been collected or deleted.

Watching named objects starts with a CURRENT event giving each one's state
now. With -w json each event is one line of JSON; with -w yaml, one
document. "watching" on stderr says the watch is in place: every event
after it is printed.

--from SEQ resumes a watch that stopped: it prints, from registryd's
bounded history (--watch-history), every event since sequence SEQ (the
last SEQ printed plus one), then the new ones, and no CURRENT event. A
sequence older than the history fails with WATCH_HISTORY_COMPACTED,
naming the oldest one kept.`,
		Example: `  registryctl watch
  registryctl watch --kind COLLECTED --kind DELETED
  registryctl watch obj_AQAB... -w json | jq .kind
  registryctl watch --from 1042`,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			if epoch != 0 && from == 0 {
				return usagef("--epoch goes with --from")
			}
			start := a.startWatch
			if a.clusterMode() {
				start = a.clusterWatch
			}
			recv, err := start(ctx, args, kinds, from, epoch)
			if err != nil {
				return opErr("watch", err)
			}
			fmt.Fprintln(a.stderr, "watching", watchScope(args))
			if a.output == "table" {
				fmt.Fprintf(a.stdout, "%-24s  %6s  %-9s  %-56s  %-9s  %4s  %9s  %s\n", "TIME", "SEQ", "KIND", "HANDLE", "STATE", "PINS", "SIZE", "LEASE")
			}
			for {
				ev, err := recv()
				switch {
				case errors.Is(err, io.EOF):
					return nil // every watched object has ended
				case cmd.Context().Err() != nil:
					return nil // interrupted
				case err != nil:
					return opErr("watch", err)
				}
				if err := a.printEvent(ev); err != nil {
					return err
				}
			}
		},
	}
	cmd.Flags().StringArrayVar(&kinds, "kind", nil, "without HANDLEs, only events of this kind: CREATED, PINNED, UNPINNED, WEAK, COLLECTED, DELETED (repeatable)")
	cmd.Flags().Uint64Var(&from, "from", 0, "resume from this sequence number (inclusive): replay what happened since, then follow (0: start now)")
	cmd.Flags().Uint64Var(&epoch, "epoch", 0, "with --from: the epoch of the events it continues (an event's epoch in -w json); a restarted registryd then says so instead of replaying another run's events")
	return cmd
}

func watchScope(handles []string) string {
	if len(handles) == 0 {
		return "all objects"
	}
	return strings.Join(handles, " ")
}

// startWatch opens the watch and waits, up to --timeout, for the server to
// say it is in place (its response headers). It returns the event reader.
// The timeout counts from the connection on: a server that accepts
// connections but never answers would otherwise hold the watch for gRPC's
// 20s connect timeout. The stream ends with ctx.
func (a *app) startWatch(ctx context.Context, handles, kinds []string, from, epoch uint64) (recv func() (*registryv1.Event, error), err error) {
	ctx, cancel := context.WithCancel(ctx)
	expired := time.AfterFunc(a.timeout, cancel)
	defer func() {
		if !expired.Stop() {
			recv, err = nil, status.Error(codes.DeadlineExceeded, "watch did not start")
		}
		if err != nil {
			cancel()
		}
	}()
	var header func() (metadata.MD, error)
	if len(handles) > 0 {
		if len(kinds) > 0 {
			return nil, usagef("--kind works only when watching all objects")
		}
		rc, err := a.registry()
		if err != nil {
			return nil, err
		}
		ws, err := rc.Watch(ctx, &registryv1.WatchRequest{Handles: handles, FromSequence: from, Epoch: epoch})
		if err != nil {
			return nil, err
		}
		header, recv = ws.Header, eventsOf(ws.Recv)
	} else {
		req := &registryv1.WatchEventsRequest{FromSequence: from, Epoch: epoch}
		for _, k := range kinds {
			v, ok := registryv1.EventKind_value["EVENT_KIND_"+strings.ToUpper(k)]
			if !ok || v == 0 {
				return nil, usagef("--kind %q: want CREATED, PINNED, UNPINNED, LINGERING, WEAK, COLLECTED or DELETED", k)
			}
			req.Kinds = append(req.Kinds, registryv1.EventKind(v))
		}
		ac, err := a.admin()
		if err != nil {
			return nil, err
		}
		ws, err := ac.WatchEvents(ctx, req)
		if err != nil {
			return nil, err
		}
		header, recv = ws.Header, eventsOf(ws.Recv)
	}
	md, err := header()
	if err != nil {
		return nil, err
	}
	if md == nil {
		// The stream ended before the watch was in place: a refusal
		// (WATCH_HISTORY_COMPACTED...), or, resuming, objects that had all
		// ended already.
		if _, err := recv(); !errors.Is(err, io.EOF) {
			return nil, err
		}
		return func() (*registryv1.Event, error) { return nil, io.EOF }, nil
	}
	return recv, nil
}

// printEvent writes one event in the chosen format, at once.
func (a *app) printEvent(ev *registryv1.Event) error {
	if a.output != "table" {
		return encode(a.stdout, ev, a.output, true)
	}
	_, err := fmt.Fprintf(a.stdout, "%-24s  %6d  %-9s  %-56s  %-9s  %4d  %9s  %s\n",
		stamp(ev.GetTime()), ev.GetSequence(), kindName(ev.GetKind()), ev.GetHandle(), stateName(ev.GetState()),
		ev.GetPinCount(), size(ev.GetSize()), orDash(ev.GetLeaseId()))
	return err
}

// eventsOf reads the events of a Watch or a WatchEvents stream alike.
func eventsOf[M interface{ GetEvent() *registryv1.Event }](recv func() (M, error)) func() (*registryv1.Event, error) {
	return func() (*registryv1.Event, error) {
		m, err := recv()
		return m.GetEvent(), err
	}
}
