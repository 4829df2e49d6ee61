package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// Lease pins objects for as long as it is open. It is one gRPC stream to
// registryd; if the connection drops, the lease reconnects with backoff
// and resumes within its grace, keeping every pin. When it cannot — the
// grace ran out, an operator revoked it, registryd restarted — Done is
// closed and Err says why.
//
// A Lease of a cluster's client is a set of per-node leases instead: see
// LostPins.
//
// A Lease is safe for concurrent use.
type Lease struct {
	c     *Client
	cl    *clusterLease // a cluster's lease: the methods go to its parts
	name  string
	onEnd func(error)
	id    string        // fixed at open
	grace time.Duration // granted by the server; 0: no resume
	retry *backoff      // paces resumes; owned by run's goroutine

	// sendMu serialises Send on the stream, as gRPC requires. Lock order:
	// mu, then sendMu.
	sendMu sync.Mutex

	mu       sync.Mutex // guards the fields below
	stream   registryv1.RegistryService_LeaseClient
	cancel   context.CancelFunc // ends the current stream
	nextID   uint64
	pending  map[uint64]*pendingCall // sent, not yet answered; re-sent after a resume
	closing  bool                    // Close was called
	resumes  int
	done     chan struct{}
	err      error // why it ended; nil after a clean Close
	finished bool
}

type pendingCall struct {
	req  *registryv1.LeaseRequest
	resp chan *registryv1.LeaseResponse // buffered; nil is sent when the lease ends
	err  error                          // set before nil is sent when the request was refused for good
	// on is the stream req was last sent on; guarded by Lease.mu.
	on registryv1.RegistryService_LeaseClient
}

// LeaseOption configures a lease.
type LeaseOption func(*leaseConfig)

type leaseConfig struct {
	name   string
	grace  time.Duration
	onEnd  func(error)
	onLost func(LostPins)
}

// LeaseName names the lease's holder, as operators see it in
// 'registryctl leases ls' and 'inspect'.
func LeaseName(name string) LeaseOption { return func(c *leaseConfig) { c.name = name } }

// Grace asks registryd to keep the lease, with its pins, this long after
// its connection drops, so that the client can reconnect and resume it.
// The server caps it (--max-grace). Without a grace a dropped connection
// releases the lease's pins at once, and the lease reports ErrLeaseLost.
func Grace(d time.Duration) LeaseOption { return func(c *leaseConfig) { c.grace = d } }

// OnEnd calls f, on a goroutine of its own, when the lease ends other than
// by Close; its argument is what Err returns. A cluster's lease does not
// end but by Close: see OnLostPins.
func OnEnd(f func(error)) LeaseOption { return func(c *leaseConfig) { c.onEnd = f } }

// Lease opens a lease. ctx bounds the opening only; the lease lives until
// Close, or until it is lost or revoked. A cluster's client opens nothing
// yet: each node's part opens when first needed, and the Lease lives
// until Close.
func (c *Client) Lease(ctx context.Context, opts ...LeaseOption) (*Lease, error) {
	var cfg leaseConfig
	for _, o := range opts {
		o(&cfg)
	}
	if c.cl != nil {
		return c.clusterLease(cfg), nil
	}
	l := &Lease{c: c, name: cfg.name, onEnd: cfg.onEnd, pending: make(map[uint64]*pendingCall), done: make(chan struct{}),
		retry: newBackoff(c.opts.backoff)}
	stream, cancel, opened, err := l.open(ctx, "", cfg.grace, false)
	if err != nil {
		return nil, err
	}
	l.retry.up()
	l.id, l.grace = opened.GetLeaseId(), opened.GetGrace().AsDuration()
	l.stream, l.cancel = stream, cancel
	go l.run(stream)
	return l, nil
}

// ID returns the lease's id ("lse_..."); "" for a cluster's lease, whose
// parts have an id each (NodeLeases).
func (l *Lease) ID() string { return l.id }

