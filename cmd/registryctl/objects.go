package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/handle"
)

func (a *app) putCommand() *cobra.Command {
	var (
		contentType string
		labels      []string
		hold        bool
		linger      time.Duration
		node        int
		lf          leaseFlags
	)
	cmd := &cobra.Command{
		Use:   "put [FILE|-]",
		Short: "Store a file or stdin and print its handle",
		Long: `Store the bytes of FILE, or of stdin when FILE is "-" or absent, and print
the new object's handle on stdout. A file of any size is streamed (Upload),
never read into memory whole; stdin is read whole first.

Unless something pins it, the object is held weakly: the Go garbage
collector may take it at its next cycle. With --hold, registryctl opens a
lease that pins the object from the moment it is stored and keeps it until
interrupted (Ctrl-C), then closes the lease. With --linger, the object
stays strongly held that long after its last pin goes (or after it is
stored, without --hold), so that another process has time to pin it.

With --cluster, the object goes to the node --node names, or else to the
node that holds the fewest bytes now (each node's stats are asked).

--timeout bounds the wait for registryd's answers and any stall while the
bytes move; a large put may take as long as it needs while they do.`,
		Example: `  registryctl put model.bin --label team=ml
  echo hello | registryctl put --content-type text/plain --hold
  registryctl put report.pdf --linger 5m`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lbls, err := parseLabels(labels)
			if err != nil {
				return err
			}
			if linger < 0 {
				return usagef("--linger must be 0 or more, got %s", linger)
			}
			if !hold && (lf.grace != 0 || lf.handoff != 0 || cmd.Flags().Changed("client-name")) {
				return usagef("--grace, --handoff and --client-name need --hold")
			}
			if cmd.Flags().Changed("node") && !a.clusterMode() {
				return usagef("--node picks a node of a --cluster; without one, --addr names the registryd")
			}
			if node < -1 || node > 65535 {
				return usagef("--node %d: want a node tag, 0 to 65535", node)
			}
			if a.clusterMode() {
				if err := a.placeNode(cmd.Context(), node); err != nil {
					return opErr("put", err)
				}
			}
			name := "-"
			if len(args) == 1 {
				name = args[0]
			}
			if contentType == "" && name != "-" {
				contentType = mime.TypeByExtension(filepath.Ext(name))
			}
			opts := []client.PutOption{client.ContentType(contentType), client.Labels(lbls), client.Linger(linger)}
			ctx := cmd.Context()
			var l *client.Lease
			if hold {
				if l, err = a.openLease(ctx, lf.name, lf.grace); err != nil {
					return opErr("open lease", err)
				}
				defer a.release(l)
				opts = append(opts, client.PinnedBy(l))
			}
			info, err := a.store(ctx, name, opts)
			if err != nil {
				return opErr("put "+inputName(name), err)
			}
			resp := &registryv1.PutResponse{Handle: info.Handle, Info: infoProto(info)}
			err = a.emit(resp, func(w io.Writer) { fmt.Fprintln(w, resp.GetHandle()) })
			if err != nil || l == nil {
				return err
			}
			fmt.Fprintf(a.stderr, "holding %s under lease %s; interrupt (Ctrl-C) to release it\n", resp.GetHandle(), l.ID())
			return a.holdUntilInterrupted(ctx, l, lf.handoff)
		},
	}
	f := cmd.Flags()
	f.StringVar(&contentType, "content-type", "", "the payload's media type (default: from FILE's extension)")
	f.StringArrayVarP(&labels, "label", "l", nil, "a label key=value (repeatable)")
	f.BoolVar(&hold, "hold", false, "pin the object under a lease until interrupted")
	f.DurationVar(&linger, "linger", 0, "keep the object strongly held this long after its last pin goes (capped by the server's --max-linger)")
	f.IntVar(&node, "node", -1, "with --cluster, the tag of the node to put on (default: the node holding the fewest bytes)")
	lf.register(cmd, "with --hold, ")
	return cmd
}

// store puts a file by streaming it, or stdin after reading it whole.
func (a *app) store(ctx context.Context, name string, opts []client.PutOption) (client.Info, error) {
	cl, err := a.client()
	if err != nil {
		return client.Info{}, err
	}
	var (
		src  io.Reader
		size int64
	)
	if name == "-" {
		data, err := io.ReadAll(a.stdin)
		if err != nil {
			return client.Info{}, err
		}
		src, size = bytes.NewReader(data), int64(len(data))
	} else {
		f, err := os.Open(name)
		if err != nil {
			return client.Info{}, err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return client.Info{}, err
		}
		src, size = f, st.Size()
	}
	if size == 0 {
		return client.Info{}, fmt.Errorf("%s is empty; the registry stores no empty objects", inputName(name))
	}
	ctx, guard := a.stallGuard(ctx)
	defer guard.stop()
	info, err := cl.Upload(ctx, guard.reader(src), size, opts...)
	return info, guard.explain(ctx, err)
}

