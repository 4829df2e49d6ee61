// Command worker is a client process of the robustness suite (package
// e2e/robust): it drives a registryd over raw gRPC, as a real application
// would and as a careless one does, and writes every operation and its
// result as one JSON robust.Record per line on stdout. The suite kills,
// freezes and cuts off its workers; whatever a worker managed to write is
// the history the suite checks.
//
// Modes:
//
//	mixed     leases that put, pin, resolve, unpin and close, in a loop
//	hold      open -leases streams that each pin -objects objects, say
//	          ready, and hold them until killed
//	wrong     a held lease that gets a pin of 1001 handles, a second
//	          open and an empty request, each answered by an error while
//	          the lease and its pins stay
//	stopread  a held lease whose client stops reading its answers
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weakref/registry/e2e/robust"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// answerTimeout bounds the wait for one answer on a lease stream: a
// blackholed or stalled connection is noticed by the client this late.
const answerTimeout = 5 * time.Second

func main() {
	addr := flag.String("addr", "", "registryd `host:port`")
	id := flag.Int("id", 0, "this worker's number, carried in its records")
	mode := flag.String("mode", "mixed", "mixed, hold, wrong or stopread")
	leases := flag.Int("leases", 2, "concurrent lease streams")
	objects := flag.Int("objects", 4, "objects a lease puts per cycle (hold: in all)")
	size := flag.Int("size", 512, "largest object in bytes")
	duration := flag.Duration("duration", time.Minute, "stop after this long at most")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	// SIGINT: close every lease cleanly and exit, as a well-behaved
	// application that is told to stop.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT)
	defer stop()

	// Reconnect within a second of registryd coming back, however long it
	// was gone: gRPC's default backoff grows to two minutes.
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}, MinConnectTimeout: 2 * time.Second}))
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2) //nolint:gocritic // the deferred cancel and stop hold only process state, which exiting releases
	}
	defer conn.Close()
	w := &worker{
		id:      *id,
		reg:     registryv1.NewRegistryServiceClient(conn),
		out:     json.NewEncoder(os.Stdout),
		objects: *objects,
		size:    max(*size, 16),
		pool:    map[string]uint32{},
	}
	var wg sync.WaitGroup
	for i := range *leases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(*seed, uint64(*id)<<16|uint64(i))) //nolint:gosec // seeded: a run is reproducible from its -seed
			switch *mode {
			case "mixed":
				w.mixed(ctx, rnd)
			case "hold":
				w.hold(ctx, rnd)
			case "wrong":
				w.wrong(ctx, rnd)
			case "stopread":
				w.stopRead(ctx, rnd)
			default:
				fmt.Fprintln(os.Stderr, "worker: unknown mode", *mode)
				os.Exit(2)
			}
		}()
	}
	wg.Wait()
}

// worker is one process's state, shared by its lease goroutines.
type worker struct {
	id      int
	reg     registryv1.RegistryServiceClient
	objects int
	size    int

	outMu sync.Mutex
	out   *json.Encoder // one Write per record: a SIGKILL loses at most the line in flight

	poolMu sync.Mutex
	pool   map[string]uint32 // handles this worker put, and their checksums; bounded
}

func now() int64 { return time.Now().UnixNano() }

func (w *worker) record(r robust.Record) {
	r.Worker = w.id
	w.outMu.Lock()
	defer w.outMu.Unlock()
	// A stdout that fails means the suite reading it is gone: there is
	// nobody left to tell.
	_ = w.out.Encode(r)
}

// remember adds a handle to the pool that resolves pick from.
func (w *worker) remember(h string, sum uint32) {
	w.poolMu.Lock()
	defer w.poolMu.Unlock()
	if len(w.pool) >= 256 {
		for k := range w.pool { // drop one at random
			delete(w.pool, k)
			break
		}
	}
	w.pool[h] = sum
}

// pick returns up to n handles of the pool.
func (w *worker) pick(n int) []string {
	w.poolMu.Lock()
	defer w.poolMu.Unlock()
	var hs []string
	for h := range w.pool {
		if len(hs) == n {
			break
		}
		hs = append(hs, h)
	}
	return hs
}

func (w *worker) payload(rnd *rand.Rand) []byte {
	b := make([]byte, 16+rnd.IntN(w.size-15))
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
	return b
}