// NodeLeases returns, for a cluster's lease, the id of its part on each
// node where one is open; nil for a lease of a single address.
func (l *Lease) NodeLeases() map[uint16]string {
	if l.cl == nil {
		return nil
	}
	return l.cl.nodeLeases()
}

// GraceGranted returns the grace the server granted; for a cluster's
// lease, the grace asked for, which each node caps for its part.
func (l *Lease) GraceGranted() time.Duration { return l.grace }

// Done is closed when the lease has ended, by Close or otherwise.
func (l *Lease) Done() <-chan struct{} { return l.done }

// Err returns nil while the lease is live or after a clean Close, and
// otherwise a *LeaseError matching ErrLeaseLost, ErrLeaseRevoked or
// ErrRestarted.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Resumes returns how many times the lease has been resumed after its
// connection dropped.
func (l *Lease) Resumes() int {
	if l.cl != nil {
		return l.cl.resumes()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.resumes
}

// maxHandlesPerRequest is the server's cap on the handles of one pin or
// unpin request (server.MaxHandlesPerRequest): larger batches go as
// several requests, one after another.
const maxHandlesPerRequest = 1000

// Pin pins handles under the lease and returns a result per handle, in
// order. Pinning is idempotent; a handle that cannot be pinned (collected,
// unknown, over a limit) fails alone, with an error in its result. More
// than a thousand handles go as several requests, in order; if one of them
// fails, the results of those before it are returned with the error.
//
// A cluster's lease pins each node's handles on its part there, all at
// once; a handle of a node that is not live, or whose part cannot open,
// fails alone.
func (l *Lease) Pin(ctx context.Context, handles ...string) ([]PinResult, error) {
	if l.cl != nil {
		return l.cl.pins(ctx, handles, func(ctx context.Context, part *Lease, hs []string) ([]PinResult, error) {
			return part.Pin(ctx, hs...)
		})
	}
	return l.batches(ctx, handles, func(hs []string) *registryv1.LeaseRequest {
		return &registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Pin{Pin: &registryv1.PinHandles{Handles: hs}}}
	}, (*registryv1.LeaseResponse).GetPinned)
}

// Unpin releases this lease's pins on handles and returns a result per
// handle. An object no lease pins any more becomes weak: the next garbage
// collection may take it. Large batches go as Pin's do.
func (l *Lease) Unpin(ctx context.Context, handles ...string) ([]PinResult, error) {
	return l.UnpinWithHandoff(ctx, 0, handles...)
}

// batches sends handles in requests of at most maxHandlesPerRequest, one
// after another, and returns their results merged in order.
func (l *Lease) batches(ctx context.Context, handles []string, req func([]string) *registryv1.LeaseRequest,
	results func(*registryv1.LeaseResponse) *registryv1.PinResults) ([]PinResult, error) {
	out := make([]PinResult, 0, len(handles))
	for start := 0; start == 0 || start < len(handles); start += maxHandlesPerRequest {
		resp, err := l.call(ctx, req(handles[start:min(start+maxHandlesPerRequest, len(handles))]))
		if err != nil {
			if start == 0 {
				return nil, err
			}
			return out, err
		}
		out = append(out, resultsFrom(results(resp))...)
	}
	return out, nil
}

// Resolve resolves the object handle names and pins it with l as one
// step: it returns the bytes and l pins the object, or it returns an error
// and nothing is pinned; there is no moment between the check and the pin
// in which the object could be collected. The Info it returns is the
// object's after the pin.
func (l *Lease) Resolve(ctx context.Context, handle string) ([]byte, Info, error) {
	if l.cl != nil {
		return l.cl.resolve(ctx, handle)
	}
	return l.c.resolve(ctx, handle, l.ID())
}

