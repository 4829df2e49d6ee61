package server

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/registry"
)

// errorRow is one row of README.md's table of errors.
type errorRow struct {
	reason string
	code   codes.Code
	rpcs   []string
}

// readErrorTable parses the table under README.md's "## Errors".
func readErrorTable(t *testing.T) []errorRow {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Errors\n")
	if !ok {
		t.Fatal(`README.md has no "## Errors" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var rows []errorRow
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(line), "|"), "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if len(cells) != 5 {
			t.Fatalf("row has %d cells, want 5 (reason, code, RPCs, meaning, what to do): %s", len(cells), line)
		}
		var code codes.Code
		name, _, _ := strings.Cut(cells[1], " ")
		if err := code.UnmarshalJSON([]byte(`"` + name + `"`)); err != nil {
			t.Fatalf("row %s: code %q: %v", cells[0], cells[1], err)
		}
		row := errorRow{reason: strings.Trim(cells[0], "`"), code: code}
		for _, rpc := range strings.Split(cells[2], ", ") {
			row.rpcs = append(row.rpcs, strings.TrimSpace(rpc))
		}
		rows = append(rows, row)
	}
	return rows
}

// notProvoked are the rows the table walk does not provoke, and where
// each is tested instead.
var notProvoked = map[string]string{
	ReasonRequestCancelled: "the caller has gone: TestCancelledCallIsCancelledNotAnError and TestHandlerReturnsCancelledStatus check the server's answer",
	ReasonStreamStalled:    "the lease stream's send timeout, tested with the lease stream",
	ReasonInternal:         "a bug: TestPanicBecomesInternalError provokes one",
	ReasonLeaseTakenOver:   "told by revoked, not sent as a status (see the README row)",
}

// answer is what a call answered: a status's code and reason, or a pin
// result's, or a lease response's error.
type answer struct {
	code   codes.Code
	reason string
}

func errAnswer(err error) answer {
	st := status.Convert(err)
	return answer{st.Code(), reasonOf(st)}
}

func resultAnswer(r *registryv1.PinResult) answer {
	return answer{codes.Code(r.GetError().GetCode()), r.GetError().GetReason()}
}

// leaseAnswer is a lease request's answer: the stream's end, or an error
// answered on the stream.
func leaseAnswer(resp *registryv1.LeaseResponse, err error) answer {
	if err == nil && resp.GetError() != nil {
		return answer{codes.Code(resp.GetError().GetCode()), resp.GetError().GetReason()}
	}
	return errAnswer(err)
}

// firstRecv is a server stream's first answer, or its end.
func firstRecv[M any](stream interface{ Recv() (M, error) }, err error) answer {
	return errAnswer(firstEventErr(stream, err))
}

// walkLimits are small enough for the walk to reach every limit in a
// few calls. The bystander pins 21 bytes with one lease.
func walkLimits() *Limits {
	l := testLimits
	l.MaxPinnedBytes = 64
	l.MaxPinsPerLease = 3
	l.MaxLeases = 4
	l.MaxWatchers = 2
	l.MaxUploadBytes = 100
	l.MaxMessageBytes = messageOverhead + 100 // Resolve answers at most 100 bytes
	// Per identity (the bystander is anonymous, to whom they never apply).
	l.MaxLeasesPerIdentity = 2
	l.MaxPinnedBytesPerIdentity = 32
	l.IdentityMaxUploadBytes = 40
	l.IdentityMaxStreams = 2
	l.IdentityRate, l.IdentityBurst = 0.001, 4 // four calls, then none in the test's time
	return &l
}

type provoker func(t *testing.T, w *world) answer

// provocation is a call that should answer want.
type provocation struct {
	want    answer
	provoke provoker
}

// provokers provokes every row: key "REASON CODE RPC".
func provokers() map[string]provocation {
	p := map[string]provocation{}
	add := func(reason string, code codes.Code, rpc string, f provoker) {
		p[reason+" "+code.String()+" "+rpc] = provocation{answer{code, reason}, f}
	}
	ten := []byte("0123456789")
	upload := func(w *world, t *testing.T, msgs ...*registryv1.UploadRequest) answer {
		_, err := w.e.uploadMsgs(ctxT(t), msgs...)
		return errAnswer(err)
	}

	// Reasons about an object handle, on every call that takes one.
	handleCalls := map[string]func(t *testing.T, w *world, h string) answer{
		"Resolve": func(t *testing.T, w *world, h string) answer {
			_, err := w.e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: h})
			return errAnswer(err)
		},
		"Stat": func(t *testing.T, w *world, h string) answer {
			_, err := w.e.rs.Stat(ctxT(t), &registryv1.StatRequest{Handle: h})
			return errAnswer(err)
		},
		"Download": func(t *testing.T, w *world, h string) answer {
			return firstRecv(w.e.rs.Download(ctxT(t), &registryv1.DownloadRequest{Handle: h}))
		},
		"Watch": func(t *testing.T, w *world, h string) answer {
			return firstRecv(w.e.rs.Watch(ctxT(t), &registryv1.WatchRequest{Handles: []string{h}}))
		},
		"InspectObject": func(t *testing.T, w *world, h string) answer {
			_, err := w.e.admin.InspectObject(ctxT(t), &registryv1.InspectObjectRequest{Handle: h})
			return errAnswer(err)
		},
		"DeleteObject": func(t *testing.T, w *world, h string) answer {
			_, err := w.e.admin.DeleteObject(ctxT(t), &registryv1.DeleteObjectRequest{Handle: h})
			return errAnswer(err)
		},
		"Lease pin": func(t *testing.T, w *world, h string) answer {
			return resultAnswer(w.bystander.pin(h)[0])
		},
		"Lease unpin": func(t *testing.T, w *world, h string) answer {
			return resultAnswer(w.bystander.unpin(h)[0])
		},
	}
	handles := badObjectHandles()
	for reason, h := range handles {
		code := catalog[registryv1.ErrorReason(registryv1.ErrorReason_value[reason])].code
		for rpc, call := range handleCalls {
			add(reason, code, rpc, func(t *testing.T, w *world) answer { return call(t, w, h(w)) })
		}
	}

	// Reasons about a lease id, on every call that takes one. Those that
	// need a live lease say FAILED_PRECONDITION for a NOT_FOUND.
	leaseCalls := map[string]func(t *testing.T, w *world, id string) answer{
		"Put": func(t *testing.T, w *world, id string) answer {
			_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: ten, LeaseId: id})
			return errAnswer(err)
		},
		"Resolve": func(t *testing.T, w *world, id string) answer {
			_, err := w.e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: w.weak, LeaseId: id})
			return errAnswer(err)
		},
		"Download": func(t *testing.T, w *world, id string) answer {
			return firstRecv(w.e.rs.Download(ctxT(t), &registryv1.DownloadRequest{Handle: w.weak, LeaseId: id}))
		},
		"Upload": func(t *testing.T, w *world, id string) answer {
			return upload(w, t, chunked(&registryv1.UploadHeader{LeaseId: id}, ten, 4)...)
		},
		"ListObjects": func(t *testing.T, w *world, id string) answer {
			_, err := w.e.admin.ListObjects(ctxT(t), &registryv1.ListObjectsRequest{LeaseId: id})
			return errAnswer(err)
		},
		"RevokeLease": func(t *testing.T, w *world, id string) answer {
			_, err := w.e.admin.RevokeLease(ctxT(t), &registryv1.RevokeLeaseRequest{LeaseId: id})
			return errAnswer(err)
		},
		"Lease open": func(t *testing.T, w *world, id string) answer {
			return leaseAnswer(w.e.leaseStream(t).try(openReq(id)))
		},
	}
	needsLive := map[string]bool{"Put": true, "Resolve": true, "Download": true, "Upload": true}
	leaseIDs := map[string]func(w *world) string{
		ReasonLeaseMalformed:    func(w *world) string { return "lse_x" },
		ReasonHandleForeignNode: func(w *world) string { return w.otherNode(handle.Lease) },
		ReasonNodeUnavailable:   func(w *world) string { return w.goneNode(handle.Lease) },
		ReasonRestarted:         func(w *world) string { return w.otherRun(handle.Lease) },
		ReasonLeaseNotFound: func(w *world) string {
			_, id := w.e.codec.New(handle.Lease) // genuine, never opened
			return id
		},
	}
	for reason, id := range leaseIDs {
		natural := catalog[registryv1.ErrorReason(registryv1.ErrorReason_value[reason])].code
		for rpc, call := range leaseCalls {
			code := natural
			if needsLive[rpc] && code == codes.NotFound {
				code = codes.FailedPrecondition
			}
			if reason == ReasonLeaseNotFound && rpc == "ListObjects" {
				continue // lists nothing: no live lease pins anything with it
			}
			add(reason, code, rpc, func(t *testing.T, w *world) answer { return call(t, w, id(w)) })
		}
	}
	add(ReasonRestarted, codes.NotFound, "WatchEvents", func(t *testing.T, w *world) answer {
		return firstRecv(w.e.admin.WatchEvents(ctxT(t), &registryv1.WatchEventsRequest{FromSequence: 1, Epoch: w.e.reg.Epoch() - 1}))
	})

	add(ReasonPinned, codes.FailedPrecondition, "DeleteObject", func(t *testing.T, w *world) answer {
		_, err := w.e.admin.DeleteObject(ctxT(t), &registryv1.DeleteObjectRequest{Handle: w.pinned})
		return errAnswer(err)
	})
	add(ReasonPayloadEmpty, codes.InvalidArgument, "Put", func(t *testing.T, w *world) answer {
		_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{})
		return errAnswer(err)
	})
	add(ReasonPayloadEmpty, codes.InvalidArgument, "Upload", func(t *testing.T, w *world) answer {
		return upload(w, t, headerMsg(&registryv1.UploadHeader{Size: 0}), trailerMsg(0))
	})
	badLabels := map[string]string{"bad key!": "v"}
	add(ReasonLabelsInvalid, codes.InvalidArgument, "Put", func(t *testing.T, w *world) answer {
		_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: ten, Labels: badLabels})
		return errAnswer(err)
	})
	add(ReasonLabelsInvalid, codes.InvalidArgument, "Upload", func(t *testing.T, w *world) answer {
		return upload(w, t, chunked(&registryv1.UploadHeader{Labels: badLabels}, ten, 4)...)
	})
	add(ReasonLabelsInvalid, codes.InvalidArgument, "ListObjects", func(t *testing.T, w *world) answer {
		_, err := w.e.admin.ListObjects(ctxT(t), &registryv1.ListObjectsRequest{Labels: badLabels})
		return errAnswer(err)
	})
	tooBig := make([]byte, testLimits.MaxObjectBytes+1)
	add(ReasonObjectTooLarge, codes.ResourceExhausted, "Put", func(t *testing.T, w *world) answer {
		_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: tooBig})
		return errAnswer(err)
	})
	add(ReasonObjectTooLarge, codes.ResourceExhausted, "Upload", func(t *testing.T, w *world) answer {
		return upload(w, t, headerMsg(&registryv1.UploadHeader{Size: int64(len(tooBig))}))
	})
	add(ReasonMessageTooLarge, codes.ResourceExhausted, "Resolve", func(t *testing.T, w *world) answer {
		h := w.e.put(t, string(make([]byte, 200)), "")
		_, err := w.e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: h})
		return errAnswer(err)
	})

	// A limit reached by a call that pins: full is a lease, and obj an
	// unpinned object, such that pinning obj with full passes the limit.
	limited := map[string]func(t *testing.T, w *world) (full *leaseClient, obj []byte){
		ReasonPinnedBytesLimit: func(t *testing.T, w *world) (*leaseClient, []byte) {
			return w.e.openLease(t, "full", 0), make([]byte, 50) // 21 + 50 > 64
		},
		ReasonLeasePinLimit: func(t *testing.T, w *world) (*leaseClient, []byte) {
			lc := w.e.openLease(t, "full", 0)
			for i := range walkLimits().MaxPinsPerLease {
				w.e.put(t, string(rune('a'+i)), lc.id)
			}
			return lc, []byte("one more")
		},
	}
	for reason, setup := range limited {
		add(reason, codes.ResourceExhausted, "Put", func(t *testing.T, w *world) answer {
			lc, obj := setup(t, w)
			_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: obj, LeaseId: lc.id})
			return errAnswer(err)
		})
		add(reason, codes.ResourceExhausted, "Upload", func(t *testing.T, w *world) answer {
			lc, obj := setup(t, w)
			return upload(w, t, chunked(&registryv1.UploadHeader{LeaseId: lc.id}, obj, 16)...)
		})
		add(reason, codes.ResourceExhausted, "Resolve", func(t *testing.T, w *world) answer {
			lc, obj := setup(t, w)
			_, err := w.e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: w.e.put(t, string(obj), ""), LeaseId: lc.id})
			return errAnswer(err)
		})
		add(reason, codes.ResourceExhausted, "Download", func(t *testing.T, w *world) answer {
			lc, obj := setup(t, w)
			return firstRecv(w.e.rs.Download(ctxT(t), &registryv1.DownloadRequest{Handle: w.e.put(t, string(obj), ""), LeaseId: lc.id}))
		})
		add(reason, codes.ResourceExhausted, "Lease pin", func(t *testing.T, w *world) answer {
			lc, obj := setup(t, w)
			return resultAnswer(lc.pin(w.e.put(t, string(obj), ""))[0])
		})
	}
	add(ReasonLeaseLimit, codes.ResourceExhausted, "Lease open", func(t *testing.T, w *world) answer {
		for range walkLimits().MaxLeases - 1 { // the bystander holds one
			w.e.openLease(t, "filler", 0)
		}
		return leaseAnswer(w.e.leaseStream(t).try(openReq("")))
	})
	// Ownership: alice's lease, used by bob.
	alices := func(t *testing.T, w *world) *leaseClient {
		return w.e.openLeaseCtx(t, asIdentity(t, "alice"), "alice's", time.Minute)
	}
	add(ReasonLeaseNotOwned, codes.PermissionDenied, "Lease open", func(t *testing.T, w *world) answer {
		lc := alices(t, w)
		return leaseAnswer(w.e.leaseStreamCtx(t, asIdentity(t, "bob")).try(openReq(lc.id)))
	})
	add(ReasonLeaseNotOwned, codes.PermissionDenied, "Put", func(t *testing.T, w *world) answer {
		_, err := w.e.rs.Put(asIdentity(t, "bob"), &registryv1.PutRequest{Data: ten, LeaseId: alices(t, w).id})
		return errAnswer(err)
	})
	add(ReasonLeaseNotOwned, codes.PermissionDenied, "Resolve", func(t *testing.T, w *world) answer {
		_, err := w.e.rs.Resolve(asIdentity(t, "bob"), &registryv1.ResolveRequest{Handle: w.weak, LeaseId: alices(t, w).id})
		return errAnswer(err)
	})
	add(ReasonLeaseNotOwned, codes.PermissionDenied, "Download", func(t *testing.T, w *world) answer {
		return firstRecv(w.e.rs.Download(asIdentity(t, "bob"), &registryv1.DownloadRequest{Handle: w.weak, LeaseId: alices(t, w).id}))
	})
	add(ReasonLeaseNotOwned, codes.PermissionDenied, "Upload", func(t *testing.T, w *world) answer {
		_, err := w.e.uploadMsgs(asIdentity(t, "bob"), chunked(&registryv1.UploadHeader{LeaseId: alices(t, w).id}, ten, 4)...)
		return errAnswer(err)
	})
	add(ReasonIdentityLeaseLimit, codes.ResourceExhausted, "Lease open", func(t *testing.T, w *world) answer {
		// Alice's leases wait detached, within their grace, so that their
		// streams leave her stream limit (as many as her leases) free.
		for range walkLimits().MaxLeasesPerIdentity {
			alices(t, w).cancel()
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := leaseAnswer(w.e.leaseStreamCtx(t, asIdentity(t, "alice")).try(openReq("")))
			if got.reason != ReasonIdentityStreamLimit || time.Now().After(deadline) {
				return got
			}
		}
	})
	// Alice's lease pinning 40 bytes: under the global 64 with the
	// bystander's 21, over alice's 32.
	over := make([]byte, 40)
	add(ReasonIdentityPinnedBytesLimit, codes.ResourceExhausted, "Put", func(t *testing.T, w *world) answer {
		_, err := w.e.rs.Put(asIdentity(t, "alice"), &registryv1.PutRequest{Data: over, LeaseId: alices(t, w).id})
		return errAnswer(err)
	})
	add(ReasonIdentityPinnedBytesLimit, codes.ResourceExhausted, "Upload", func(t *testing.T, w *world) answer {
		_, err := w.e.uploadMsgs(asIdentity(t, "alice"), chunked(&registryv1.UploadHeader{LeaseId: alices(t, w).id}, over, 16)...)
		return errAnswer(err)
	})
	add(ReasonIdentityPinnedBytesLimit, codes.ResourceExhausted, "Resolve", func(t *testing.T, w *world) answer {
		h := w.e.put(t, string(over), "")
		_, err := w.e.rs.Resolve(asIdentity(t, "alice"), &registryv1.ResolveRequest{Handle: h, LeaseId: alices(t, w).id})
		return errAnswer(err)
	})
	add(ReasonIdentityPinnedBytesLimit, codes.ResourceExhausted, "Download", func(t *testing.T, w *world) answer {
		h := w.e.put(t, string(over), "")
		return firstRecv(w.e.rs.Download(asIdentity(t, "alice"), &registryv1.DownloadRequest{Handle: h, LeaseId: alices(t, w).id}))
	})
	add(ReasonIdentityPinnedBytesLimit, codes.ResourceExhausted, "Lease pin", func(t *testing.T, w *world) answer {
		h := w.e.put(t, string(over), "")
		return resultAnswer(alices(t, w).pin(h)[0])
	})
	add(ReasonLeaseNotOpen, codes.FailedPrecondition, "Lease", func(t *testing.T, w *world) answer {
		return leaseAnswer(w.e.leaseStream(t).try(pinReq(w.weak)))
	})
	add(ReasonLeaseAlreadyOpen, codes.FailedPrecondition, "Lease open", func(t *testing.T, w *world) answer {
		return leaseAnswer(w.e.openLease(t, "twice", 0).try(openReq("")))
	})
	add(ReasonRequestEmpty, codes.InvalidArgument, "Lease", func(t *testing.T, w *world) answer {
		return leaseAnswer(w.bystander.try(&registryv1.LeaseRequest{}))
	})
	add(ReasonRequestEmpty, codes.InvalidArgument, "Watch", func(t *testing.T, w *world) answer {
		return firstRecv(w.e.rs.Watch(ctxT(t), &registryv1.WatchRequest{}))
	})
	add(ReasonRequestEmpty, codes.InvalidArgument, "Upload", func(t *testing.T, w *world) answer {
		return upload(w, t, headerMsg(&registryv1.UploadHeader{Size: 10}), &registryv1.UploadRequest{})
	})
	many := func(w *world) []string {
		hs := make([]string, MaxHandlesPerRequest+1)
		for i := range hs {
			hs[i] = w.weak
		}
		return hs
	}
	add(ReasonTooManyHandles, codes.InvalidArgument, "Lease pin", func(t *testing.T, w *world) answer {
		return leaseAnswer(w.bystander.try(pinReq(many(w)...)))
	})
	add(ReasonTooManyHandles, codes.InvalidArgument, "Lease unpin", func(t *testing.T, w *world) answer {
		return leaseAnswer(w.bystander.try(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Unpin{Unpin: &registryv1.UnpinHandles{Handles: many(w)}}}))
	})
	add(ReasonTooManyHandles, codes.InvalidArgument, "Watch", func(t *testing.T, w *world) answer {
		return firstRecv(w.e.rs.Watch(ctxT(t), &registryv1.WatchRequest{Handles: many(w)}))
	})
	add(ReasonPageToken, codes.InvalidArgument, "ListObjects", func(t *testing.T, w *world) answer {
		_, err := w.e.admin.ListObjects(ctxT(t), &registryv1.ListObjectsRequest{PageToken: "???"})
		return errAnswer(err)
	})
	// A watcher that reads nothing while far more events happen than its
	// buffer and the transport hold.
	flood := func(t *testing.T, w *world, recv func() error) answer {
		id, err := w.e.reg.Parse(w.pinned)
		if err != nil {
			t.Fatal(err)
		}
		lid, ls := w.e.codec.New(handle.Lease)
		by := registry.Holder{ID: lid, LeaseID: ls}
		for range 50000 {
			w.e.reg.Pin(id, by)
			w.e.reg.Unpin(id, by)
		}
		for range 200000 {
			if err := recv(); err != nil {
				return errAnswer(err)
			}
		}
		return answer{}
	}
	// fillWatchers opens watches until walkLimits' MaxWatchers are open.
	fillWatchers := func(t *testing.T, w *world) {
		for range walkLimits().MaxWatchers {
			s, err := w.e.admin.WatchEvents(ctxT(t), &registryv1.WatchEventsRequest{})
			if err == nil {
				_, err = s.Header() // in place
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	add(ReasonUploadBytesLimit, codes.ResourceExhausted, "Upload", func(t *testing.T, w *world) answer {
		return upload(w, t, chunked(&registryv1.UploadHeader{}, make([]byte, walkLimits().MaxUploadBytes+1), 16)...)
	})
	add(ReasonWatcherLimit, codes.ResourceExhausted, "Watch", func(t *testing.T, w *world) answer {
		fillWatchers(t, w)
		return firstRecv(w.e.rs.Watch(ctxT(t), &registryv1.WatchRequest{Handles: []string{w.pinned}}))
	})
	add(ReasonWatcherLimit, codes.ResourceExhausted, "WatchEvents", func(t *testing.T, w *world) answer {
		fillWatchers(t, w)
		return firstRecv(w.e.admin.WatchEvents(ctxT(t), &registryv1.WatchEventsRequest{}))
	})
	add(ReasonWatchTooSlow, codes.ResourceExhausted, "Watch", func(t *testing.T, w *world) answer {
		s, err := w.e.rs.Watch(ctxT(t), &registryv1.WatchRequest{Handles: []string{w.pinned}})
		if err != nil {
			t.Fatal(err)
		}
		return flood(t, w, func() error { _, err := s.Recv(); return err })
	})
	add(ReasonWatchTooSlow, codes.ResourceExhausted, "WatchEvents", func(t *testing.T, w *world) answer {
		s, err := w.e.admin.WatchEvents(ctxT(t), &registryv1.WatchEventsRequest{})
		if err == nil {
			_, err = s.Header() // in place
		}
		if err != nil {
			t.Fatal(err)
		}
		return flood(t, w, func() error { _, err := s.Recv(); return err })
	})
	add(ReasonWatchCompacted, codes.OutOfRange, "Watch", func(t *testing.T, w *world) answer {
		return firstRecv(w.e.rs.Watch(ctxT(t), &registryv1.WatchRequest{Handles: []string{w.weak}, FromSequence: 1 << 40}))
	})
	add(ReasonWatchCompacted, codes.OutOfRange, "WatchEvents", func(t *testing.T, w *world) answer {
		return firstRecv(w.e.admin.WatchEvents(ctxT(t), &registryv1.WatchEventsRequest{FromSequence: 1 << 40}))
	})
	stopping := func(w *world) {
		w.e.leases.Shutdown()
		w.e.reg.Close()
	}
	add(ReasonShuttingDown, codes.Unavailable, "Put", func(t *testing.T, w *world) answer {
		stopping(w)
		_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: ten})
		return errAnswer(err)
	})
	add(ReasonShuttingDown, codes.Unavailable, "Upload", func(t *testing.T, w *world) answer {
		stopping(w)
		return upload(w, t, chunked(&registryv1.UploadHeader{}, ten, 4)...)
	})
	add(ReasonShuttingDown, codes.Unavailable, "Lease open", func(t *testing.T, w *world) answer {
		stopping(w)
		return leaseAnswer(w.e.leaseStream(t).try(openReq("")))
	})
	add(ReasonShuttingDown, codes.Unavailable, "Watch", func(t *testing.T, w *world) answer {
		stopping(w)
		return firstRecv(w.e.rs.Watch(ctxT(t), &registryv1.WatchRequest{Handles: []string{w.weak}}))
	})
	add(ReasonShuttingDown, codes.Unavailable, "WatchEvents", func(t *testing.T, w *world) answer {
		stopping(w)
		return firstRecv(w.e.admin.WatchEvents(ctxT(t), &registryv1.WatchEventsRequest{}))
	})
	add(ReasonUploadNoHeader, codes.InvalidArgument, "Upload", func(t *testing.T, w *world) answer {
		return upload(w, t, chunkMsg(ten))
	})
	add(ReasonUploadSize, codes.InvalidArgument, "Upload", func(t *testing.T, w *world) answer {
		return upload(w, t, headerMsg(&registryv1.UploadHeader{Size: 9}), chunkMsg(ten))
	})
	add(ReasonUploadNoTrailer, codes.InvalidArgument, "Upload", func(t *testing.T, w *world) answer {
		return upload(w, t, headerMsg(&registryv1.UploadHeader{Size: 10}), chunkMsg(ten))
	})
	add(ReasonChecksum, codes.DataLoss, "Upload", func(t *testing.T, w *world) answer {
		return upload(w, t, headerMsg(&registryv1.UploadHeader{Size: 10}), chunkMsg(ten), trailerMsg(crc32c(ten)+1))
	})
	add(ReasonFieldInvalid, codes.InvalidArgument, "Put", func(t *testing.T, w *world) answer {
		_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: ten, Linger: durationpb.New(-time.Second)})
		return errAnswer(err)
	})
	add(ReasonFieldInvalid, codes.InvalidArgument, "Upload", func(t *testing.T, w *world) answer {
		return upload(w, t, headerMsg(&registryv1.UploadHeader{Size: 10}), chunkMsg(nil))
	})
	add(ReasonFieldInvalid, codes.InvalidArgument, "Download", func(t *testing.T, w *world) answer {
		return firstRecv(w.e.rs.Download(ctxT(t), &registryv1.DownloadRequest{Handle: w.weak, ChunkSize: -1}))
	})
	add(ReasonFieldInvalid, codes.InvalidArgument, "ListObjects", func(t *testing.T, w *world) answer {
		_, err := w.e.admin.ListObjects(ctxT(t), &registryv1.ListObjectsRequest{State: 42})
		return errAnswer(err)
	})
	add(ReasonFieldInvalid, codes.InvalidArgument, "WatchEvents", func(t *testing.T, w *world) answer {
		return firstRecv(w.e.admin.WatchEvents(ctxT(t), &registryv1.WatchEventsRequest{Kinds: []registryv1.EventKind{42}}))
	})
	add(ReasonRequestMalformed, codes.InvalidArgument, "every RPC", everyRPCMalformed)
	// Authentication's refusals, on a registryd with an auth file.
	add(ReasonCredentialsMissing, codes.Unauthenticated, "every RPC", everyRPCWithAuth(true, true, ""))
	add(ReasonCredentialsInvalid, codes.Unauthenticated, "every RPC", everyRPCWithAuth(true, true, "guess"))
	add(ReasonTransportInsecure, codes.Unauthenticated, "every RPC", everyRPCWithAuth(false, true, adminToken))
	add(ReasonRoleForbidden, codes.PermissionDenied, "every RPC", everyRPCWithAuth(true, true, "role"))
	addIdentityLimits(add)
	addBatchProvokers(add)
	return p
}

