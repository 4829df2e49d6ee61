package server

import (
	"strconv"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// TestWatchFromAnotherRunsSequenceIsARestart: sequences start again with
// every run, so resuming with another epoch's sequence is refused as a
// restart, and events carry their epoch so that clients can say which.
func TestWatchFromAnotherRunsSequenceIsARestart(t *testing.T) {
	e := newEnv(t, nil)
	lc := e.openLease(t, "keeper", 0)
	h := e.put(t, "x", lc.id)
	epoch := e.reg.Epoch()

	stream, err := e.admin.WatchEvents(ctxT(t), &registryv1.WatchEventsRequest{FromSequence: 1, Epoch: epoch})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := stream.Recv()
	if err != nil || ev.GetEvent().GetSequence() != 1 || ev.GetEvent().GetEpoch() != epoch {
		t.Fatalf("resume in this run's epoch: %v, %v", ev, err)
	}

	other := strconv.FormatUint(epoch-1, 10)
	for name, call := range map[string]func() error{
		"WatchEvents": func() error {
			s, err := e.admin.WatchEvents(ctxT(t), &registryv1.WatchEventsRequest{FromSequence: 1, Epoch: epoch - 1})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		},
		"Watch": func() error {
			s, err := e.rs.Watch(ctxT(t), &registryv1.WatchRequest{Handles: []string{h}, FromSequence: 1, Epoch: epoch - 1})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			info := wantStatusInfo(t, call(), codes.NotFound, ReasonRestarted)
			if info.GetMetadata()["handle_epoch"] != other || info.GetMetadata()["current_epoch"] != strconv.FormatUint(epoch, 10) {
				t.Fatalf("metadata %v", info.GetMetadata())
			}
		})
	}
	st, err := e.admin.GetStats(ctxT(t), &registryv1.GetStatsRequest{})
	if err != nil || st.GetWatchers() != 1 {
		t.Fatalf("refused watches left watchers behind: %d, %v", st.GetWatchers(), err)
	}
}

// wantStatusInfo is wantStatus, returning the ErrorInfo.
func wantStatusInfo(t testing.TB, err error, code codes.Code, reason string) *errdetails.ErrorInfo {
	t.Helper()
	wantStatus(t, err, code, reason)
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	t.Fatal("no ErrorInfo")
	return nil
}