// UnpinWithHandoff is Unpin with a hand-off: each object l lets go of stays
// strongly held (LINGERING) at least handoff longer, capped by the server,
// so that a process given its handle has that long to pin it.
func (l *Lease) UnpinWithHandoff(ctx context.Context, handoff time.Duration, handles ...string) ([]PinResult, error) {
	if l.cl != nil {
		return l.cl.pins(ctx, handles, func(ctx context.Context, part *Lease, hs []string) ([]PinResult, error) {
			return part.UnpinWithHandoff(ctx, handoff, hs...)
		})
	}
	return l.batches(ctx, handles, func(hs []string) *registryv1.LeaseRequest {
		return &registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Unpin{Unpin: &registryv1.UnpinHandles{Handles: hs, Handoff: durationOrNil(handoff)}}}
	}, (*registryv1.LeaseResponse).GetUnpinned)
}

// Close ends the lease and releases its pins; it returns how many. After
// the lease has ended otherwise, Close returns what Err returns.
func (l *Lease) Close(ctx context.Context) (int, error) {
	return l.CloseWithHandoff(ctx, 0)
}

// CloseWithHandoff is Close with a hand-off for every object l pins, as in
// UnpinWithHandoff: a producer can pass handles on and leave at once.
func (l *Lease) CloseWithHandoff(ctx context.Context, handoff time.Duration) (int, error) {
	if l.cl != nil {
		return l.cl.close(ctx, handoff, l.done)
	}
	l.mu.Lock()
	if l.finished {
		err := l.err
		l.mu.Unlock()
		return 0, err
	}
	l.closing = true
	l.mu.Unlock()
	resp, err := l.call(ctx, &registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Close{Close: &registryv1.CloseLease{Handoff: durationOrNil(handoff)}}})
	if err != nil {
		if errors.Is(err, errClosed) { // ended cleanly while we asked
			return 0, nil
		}
		if ctx.Err() != nil {
			l.finish(ctx.Err()) // give up: cut the stream; the server releases the lease or keeps it for its grace
		}
		return 0, err
	}
	return int(resp.GetClosed().GetReleased()), nil
}

// call sends req and waits for its answer, across resumes. A request
// answered with a RequestError failed for good and changed nothing: it
// returns that error, an *Error like a unary call's, and is never sent
// again.
func (l *Lease) call(ctx context.Context, req *registryv1.LeaseRequest) (*registryv1.LeaseResponse, error) {
	l.mu.Lock()
	if l.finished {
		l.mu.Unlock()
		return nil, l.endErr()
	}
	l.nextID++
	req.RequestId = l.nextID
	stream := l.stream
	pc := &pendingCall{req: req, resp: make(chan *registryv1.LeaseResponse, 1), on: stream}
	l.pending[req.RequestId] = pc
	l.mu.Unlock()

	// A failed Send needs no handling here: the reader sees the stream
	// break, and after a resume every pending request is sent again.
	l.send(stream, req)

	select {
	case resp := <-pc.resp:
		switch {
		case resp == nil && pc.err != nil:
			return nil, pc.err
		case resp == nil:
			return nil, l.endErr()
		case resp.GetError() != nil:
			return nil, requestError(resp.GetError())
		}
		return resp, nil
	case <-ctx.Done():
		l.mu.Lock()
		delete(l.pending, req.RequestId)
		l.mu.Unlock()
		return nil, ctx.Err()
	}
}

func (l *Lease) send(stream registryv1.RegistryService_LeaseClient, req *registryv1.LeaseRequest) {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	_ = stream.Send(req)
}

// endErr is what calls on an ended lease return.
func (l *Lease) endErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		return errClosed
	}
	return l.err
}

// open opens (or, with resume, resumes) the lease on a new stream. The
// stream outlives ctx, which bounds the opening only.
func (l *Lease) open(ctx context.Context, resume string, grace time.Duration, waitForReady bool) (registryv1.RegistryService_LeaseClient, context.CancelFunc, *registryv1.LeaseOpened, error) {
	sctx, cancel := context.WithCancel(context.Background())
	type result struct {
		stream registryv1.RegistryService_LeaseClient
		opened *registryv1.LeaseOpened
		err    error
	}
	got := make(chan result, 1)
	go func() {
		stream, opened, err := l.handshake(sctx, resume, grace, waitForReady)
		got <- result{stream, opened, err}
	}()
	select {
	case r := <-got:
		if r.err != nil {
			cancel()
			return nil, nil, nil, r.err
		}
		return r.stream, cancel, r.opened, nil
	case <-ctx.Done():
		cancel() // ends the handshake's wait
		<-got
		return nil, nil, nil, ctx.Err()
	}
}

