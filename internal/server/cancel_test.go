package server

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/testlog"
)

// TestCancelledCallIsCancelledNotAnError: a client that cancels a Watch,
// a WatchEvents or a Lease stream ends a call whose status is CANCELLED,
// reason REQUEST_CANCELLED, and whose request line is logged at INFO: a
// client's choice is not a server error (it was Unknown, at ERROR).
func TestCancelledCallIsCancelledNotAnError(t *testing.T) {
	var logs testlog.Buffer
	e := newEnvWith(t, envOptions{logger: slog.New(slog.NewTextHandler(&logs, nil))})
	h := e.put(t, "watched", "")
	calls := map[string]func(ctx context.Context) error{
		"Watch": func(ctx context.Context) error {
			s, err := e.rs.Watch(ctx, &registryv1.WatchRequest{Handles: []string{h}})
			if err == nil {
				_, err = s.Recv() // CURRENT: the handler is waiting for events
			}
			return err
		},
		"WatchEvents": func(ctx context.Context) error {
			s, err := e.admin.WatchEvents(ctx, &registryv1.WatchEventsRequest{})
			if err == nil {
				_, err = s.Header() // the watch is in place
			}
			return err
		},
		"Lease": func(ctx context.Context) error {
			s, err := e.rs.Lease(ctx)
			if err != nil {
				return err
			}
			if err := s.Send(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Open{Open: &registryv1.OpenLease{}}}); err != nil {
				return err
			}
			_, err = s.Recv() // opened: the handler waits for requests
			return err
		},
	}
	for method, start := range calls {
		t.Run(method, func(t *testing.T) {
			ctx, cancel := context.WithCancel(ctxT(t))
			if err := start(ctx); err != nil {
				t.Fatal(err)
			}
			cancel()
			line := waitLogLine(t, &logs, "grpc.method="+method+" ")
			for _, want := range []string{"level=INFO", "grpc.code=Canceled"} {
				if !strings.Contains(line, want) {
					t.Errorf("request line lacks %q: %s", want, line)
				}
			}
		})
	}
}

// TestHandlerReturnsCancelledStatus: a watch handler whose call ends
// returns the CANCELLED status itself, not the raw context error.
func TestHandlerReturnsCancelledStatus(t *testing.T) {
	e := newEnv(t, nil)
	h := e.put(t, "watched", "")
	svc := &registryService{reg: e.reg, leases: e.leases}
	for _, tt := range []struct {
		name   string
		cancel func() context.Context
		code   codes.Code
	}{
		{"cancelled", func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, codes.Canceled},
		{"deadline", func() context.Context {
			ctx, cancel := context.WithDeadline(context.Background(), time.Now())
			t.Cleanup(cancel)
			return ctx
		}, codes.DeadlineExceeded},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := svc.Watch(&registryv1.WatchRequest{Handles: []string{h}}, &fakeWatch{ctx: tt.cancel()})
			st, ok := status.FromError(err)
			if !ok || st.Code() != tt.code || reasonOf(st) != ReasonRequestCancelled {
				t.Fatalf("Watch returned %v (%T), want %v %s", err, err, tt.code, ReasonRequestCancelled)
			}
		})
	}
}

// waitLogLine waits for the request line that contains s.
func waitLogLine(t *testing.T, logs *testlog.Buffer, s string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "finished call") && strings.Contains(l, s) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no request line with %q:\n%s", s, logs.String())
		}
		time.Sleep(time.Millisecond)
	}
}

// fakeWatch is a Watch stream with a given context that drops what it is
// sent, without gRPC.
type fakeWatch struct {
	grpc.ServerStream // nil: Watch calls only the methods below
	ctx               context.Context
}

func (f *fakeWatch) Context() context.Context             { return f.ctx }
func (f *fakeWatch) SendHeader(metadata.MD) error         { return nil }
func (f *fakeWatch) Send(*registryv1.WatchResponse) error { return nil }