// everyRPCMalformed sends bytes that decode as no message to every method
// of both services, and returns their common answer, or the first that
// differs.
func everyRPCMalformed(t *testing.T, w *world) answer {
	garbage := []byte{0xff, 0xff, 0xff}
	var first *answer
	check := func(method string, got answer) {
		if first == nil {
			first = &got
		}
		if got != *first {
			t.Errorf("%s answered %v, %s answered %v", method, got, "the first", *first)
		}
	}
	for _, m := range serviceMethods() {
		check(m.name, errAnswer(m.send(ctxT(t), w.e.conn, garbage)))
	}
	return *first
}

// otherNode is a genuine handle of kind k issued by another node that
// shares this one's key: live, in the walk's cluster (walkPeers).
func (w *world) otherNode(k handle.Kind) string { return w.nodeHandle(k, w.e.codec.Node()+1) }

// goneNode is a genuine handle of kind k issued by a node of the walk's
// cluster that is not live now (walkPeers).
func (w *world) goneNode(k handle.Kind) string { return w.nodeHandle(k, w.e.codec.Node()+2) }

func (w *world) nodeHandle(k handle.Kind, node uint16) string {
	c, err := handle.NewCodec(handle.Config{Key: testKey, Node: node, Epoch: w.e.codec.Epoch()})
	if err != nil {
		panic(err)
	}
	_, h := c.New(k)
	return h
}

