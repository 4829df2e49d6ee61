package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/handle"
)

func (a *app) holdCommand() *cobra.Command {
	var lf leaseFlags
	cmd := &cobra.Command{
		Use:   "hold HANDLE...",
		Short: "Pin objects under a lease until interrupted",
		Long: `Open a lease, pin every HANDLE, report each result, and keep them pinned
until interrupted (Ctrl-C); then close the lease, releasing the pins.

hold is all or nothing: if any handle cannot be pinned, it says which and
why, closes the lease (releasing the others) and exits non-zero: status 3
when every failure is a handle not found (collected, deleted, unknown).`,
		Example: `  registryctl hold obj_AQAB... obj_AQAC...
  registryctl hold --grace 1m --client-name nightly-job obj_AQAB...`,
		Args:              minArgs(1, "one HANDLE or more"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := a.routeAll(ctx, "hold", args); err != nil {
				return err
			}
			l, err := a.openLease(ctx, lf.name, lf.grace)
			if err != nil {
				return opErr("open lease", err)
			}
			defer a.release(l)
			results, err := a.pin(ctx, l, args)
			if err != nil {
				return opErr("pin", err)
			}
			failed, notFound := 0, 0
			for _, r := range results {
				if r.Outcome == client.OutcomeFailed {
					failed++
					if status.Code(r.Err) == codes.NotFound {
						notFound++
					}
				}
			}
			err = a.emit(pinResultsProto(results), func(w io.Writer) {
				row(w, "HANDLE", "RESULT", "SIZE", "DETAIL")
				for _, r := range results {
					detail, sz := "-", size(r.Info.Size)
					var e *client.Error
					if errors.As(r.Err, &e) {
						sz = "-"
						detail = e.Message + " (" + e.Reason + ")"
					}
					row(w, r.Handle, r.Outcome.String(), sz, detail)
				}
			})
			if err != nil {
				return err
			}
			if failed > 0 {
				released, _ := a.closeLease(l, 0)
				code := exitError
				if notFound == failed {
					code = exitNotFound
				}
				return &cmdError{
					msg: fmt.Sprintf("%d of %d handle%s could not be pinned; closed lease %s, releasing %d pin%s",
						failed, len(args), plural(len(args)), l.ID(), released, plural(released)),
					code: code,
				}
			}
			fmt.Fprintf(a.stderr, "holding %d object%s under lease %s; interrupt (Ctrl-C) to release\n", len(args), plural(len(args)), l.ID())
			return a.holdUntilInterrupted(ctx, l, lf.handoff)
		},
	}
	lf.register(cmd, "")
	return cmd
}

func (a *app) leasesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "leases",
		Short: "List and revoke leases",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("leases needs a subcommand: ls or revoke")
		},
	}
	cmd.AddCommand(a.leasesLsCommand(), a.leasesRevokeCommand())
	return cmd
}

func (a *app) leasesLsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List live leases, attached to a stream or waiting out their grace",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var (
				resp  *registryv1.ListLeasesResponse
				nodes []member
				errs  []error
				err   error
			)
			if a.clusterMode() {
				if nodes, resp, errs, err = a.clusterLeases(cmd.Context()); err != nil {
					return err
				}
			} else if resp, err = adminCall(cmd.Context(), a, "leases ls", registryv1.AdminServiceClient.ListLeases, &registryv1.ListLeasesRequest{}); err != nil {
				return err
			}
			partial := a.partial(nodes, errs, "the list")
			if a.output == "table" && len(resp.GetLeases()) == 0 {
				fmt.Fprintln(a.stderr, "No leases.")
				return partial
			}
			now := time.Now()
			err = a.emit(resp, func(w io.Writer) {
				head := []any{"LEASE", "CLIENT", "IDENTITY", "PEER", "PINS", "STATUS", "GRACE", "AGE"}
				if a.clusterMode() {
					head = append([]any{"NODE"}, head...)
				}
				row(w, head...)
				for _, l := range resp.GetLeases() {
					st := "attached"
					if !l.GetAttached() {
						st = "detached, ends in " + shortDuration(l.GetExpireTime().AsTime().Sub(now))
					}
					grace := "none"
					if g := l.GetGrace().AsDuration(); g > 0 {
						grace = shortDuration(g)
					}
					cells := []any{l.GetLeaseId(), orDash(l.GetClientName()), orDash(l.GetIdentity()), orDash(l.GetPeer()), l.GetPinCount(), st, grace, age(l.GetOpenTime(), now)}
					if a.clusterMode() {
						cells = append([]any{nodeColumn(handle.Lease, l.GetLeaseId())}, cells...)
					}
					row(w, cells...)
				}
			})
			if err != nil {
				return err
			}
			return partial
		},
	}
}

func (a *app) leasesRevokeCommand() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke LEASE_ID",
		Short: "End a lease now and release its pins",
		Long: `End the lease at once, grace or not, and release its pins. Its holder's
stream, if attached, is told it was revoked, with --reason.`,
		Args:              exactArgs(1, "one LEASE_ID"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.route(cmd.Context(), handle.Lease, args[0]); err != nil {
				return err
			}
			resp, err := adminCall(cmd.Context(), a, args[0], registryv1.AdminServiceClient.RevokeLease,
				&registryv1.RevokeLeaseRequest{LeaseId: args[0], Reason: reason})
			if err != nil {
				return err
			}
			return a.emit(resp, func(w io.Writer) {
				fmt.Fprintf(w, "revoked %s; released %d pin%s\n", args[0], resp.GetReleased(), plural(int(resp.GetReleased())))
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, told to the lease's holder")
	return cmd
}
