package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"

	"github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

func (a *app) statCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "stat HANDLE...",
		Short: "Show the state, size and pins of objects",
		Long: `Show the metadata of every HANDLE: its state, size, pins and content type,
one row each, in the order given. The handles go in as few calls as
possible (BatchStat, a thousand handles a call), each answered on its own.
Stat does not count as an access.

If any handle has no object, its row says why and stat exits non-zero:
status 3 when every failure is a handle not found (collected, deleted,
unknown), 4 when every one is a handle of a cluster node that is not live
(NODE_UNAVAILABLE).`,
		Example: `  registryctl stat obj_AQAB... obj_AQAC...
  registryctl ls -w json | jq -r '.objects[].handle' | xargs registryctl stat`,
		Args:              minArgs(1, "one HANDLE or more"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := a.callCtx(cmd.Context())
			defer cancel()
			results, err := a.statMany(ctx, args)
			if err != nil {
				return opErr("stat", err)
			}
			out := &registryv1.BatchStatResponse{Results: make([]*registryv1.BatchStatResult, len(results))}
			failed, notFound, gone := 0, 0, 0
			for i, r := range results {
				out.Results[i] = &registryv1.BatchStatResult{}
				var e *client.Error
				if errors.As(r.Err, &e) {
					failed++
					switch {
					case e.Code == codes.NotFound:
						notFound++
					case e.Reason == registryv1.ErrorReason_NODE_UNAVAILABLE.String():
						gone++
					}
					out.Results[i].Error = &registryv1.HandleError{Code: int32(e.Code), Reason: e.Reason, Message: e.Message, Metadata: e.Metadata}
					continue
				}
				out.Results[i].Info = infoProto(r.Info)
			}
			err = a.emit(out, func(w io.Writer) {
				row(w, "HANDLE", "STATE", "SIZE", "PINS", "CONTENT TYPE")
				for i, r := range out.GetResults() {
					if e := r.GetError(); e != nil {
						row(w, args[i], "-", "-", "-", e.GetMessage()+" ("+e.GetReason()+")")
						continue
					}
					o := r.GetInfo()
					row(w, o.GetHandle(), stateName(o.GetState()), size(o.GetSize()), o.GetPinCount(), orDash(o.GetContentType()))
				}
			})
			if err != nil {
				return err
			}
			if failed > 0 {
				code := exitError
				switch failed {
				case notFound:
					code = exitNotFound
				case gone:
					code = exitUnavailable
				}
				return &cmdError{msg: fmt.Sprintf("%d of %d handle%s have no object", failed, len(args), plural(len(args))), code: code}
			}
			return nil
		},
	}
}