// put stores one object, pinned by lease when it is not empty.
func (w *worker) put(ctx context.Context, rnd *rand.Rand, lease string) (string, bool) {
	data := w.payload(rnd)
	sum := robust.Checksum(data)
	start := now()
	cctx, cancel := context.WithTimeout(ctx, answerTimeout)
	resp, err := w.reg.Put(cctx, &registryv1.PutRequest{Data: data, ContentType: "application/octet-stream", LeaseId: lease})
	cancel()
	r := robust.Record{Op: robust.OpPut, Lease: lease, Start: start, End: now(), Result: robust.ResultOf(err), Sum: sum}
	if err == nil {
		r.Handle = resp.GetHandle()
		w.remember(r.Handle, sum)
	}
	w.record(r)
	return r.Handle, err == nil
}

// resolve resolves h and records the checksum of what came back.
func (w *worker) resolve(ctx context.Context, h, lease string) {
	start := now()
	cctx, cancel := context.WithTimeout(ctx, answerTimeout)
	resp, err := w.reg.Resolve(cctx, &registryv1.ResolveRequest{Handle: h})
	cancel()
	r := robust.Record{Op: robust.OpResolve, Handle: h, Lease: lease, Start: start, End: now(), Result: robust.ResultOf(err)}
	if err == nil {
		r.Sum = robust.Checksum(resp.GetData())
	}
	w.record(r)
}

// stream is one lease stream, answered in lock step: a request is sent and
// its answer awaited before the next.
type stream struct {
	w      *worker
	s      grpc.BidiStreamingClient[registryv1.LeaseRequest, registryv1.LeaseResponse]
	cancel context.CancelFunc
	in     chan *registryv1.LeaseResponse
	err    error // why in closed; read after it closed
	id     string
	reqID  uint64
	ended  bool
}

// open opens a lease stream and its lease; it records the open, or the end
// when it fails.
func (w *worker) open(ctx context.Context) (*stream, bool) {
	// The stream outlives ctx so that a worker told to stop can still
	// close its lease.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	start := now()
	s, err := w.reg.Lease(sctx)
	if err != nil {
		cancel()
		w.record(robust.Record{Op: robust.OpOpen, Start: start, End: now(), Result: robust.ResultOf(err)})
		return nil, false
	}
	st := &stream{w: w, s: s, cancel: cancel, in: make(chan *registryv1.LeaseResponse, 16)}
	go func() {
		defer close(st.in)
		for {
			m, err := s.Recv()
			if err != nil {
				st.err = err
				return
			}
			st.in <- m
		}
	}()
	resp, ok := st.call(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Open{Open: &registryv1.OpenLease{ClientName: fmt.Sprintf("robust-worker-%d", w.id)}}})
	if !ok || resp.GetOpened() == nil {
		w.record(robust.Record{Op: robust.OpOpen, Start: start, End: now(), Result: st.endResult(resp)})
		st.cancel()
		return nil, false
	}
	st.id = resp.GetOpened().GetLeaseId()
	w.record(robust.Record{Op: robust.OpOpen, Lease: st.id, Start: start, End: now(), Result: robust.ResultOK})
	return st, true
}

// call sends req and waits for its answer. ok is false when the stream
// ended instead, or no answer came in time; the end is then recorded.
func (st *stream) call(req *registryv1.LeaseRequest) (*registryv1.LeaseResponse, bool) {
	if st.ended {
		return nil, false
	}
	st.reqID++
	req.RequestId = st.reqID
	if err := st.s.Send(req); err != nil {
		// The stream is broken; Recv says why.
		return st.drain()
	}
	return st.await(func(m *registryv1.LeaseResponse) bool { return m.GetRequestId() == st.reqID }, "")
}

// drain waits for the stream's end after a failed Send and records it.
func (st *stream) drain() (*registryv1.LeaseResponse, bool) {
	return st.await(nil, "send failed")
}

// await reads the stream's messages until match takes one (true), the
// stream ends or is revoked, or answerTimeout passes (false); an end is
// recorded, with detail.
func (st *stream) await(match func(*registryv1.LeaseResponse) bool, detail string) (*registryv1.LeaseResponse, bool) {
	timer := time.NewTimer(answerTimeout)
	defer timer.Stop()
	for {
		select {
		case m, ok := <-st.in:
			if !ok {
				st.end(robust.ResultOf(st.err), detail)
				return nil, false
			}
			if rv := m.GetRevoked(); rv != nil {
				st.end("revoked:"+rv.GetCause().String(), rv.GetReason())
				return m, false
			}
			if match != nil && match(m) {
				return m, true
			}
		case <-timer.C:
			st.cancel()
			st.end(robust.ResultTimeout, detail)
			return nil, false
		}
	}
}