func inputName(name string) string {
	if name == "-" {
		return "stdin"
	}
	return name
}

func (a *app) getCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "get HANDLE",
		Short: "Write an object's bytes to stdout or a file",
		Long: `Write the bytes of the object HANDLE names to stdout, or to the file -O
names, streaming them (Download) and checking their CRC-32C. A file is
written whole or not at all. With -w json or yaml, print the whole Resolve
answer instead (the bytes in base64, and the object's metadata); that works
only for objects that fit in one message.

A collected, deleted or unknown handle exits with status 3. --timeout
bounds the wait for the first bytes and any later stall.`,
		Example: `  registryctl get obj_AQAB... > model.bin
  registryctl get obj_AQAB... -O model.bin`,
		Args:              exactArgs(1, "one HANDLE"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.route(cmd.Context(), handle.Object, args[0]); err != nil {
				return err
			}
			if a.output != "table" {
				rc, err := a.registry()
				if err != nil {
					return err
				}
				ctx, cancel := a.callCtx(cmd.Context())
				defer cancel()
				resp, err := rc.Resolve(ctx, &registryv1.ResolveRequest{Handle: args[0]})
				if err != nil {
					return opErr(args[0], err)
				}
				return encode(a.stdout, resp, a.output, false)
			}
			return opErr(args[0], a.fetch(cmd.Context(), args[0], out))
		},
	}
	cmd.Flags().StringVarP(&out, "output-file", "O", "", "write the bytes to this file instead of stdout")
	return cmd
}