// handshake starts a Lease stream and sends open; it returns the answer.
func (l *Lease) handshake(ctx context.Context, resume string, grace time.Duration, waitForReady bool) (registryv1.RegistryService_LeaseClient, *registryv1.LeaseOpened, error) {
	stream, err := l.c.rpc.Lease(ctx, grpc.WaitForReady(waitForReady))
	if err != nil {
		return nil, nil, fromStatus(err)
	}
	open := &registryv1.OpenLease{ClientName: l.name, ResumeLeaseId: resume}
	if grace > 0 {
		open.Grace = durationpb.New(grace)
	}
	if err := stream.Send(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Open{Open: open}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fromStatus(err)
	}
	m, err := stream.Recv() // after io.EOF from Send, Recv says why
	if err != nil {
		return nil, nil, fromStatus(err)
	}
	opened := m.GetOpened()
	if opened == nil {
		return nil, nil, fmt.Errorf("registry: lease stream answered open with %T", m.GetKind())
	}
	return stream, opened, nil
}

// run reads the lease's stream, and when it breaks, resumes the lease on
// a new one, until the lease ends.
func (l *Lease) run(stream registryv1.RegistryService_LeaseClient) {
	for {
		cause := l.read(stream)
		if l.isFinished() {
			return
		}
		if l.grace <= 0 {
			l.finish(&LeaseError{LeaseID: l.id, Kind: ErrLeaseLost, Err: cause})
			return
		}
		l.refusePending(stream, cause)
		next, err := l.resume(time.Now().Add(l.grace), cause)
		if err != nil || next == nil { // nil, nil: a Close went through before the drop
			l.finish(err)
			return
		}
		stream = next
	}
}

func (l *Lease) isFinished() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.finished
}

// read delivers the stream's answers to their calls until it ends, and
// returns why; nil when the lease ended on it (closed or revoked).
func (l *Lease) read(stream registryv1.RegistryService_LeaseClient) error {
	for {
		m, err := stream.Recv()
		if err != nil {
			return fromStatus(err)
		}
		if rev := m.GetRevoked(); rev != nil {
			l.drain(stream)
			l.finish(&LeaseError{LeaseID: l.id, Kind: ErrLeaseRevoked, Cause: RevokeCause(rev.GetCause()),
				Reason: rev.GetReason(), Released: int(rev.GetReleased())})
			return nil
		}
		l.mu.Lock()
		pc := l.pending[m.GetRequestId()]
		delete(l.pending, m.GetRequestId())
		l.mu.Unlock()
		if m.GetClosed() != nil {
			// Read the server's OK before finish cancels the stream, and
			// answer Close only then: it returns with the call ended as
			// it did, not cut.
			l.drain(stream)
			l.finish(nil)
		}
		if pc != nil {
			pc.resp <- m
		}
		if m.GetClosed() != nil {
			return nil
		}
	}
}

// drainTimeout bounds drain: the server ends a lease stream right after
// its last message.
const drainTimeout = 5 * time.Second

// drain reads stream to its end after the server's last message (closed
// or revoked), so that the call ends with the server's status, OK,
// instead of CANCELLED when finish cancels it: its span and the server's
// metrics then say what happened.
func (l *Lease) drain(stream registryv1.RegistryService_LeaseClient) {
	l.sendMu.Lock()
	_ = stream.CloseSend()
	l.sendMu.Unlock()
	l.mu.Lock()
	cut := time.AfterFunc(drainTimeout, l.cancel)
	l.mu.Unlock()
	defer cut.Stop()
	_ = endOfStream(stream.Recv)
}