func (st *stream) endResult(resp *registryv1.LeaseResponse) string {
	if rv := resp.GetRevoked(); rv != nil {
		return "revoked:" + rv.GetCause().String()
	}
	if st.err != nil {
		return robust.ResultOf(st.err)
	}
	return robust.ResultTimeout
}

// end records the stream's end once.
func (st *stream) end(result, detail string) {
	if st.ended {
		return
	}
	st.ended = true
	if st.id != "" {
		st.w.record(robust.Record{Op: robust.OpLeaseEnd, Lease: st.id, Start: now(), End: now(), Result: result, Detail: detail})
	}
}

// pin pins hs and records each handle's outcome; it returns those pinned.
func (st *stream) pin(hs []string) []string {
	start := now()
	resp, ok := st.call(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Pin{Pin: &registryv1.PinHandles{Handles: hs}}})
	if !ok {
		return nil
	}
	end := now()
	var pinned []string
	for _, r := range resp.GetPinned().GetResults() {
		st.w.record(robust.Record{Op: robust.OpPin, Handle: r.GetHandle(), Lease: st.id, Start: start, End: end, Result: outcome(r)})
		if r.GetOutcome() == registryv1.PinOutcome_PIN_OUTCOME_PINNED {
			pinned = append(pinned, r.GetHandle())
		}
	}
	if e := resp.GetError(); e != nil {
		st.w.record(robust.Record{Op: robust.OpPin, Lease: st.id, Start: start, End: end, Result: "error:" + e.GetReason()})
	}
	return pinned
}

// unpin unpins hs, recording the call first: if the answer never comes,
// the checker knows an unpin may have happened.
func (st *stream) unpin(hs []string) {
	start := now()
	for _, h := range hs {
		st.w.record(robust.Record{Op: robust.OpUnpinCall, Handle: h, Lease: st.id, Start: start})
	}
	resp, ok := st.call(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Unpin{Unpin: &registryv1.UnpinHandles{Handles: hs}}})
	if !ok {
		return
	}
	end := now()
	for _, r := range resp.GetUnpinned().GetResults() {
		st.w.record(robust.Record{Op: robust.OpUnpin, Handle: r.GetHandle(), Lease: st.id, Start: start, End: end, Result: outcome(r)})
	}
}

// close closes the lease and records its end.
func (st *stream) close() {
	st.w.record(robust.Record{Op: robust.OpCloseCall, Lease: st.id, Start: now()})
	resp, ok := st.call(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Close{Close: &registryv1.CloseLease{}}})
	if ok && resp.GetClosed() != nil {
		st.end(robust.ResultClosed, "")
	}
	st.cancel()
}

// abandon cancels the stream without closing, as a client that crashes
// in-process or drops its connection.
func (st *stream) abandon() {
	st.w.record(robust.Record{Op: robust.OpCloseCall, Lease: st.id, Start: now(), Detail: "cancel"})
	st.cancel()
	st.end(robust.ResultCancelled, "")
}

func outcome(r *registryv1.PinResult) string {
	if r.GetOutcome() == registryv1.PinOutcome_PIN_OUTCOME_FAILED {
		return r.GetError().GetReason()
	}
	return r.GetOutcome().String()[len("PIN_OUTCOME_"):]
}