// fetch downloads h to stdout, or to file through a temporary file beside
// it, renamed into place once every byte has arrived and checked out.
func (a *app) fetch(ctx context.Context, h, file string) error {
	cl, err := a.client()
	if err != nil {
		return err
	}
	ctx, guard := a.stallGuard(ctx)
	defer guard.stop()
	if file == "" || file == "-" {
		_, err := cl.Download(ctx, h, guard.writer(a.stdout))
		return guard.explain(ctx, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	if _, err := cl.Download(ctx, h, guard.writer(tmp)); err != nil {
		tmp.Close()
		return guard.explain(ctx, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

func (a *app) lsCommand() *cobra.Command {
	var (
		state  string
		labels []string
		lease  string
		limit  int
		leaks  bool
	)
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List objects, optionally by state, label or lease",
		Example: `  registryctl ls --state pinned
  registryctl ls --label team=ml --limit 10
  registryctl ls --lease lse_AQAB... -w json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &registryv1.ListObjectsRequest{LeaseId: lease, SuspectedLeaks: leaks}
			var err error
			if req.State, err = parseState(state); err != nil {
				return err
			}
			if req.Labels, err = parseLabels(labels); err != nil {
				return err
			}
			if limit < 0 {
				return usagef("--limit must be 0 (all) or more, got %d", limit)
			}
			var (
				all   *registryv1.ListObjectsResponse
				nodes []member
				errs  []error
			)
			if a.clusterMode() {
				if nodes, all, errs, err = a.clusterLs(cmd.Context(), req, limit); err != nil {
					return err
				}
			} else {
				ac, err := a.admin()
				if err != nil {
					return err
				}
				if all, err = a.listAll(cmd.Context(), ac, req, limit); err != nil {
					return opErr("ls", err)
				}
			}
			partial := a.partial(nodes, errs, "the list")
			more := all.NextPageToken != ""
			if a.clusterMode() {
				all.NextPageToken = "" // a page token is one node's: none resumes a listing of many
			}
			if a.output == "table" && len(all.Objects) == 0 {
				fmt.Fprintln(a.stderr, "No objects.")
				return partial
			}
			now := time.Now()
			err = a.emit(all, func(w io.Writer) {
				head := []any{"HANDLE", "STATE", "PINS", "SIZE", "TYPE", "AGE", "LABELS"}
				if a.clusterMode() {
					head = append([]any{"NODE"}, head...)
				}
				row(w, head...)
				for _, o := range all.Objects {
					state := stateName(o.GetState())
					if o.GetSuspectedLeak() {
						state += " (leak?)"
					}
					cells := []any{o.GetHandle(), state, o.GetPinCount(), size(o.GetSize()),
						orDash(o.GetContentType()), age(o.GetCreateTime(), now), labelString(o.GetLabels())}
					if a.clusterMode() {
						cells = append([]any{nodeColumn(handle.Object, o.GetHandle())}, cells...)
					}
					row(w, cells...)
				}
				if more {
					fmt.Fprintf(a.stderr, "more objects than --limit %d; raise it, or use 0 for all\n", limit)
				}
			})
			if err != nil {
				return err
			}
			return partial
		},
	}
	f := cmd.Flags()
	f.StringVar(&state, "state", "", "only objects in this state: pinned, lingering or weak")
	f.StringArrayVarP(&labels, "label", "l", nil, "only objects with this label key=value (repeatable: all must match)")
	f.StringVar(&lease, "lease", "", "only objects this lease pins")
	f.IntVar(&limit, "limit", 0, "list at most this many objects (0: all)")
	f.BoolVar(&leaks, "suspect-leaks", false, "only suspected leaks: weak objects that survived too many garbage collections")
	_ = cmd.RegisterFlagCompletionFunc("state", cobra.FixedCompletions([]string{"pinned", "lingering", "weak"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// listAll reads req's pages from one registryd, up to limit objects (0:
// all); NextPageToken says whether there were more.
func (a *app) listAll(ctx context.Context, ac registryv1.AdminServiceClient, req *registryv1.ListObjectsRequest, limit int) (*registryv1.ListObjectsResponse, error) {
	all := &registryv1.ListObjectsResponse{}
	for {
		req.PageSize = 500
		if limit > 0 {
			req.PageSize = int32(min(limit-len(all.Objects), 500))
		}
		cctx, cancel := a.callCtx(ctx)
		page, err := ac.ListObjects(cctx, req)
		cancel()
		if err != nil {
			return nil, err
		}
		all.Objects = append(all.Objects, page.GetObjects()...)
		all.NextPageToken = page.GetNextPageToken()
		if all.NextPageToken == "" || (limit > 0 && len(all.Objects) >= limit) {
			return all, nil
		}
		req.PageToken = all.NextPageToken
	}
}

// parseState parses --state; "" means any.
func parseState(s string) (registryv1.ObjectState, error) {
	switch strings.ToLower(s) {
	case "":
		return registryv1.ObjectState_OBJECT_STATE_UNSPECIFIED, nil
	case "pinned":
		return registryv1.ObjectState_OBJECT_STATE_PINNED, nil
	case "lingering":
		return registryv1.ObjectState_OBJECT_STATE_LINGERING, nil
	case "weak":
		return registryv1.ObjectState_OBJECT_STATE_WEAK, nil
	}
	return 0, usagef("--state %q: want pinned, lingering or weak", s)
}

func (a *app) inspectCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "inspect HANDLE",
		Short:             "Show everything known about one object, and which leases pin it",
		Args:              exactArgs(1, "one HANDLE"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.route(cmd.Context(), handle.Object, args[0]); err != nil {
				return err
			}
			resp, err := adminCall(cmd.Context(), a, args[0], registryv1.AdminServiceClient.InspectObject,
				&registryv1.InspectObjectRequest{Handle: args[0]})
			if err != nil {
				return err
			}
			now := time.Now()
			return a.emit(resp, func(w io.Writer) {
				o := resp.GetInfo()
				row(w, "HANDLE", o.GetHandle())
				row(w, "OWNER", orDash(resp.GetOwner()))
				row(w, "STATE", fmt.Sprintf("%s for %s (since %s)", stateName(o.GetState()), age(o.GetStateTime(), now), stamp(o.GetStateTime())))
				row(w, "SIZE", fmt.Sprintf("%s (%d bytes)", size(o.GetSize()), o.GetSize()))
				row(w, "CONTENT TYPE", orDash(o.GetContentType()))
				row(w, "LABELS", labelString(o.GetLabels()))
				row(w, "CREATED", fmt.Sprintf("%s (%s ago)", stamp(o.GetCreateTime()), age(o.GetCreateTime(), now)))
				row(w, "LAST ACCESS", fmt.Sprintf("%s (%s ago)", stamp(o.GetAccessTime()), age(o.GetAccessTime(), now)))
				row(w, "PINS", o.GetPinCount())
				if l := o.GetLinger(); l != nil {
					row(w, "LINGER", shortDuration(l.AsDuration())+" after its last pin goes")
				}
				if u := o.GetLingerUntil(); u != nil {
					row(w, "WEAK AT", fmt.Sprintf("%s (in %s)", stamp(u), shortDuration(u.AsTime().Sub(now))))
				}
				if o.GetSoftCached() {
					row(w, "SOFT CACHED", "yes: held strongly while recently resolved")
				}
				if o.GetState() == registryv1.ObjectState_OBJECT_STATE_WEAK {
					row(w, "GC CYCLES", fmt.Sprintf("%d survived since it became weak", o.GetWeakGcCycles()))
				}
				if o.GetSuspectedLeak() {
					row(w, "SUSPECTED LEAK", "yes: weak, yet alive after that many collections; something in registryd references it")
				}
				if len(resp.GetPins()) == 0 {
					return
				}
				row(w)
				row(w, "PINNED BY", "CLIENT", "IDENTITY", "SINCE")
				for _, p := range resp.GetPins() {
					row(w, p.GetLeaseId(), orDash(p.GetClientName()), orDash(p.GetIdentity()), age(p.GetPinTime(), now))
				}
			})
		},
	}
}

func (a *app) rmCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm HANDLE",
		Short: "Delete an object now; refuses a pinned one unless --force",
		Long: `Delete the object HANDLE names at once. Its handle then answers "deleted".

A pinned object is refused, naming the leases that pin it: someone still
uses it. --force deletes it anyway and releases those pins.`,
		Args:              exactArgs(1, "one HANDLE"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.route(cmd.Context(), handle.Object, args[0]); err != nil {
				return err
			}
			ac, err := a.admin()
			if err != nil {
				return err
			}
			ctx, cancel := a.callCtx(cmd.Context())
			defer cancel()
			resp, err := ac.DeleteObject(ctx, &registryv1.DeleteObjectRequest{Handle: args[0], Force: force})
			if status.Code(err) == codes.FailedPrecondition && !force {
				return a.pinnedError(cmd, args[0], err)
			}
			if err != nil {
				return opErr(args[0], err)
			}
			return a.emit(resp, func(w io.Writer) {
				fmt.Fprintf(w, "deleted %s (%s)", resp.GetInfo().GetHandle(), size(resp.GetInfo().GetSize()))
				if ids := resp.GetReleasedLeaseIds(); len(ids) > 0 {
					fmt.Fprintf(w, "; released its pin%s in %s", plural(len(ids)), strings.Join(ids, ", "))
				}
				fmt.Fprintln(w)
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete even if leases pin it, releasing their pins")
	return cmd
}

// pinnedError says who pins an object that rm refused to delete.
func (a *app) pinnedError(cmd *cobra.Command, h string, refusal error) error {
	ac, err := a.admin()
	if err != nil {
		return opErr(h, refusal)
	}
	ctx, cancel := a.callCtx(cmd.Context())
	defer cancel()
	resp, err := ac.InspectObject(ctx, &registryv1.InspectObjectRequest{Handle: h})
	if err != nil || len(resp.GetPins()) == 0 {
		return opErr(h, refusal)
	}
	holders := make([]string, len(resp.GetPins()))
	for i, p := range resp.GetPins() {
		holders[i] = p.GetLeaseId()
		if p.GetClientName() != "" {
			holders[i] += fmt.Sprintf(" (%s)", p.GetClientName())
		}
	}
	return opErr(h, &cmdError{
		msg: fmt.Sprintf("refusing to delete: pinned by %d lease%s: %s; use --force to delete it and release those pins",
			len(holders), plural(len(holders)), strings.Join(holders, ", ")),
		code: exitError,
	})
}

// leaseFlags are the flags of commands that open a lease.
type leaseFlags struct {
	name    string
	grace   time.Duration
	handoff time.Duration
}

func (lf *leaseFlags) register(cmd *cobra.Command, prefix string) {
	cmd.Flags().StringVar(&lf.name, "client-name", defaultClientName(), prefix+"the lease's client name, shown by 'leases ls' and 'inspect'")
	cmd.Flags().DurationVar(&lf.grace, "grace", 0, prefix+"how long the lease outlives a lost connection, resuming if it comes back (default: none)")
	cmd.Flags().DurationVar(&lf.handoff, "handoff", 0, prefix+"on interrupt, keep the objects strongly held this long after the lease lets go, for another process to pin (capped by the server's --max-linger)")
}