// resume reopens the lease by id until it succeeds, the server says it is
// gone, or deadline passes. On success every pending request is sent
// again on the new stream, in order, before any other.
func (l *Lease) resume(deadline time.Time, cause error) (registryv1.RegistryService_LeaseClient, error) {
	l.retry.down()
	for {
		if !wait(min(l.retry.next(), time.Until(deadline)), l.done) {
			return nil, l.Err()
		}
		ctx, cancelAttempt := context.WithDeadline(context.Background(), deadline)
		stream, cancel, _, err := l.open(ctx, l.id, l.grace, true)
		cancelAttempt()
		if err == nil {
			l.mu.Lock()
			if l.finished { // Close gave up meanwhile
				l.mu.Unlock()
				cancel()
				return nil, l.Err()
			}
			l.retry.up()
			l.cancel()
			l.stream, l.cancel = stream, cancel
			l.resumes++
			again := make([]*pendingCall, 0, len(l.pending))
			for _, pc := range l.pending {
				again = append(again, pc)
				pc.on = stream
			}
			l.sendMu.Lock()
			l.mu.Unlock()
			sortByID(again)
			for _, pc := range again {
				_ = stream.Send(pc.req)
			}
			l.sendMu.Unlock()
			return stream, nil
		}
		switch {
		case errors.Is(err, ErrRestarted):
			return nil, &LeaseError{LeaseID: l.id, Kind: ErrRestarted, Err: err}
		case errors.Is(err, ErrLeaseNotFound) && l.isClosing():
			return nil, nil // the Close went through before the drop
		case errors.Is(err, ErrLeaseNotFound), isTerminal(err):
			return nil, &LeaseError{LeaseID: l.id, Kind: ErrLeaseLost, Err: err}
		case !time.Now().Before(deadline):
			return nil, &LeaseError{LeaseID: l.id, Kind: ErrLeaseLost, Err: cause, GraceEnded: deadline}
		}
	}
}

// refusePending fails the calls still waiting if the stream ended with
// cause because the server refused a request, as a server that ends the
// stream on a wrong request does (rather than answering it with a
// RequestError): one of them failed for good, and sending them all again
// after the resume would fail again, and again. Calls cut off by a
// network failure, and calls not sent on this stream, stay pending, to be
// sent again.
func (l *Lease) refusePending(stream registryv1.RegistryService_LeaseClient, cause error) {
	var e *Error
	if !errors.As(cause, &e) || e.Reason == "" || !isTerminal(cause) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, pc := range l.pending {
		if pc.on == stream {
			pc.err = cause
			pc.resp <- nil
			delete(l.pending, id)
		}
	}
}

// requestError is a RequestError answer as the *Error a unary call
// failing the same way would return.
func requestError(re *registryv1.RequestError) error {
	st := status.New(codes.Code(re.GetCode()), re.GetMessage())
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Domain: "registry", Reason: re.GetReason(), Metadata: re.GetMetadata()}); err == nil {
		st = withInfo
	}
	return fromStatus(st.Err())
}

// isTerminal reports errors that retrying will not mend: the request or
// the lease is wrong, or the client was closed.
func isTerminal(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Internal, codes.Unknown:
		return false
	}
	return true
}

func (l *Lease) isClosing() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closing
}

// finish ends the lease once: err is why (nil for a clean Close). Calls
// still waiting are answered with it.
func (l *Lease) finish(err error) {
	l.mu.Lock()
	if l.finished {
		l.mu.Unlock()
		return
	}
	l.finished, l.err = true, err
	for id, pc := range l.pending {
		pc.resp <- nil
		delete(l.pending, id)
	}
	l.cancel()
	close(l.done)
	onEnd := l.onEnd
	l.mu.Unlock()
	if onEnd != nil && err != nil {
		go onEnd(err)
	}
}

func sortByID(calls []*pendingCall) {
	for i := 1; i < len(calls); i++ {
		for j := i; j > 0 && calls[j].req.GetRequestId() < calls[j-1].req.GetRequestId(); j-- {
			calls[j], calls[j-1] = calls[j-1], calls[j]
		}
	}
}