// mixed runs leases that do everything an application does, until ctx
// ends.
func (w *worker) mixed(ctx context.Context, rnd *rand.Rand) {
	for ctx.Err() == nil {
		st, ok := w.open(ctx)
		if !ok {
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		w.cycles(ctx, rnd, st)
		switch {
		case st.ended:
		case ctx.Err() != nil || rnd.IntN(3) > 0:
			st.close()
		default:
			st.abandon()
		}
	}
}

// cycles puts, pins, resolves and unpins on st a few times.
func (w *worker) cycles(ctx context.Context, rnd *rand.Rand, st *stream) {
	for range 1 + rnd.IntN(4) {
		var held []string
		for range (w.objects + 1) / 2 {
			if h, ok := w.put(ctx, rnd, st.id); ok {
				held = append(held, h)
			}
		}
		// Put without a lease, then pin: the producer and consumer of
		// a hand-off, and the path where the pin takes a WEAK object.
		var loose []string
		for range w.objects / 2 {
			if h, ok := w.put(ctx, rnd, ""); ok {
				loose = append(loose, h)
			}
		}
		loose = append(loose, w.pick(2)...) // objects of other leases too
		held = append(held, st.pin(dedupe(loose, held))...)
		if st.ended {
			return
		}
		for range 2 {
			for _, h := range held {
				w.resolve(ctx, h, st.id)
			}
			sleep(ctx, time.Duration(50+rnd.IntN(250))*time.Millisecond)
		}
		for _, h := range w.pick(3) {
			w.resolve(ctx, h, "")
		}
		if ctx.Err() != nil {
			return
		}
		st.unpin(held[:len(held)/2])
		if st.ended {
			return
		}
		for _, h := range held[len(held)/2:] {
			w.resolve(ctx, h, st.id)
		}
	}
}

func dedupe(hs, not []string) []string {
	seen := map[string]bool{}
	for _, h := range not {
		seen[h] = true
	}
	var out []string
	for _, h := range hs {
		if !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out
}

// hold opens a lease, pins w.objects objects with it and holds them until
// killed, or ctx ends.
func (w *worker) hold(ctx context.Context, rnd *rand.Rand) {
	st, ok := w.open(ctx)
	if !ok {
		return
	}
	var held []string
	for range w.objects {
		if h, ok := w.put(ctx, rnd, st.id); ok {
			held = append(held, h)
		}
	}
	w.record(robust.Record{Op: robust.OpReady, Lease: st.id, Start: now(), End: now(), Result: fmt.Sprint(len(held))})
	select {
	case <-ctx.Done():
		st.close()
	case <-st.in: // the stream ended (or said something unasked)
		st.end(robust.ResultOf(st.err), "while holding")
	}
}

// wrong sends requests that are wrong as a whole on a lease that holds
// pins: each must be answered with an error while the lease and its pins
// stay. Then it checks the pins by resolving, and closes.
func (w *worker) wrong(ctx context.Context, rnd *rand.Rand) {
	for ctx.Err() == nil {
		st, ok := w.open(ctx)
		if !ok {
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		var held []string
		for range max(w.objects, 1) {
			if h, ok := w.put(ctx, rnd, st.id); ok {
				held = append(held, h)
			}
		}
		if len(held) == 0 {
			st.close()
			continue
		}
		many := make([]string, 1001)
		for i := range many {
			many[i] = held[0]
		}
		for _, bad := range []struct {
			what string
			req  *registryv1.LeaseRequest
		}{
			{"pin of 1001 handles", &registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Pin{Pin: &registryv1.PinHandles{Handles: many}}}},
			{"second open", &registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Open{Open: &registryv1.OpenLease{}}}},
			{"empty request", &registryv1.LeaseRequest{}},
		} {
			start := now()
			resp, ok := st.call(bad.req)
			r := robust.Record{Op: robust.OpWrong, Lease: st.id, Start: start, End: now(), Detail: bad.what}
			switch {
			case ok && resp.GetError() != nil:
				r.Result = "error:" + resp.GetError().GetReason()
			case ok:
				r.Result = fmt.Sprintf("answered %T", resp.GetKind())
			default:
				r.Result = "stream ended"
			}
			w.record(r)
			if !ok {
				break
			}
			for _, h := range held {
				w.resolve(ctx, h, st.id)
			}
		}
		if !st.ended {
			st.close()
		}
		sleep(ctx, time.Duration(100+rnd.IntN(200))*time.Millisecond)
	}
}

// stopRead opens a lease, pins objects, then keeps sending pins without
// ever reading an answer again, until its sends block on flow control; it
// stays so until killed.
func (w *worker) stopRead(ctx context.Context, rnd *rand.Rand) {
	st, ok := w.open(ctx)
	if !ok {
		return
	}
	var held []string
	for range max(w.objects, 1) {
		if h, ok := w.put(ctx, rnd, st.id); ok {
			held = append(held, h)
		}
	}
	w.record(robust.Record{Op: robust.OpStopRead, Lease: st.id, Start: now(), End: now(), Result: fmt.Sprint(len(held))})
	// Each answer repeats every handle's info: a few hundred of them
	// fill the stream's flow-control window. Bounded.
	for i := range 5000 {
		req := &registryv1.LeaseRequest{RequestId: uint64(1000 + i), Kind: &registryv1.LeaseRequest_Pin{Pin: &registryv1.PinHandles{Handles: held}}}
		if st.s.Send(req) != nil || ctx.Err() != nil {
			break
		}
	}
	<-ctx.Done()
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