// fakePeers is a cluster as a membership would see it: the nodes in the
// map are live.
type fakePeers map[uint16]fakePeer

type fakePeer struct {
	addr  string
	epoch uint64
}

func (p fakePeers) Lookup(node uint16) (string, uint64, bool) {
	peer, ok := p[node]
	return peer.addr, peer.epoch, ok
}

// walkPeers is the walk's cluster, seen from node 0 (the test codec's):
// node 1 is live, node 2 is not.
var walkPeers = fakePeers{1: {addr: "127.0.0.1:7601"}}

// otherRun is a genuine handle of kind k issued by an earlier run.
func (w *world) otherRun(k handle.Kind) string {
	c, err := handle.NewCodec(handle.Config{Key: testKey, Node: w.e.codec.Node(), Epoch: w.e.codec.Epoch() - 1})
	if err != nil {
		panic(err)
	}
	_, h := c.New(k)
	return h
}

// TestREADMEErrorTableIsTrue reads README.md's table of errors and
// provokes each row against a real server: each listed RPC answers with
// the listed code and reason. The table must name every reason of the
// API's enum, and every case the test knows how to provoke.
func TestREADMEErrorTableIsTrue(t *testing.T) {
	rows := readErrorTable(t)
	all := provokers()
	used := map[string]bool{}
	listed := map[string]bool{}
	for _, row := range rows {
		listed[row.reason] = true
		if _, ok := registryv1.ErrorReason_value[row.reason]; !ok {
			t.Errorf("README lists %s, which is not an ErrorReason", row.reason)
			continue
		}
		if why, ok := notProvoked[row.reason]; ok {
			t.Logf("%s: not provoked here: %s", row.reason, why)
			continue
		}
		for _, rpc := range row.rpcs {
			key := row.reason + " " + row.code.String() + " " + rpc
			pr, ok := all[key]
			if !ok {
				t.Errorf("README: %s is %v on %s, and the test cannot provoke it", row.reason, row.code, rpc)
				continue
			}
			used[key] = true
			t.Run(strings.ReplaceAll(key, " ", "_"), func(t *testing.T) {
				w := newWorldWith(t, envOptions{limits: walkLimits(), watchBuffer: 4, peers: walkPeers})
				if got, want := pr.provoke(t, w), (answer{row.code, row.reason}); got != want {
					t.Errorf("%s answered %v %q, README says %v %q", rpc, got.code, got.reason, want.code, want.reason)
				}
			})
		}
	}
	for n, name := range registryv1.ErrorReason_name {
		if n != 0 && !listed[name] {
			t.Errorf("README's table lacks %s", name)
		}
	}
	// A case the table does not list must not give that answer, or the
	// table is incomplete.
	var unlisted []string
	for key := range all {
		if !used[key] {
			unlisted = append(unlisted, key)
		}
	}
	sort.Strings(unlisted)
	for _, key := range unlisted {
		pr := all[key]
		t.Run("unlisted_"+strings.ReplaceAll(key, " ", "_"), func(t *testing.T) {
			w := newWorldWith(t, envOptions{limits: walkLimits(), watchBuffer: 4, peers: walkPeers})
			if got := pr.provoke(t, w); got == pr.want {
				t.Errorf("the server answers %s, and README's table does not say so", key)
			}
		})
	}
}

var testKey = bytes.Clone([]byte("0123456789abcdef0123456789abcdef"))

// badObjectHandles gives, for each reason a handle alone can provoke, how
// to make such a handle in w.
func badObjectHandles() map[string]func(w *world) string {
	return map[string]func(w *world) string{
		ReasonHandleMalformed: func(w *world) string {
			h := []byte(w.weak)
			h[len("obj_")] = 'B' // the format version's character
			return string(h)
		},
		ReasonHandleUnknown: func(w *world) string {
			h := []byte(w.weak)
			if h[len(h)-1] == 'A' { // the last character holds MAC bits only
				h[len(h)-1] = 'B'
			} else {
				h[len(h)-1] = 'A'
			}
			return string(h)
		},
		ReasonHandleForeignNode: func(w *world) string { return w.otherNode(handle.Object) },
		ReasonNodeUnavailable:   func(w *world) string { return w.goneNode(handle.Object) },
		ReasonRestarted:         func(w *world) string { return w.otherRun(handle.Object) },
		ReasonCollected:         func(w *world) string { return w.collected },
		ReasonDeleted:           func(w *world) string { return w.deleted },
	}
}
