package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/testbin"
	"github.com/weakref/registry/internal/testlog"
)

// Timeouts. Generous for a loaded 2-core machine; every wait ends early as
// soon as its condition holds.
const (
	startTimeout = 15 * time.Second // registryd up and serving
	stopTimeout  = 15 * time.Second // SIGTERM to exit (above the 10s --shutdown-timeout default)
	rpcTimeout   = 10 * time.Second // one unary call
	waitTimeout  = 10 * time.Second // a stream message or a polled state
	pollInterval = 20 * time.Millisecond
)

// registrydBin is the registryd binary built by TestMain.
var registrydBin string

// registryctlBin and registrybenchBin are the other binaries TestMain
// builds.
var registryctlBin, registrybenchBin string

// holderEnv marks the test binary re-executed as a lease-holding client
// process (see TestHelperLeaseHolder); such a run builds nothing.
const holderEnv = "REGISTRY_E2E_HOLDER"

func TestMain(m *testing.M) {
	if os.Getenv(holderEnv) == "1" {
		os.Exit(m.Run())
	}
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	var bins []testbin.Binary
	for _, b := range []struct {
		bin *string
		pkg string
	}{{&registrydBin, "registryd"}, {&registryctlBin, "registryctl"}, {&registrybenchBin, "registrybench"}} {
		bins = append(bins, testbin.Binary{Path: b.bin, Name: b.pkg, Args: []string{"./cmd/" + b.pkg}})
	}
	dir, err := testbin.Build("registry-e2e-", 3*time.Minute, bins...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	return m.Run()
}

// daemon is one registryd process.
type daemon struct {
	Addr string

	cmd    *exec.Cmd
	stderr *testlog.Buffer
	exited chan struct{} // closed once the process was reaped
	err    error         // cmd.Wait's result; read after exited
}

// servingAddr finds the address in registryd's "serving" line, in the
// text or the JSON log format.
var servingAddr = regexp.MustCompile(`(?:msg="registryd serving" addr=|"msg":"registryd serving","addr":")(127\.0\.0\.1:[0-9]+)`)

// startDaemon starts registryd on a free loopback port with extra args,
// waits until it logs the address it serves on, and stops it when the test
// ends.
func startDaemon(t testing.TB, args ...string) *daemon {
	t.Helper()
	return startDaemonEnv(t, nil, args...)
}

// startDaemonEnv is startDaemon with env added to registryd's clean
// environment.
func startDaemonEnv(t testing.TB, env []string, args ...string) *daemon {
	t.Helper()
	d := launch(t, append([]string{"--addr", "127.0.0.1:0"}, args...), env)
	addr := make(chan string, 1)
	d.watchStderr(func(line string) {
		if m := servingAddr.FindStringSubmatch(line); m != nil {
			select {
			case addr <- m[1]:
			default:
			}
		}
	})
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			t.Logf("registryd %s stderr:\n%s", d.Addr, d.Stderr())
		}
	})
	select {
	case d.Addr = <-addr:
	case <-d.exited:
		t.Fatalf("registryd exited before serving: %v\nstderr:\n%s", d.err, d.Stderr())
	case <-time.After(startTimeout):
		t.Fatalf("registryd did not log its address within %v\nstderr:\n%s", startTimeout, d.Stderr())
	}
	return d
}

// launch prepares registryd with args, and env added to a clean
// environment (no REGISTRYD_* or OTEL_* variable inherited from the one
// running the tests); watchStderr starts it.
func launch(t testing.TB, args, env []string) *daemon {
	t.Helper()
	cmd := exec.Command(registrydBin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRYD_") && !strings.HasPrefix(kv, "OTEL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	return &daemon{cmd: cmd, stderr: &testlog.Buffer{}, exited: make(chan struct{})}
}

// watchStderr starts the process, copying its stderr into d.stderr and
// handing each line to onLine; the process is reaped once stderr closes.
func (d *daemon) watchStderr(onLine func(string)) {
	pipe, err := d.cmd.StderrPipe()
	if err != nil {
		panic(err)
	}
	if err := d.cmd.Start(); err != nil {
		d.err = err
		close(d.exited)
		return
	}
	go func() {
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			d.stderr.Write([]byte(line + "\n"))
			if onLine != nil {
				onLine(line)
			}
		}
		io.Copy(d.stderr, pipe) // a line too long for the scanner: keep the rest
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
}

// Stderr returns what the process wrote to stderr so far.
func (d *daemon) Stderr() string { return d.stderr.String() }

// stop sends SIGTERM, waits for the exit, kills after stopTimeout, and
// returns the exit code (-1 if killed by a signal). It may be called more
// than once.
func (d *daemon) stop(t testing.TB) int {
	t.Helper()
	select {
	case <-d.exited:
		return exitCode(d.err)
	default:
	}
	if d.cmd.Process != nil {
		d.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-d.exited:
	case <-time.After(stopTimeout):
		t.Errorf("registryd %s did not exit within %v of SIGTERM; killing it", d.Addr, stopTimeout)
		d.cmd.Process.Kill()
		<-d.exited
	}
	return exitCode(d.err)
}

// waitExit waits up to timeout for the process to end by itself and
// returns its exit code.
func (d *daemon) waitExit(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-d.exited:
		return exitCode(d.err)
	case <-time.After(timeout):
		t.Fatalf("registryd did not exit within %v\nstderr:\n%s", timeout, d.Stderr())
		return 0
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// client is a gRPC connection to a registryd with its two services.
type client struct {
	conn  *grpc.ClientConn
	reg   registryv1.RegistryServiceClient
	admin registryv1.AdminServiceClient
}

// dial connects to addr over plaintext loopback gRPC; the connection is
// closed when the test ends.
func dial(t testing.TB, addr string) *client {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{conn: conn, reg: registryv1.NewRegistryServiceClient(conn), admin: registryv1.NewAdminServiceClient(conn)}
}

// rpcCtx returns a context for one unary call.
func rpcCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	t.Cleanup(cancel)
	return ctx
}

// errorInfo returns the registry ErrorInfo of a status error, or nil.
func errorInfo(err error) (*status.Status, *errdetails.ErrorInfo) {
	st, ok := status.FromError(err)
	if !ok {
		return nil, nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return st, info
		}
	}
	return st, nil
}

// wantStatus fails the test unless err is a gRPC status with code and an
// ErrorInfo of domain "registry" and reason. It returns the ErrorInfo.
func wantStatus(t testing.TB, err error, code codes.Code, reason string) *errdetails.ErrorInfo {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v %s", code, reason)
	}
	st, info := errorInfo(err)
	if st == nil {
		t.Fatalf("got %v (not a gRPC status), want %v %s", err, code, reason)
	}
	if st.Code() != code {
		t.Fatalf("got code %v (%v), want %v %s", st.Code(), err, code, reason)
	}
	if info == nil {
		t.Fatalf("status %v carries no ErrorInfo, want reason %s", err, reason)
	}
	if info.GetDomain() != "registry" || info.GetReason() != reason {
		t.Fatalf("got ErrorInfo domain %q reason %q (%v), want domain \"registry\" reason %s", info.GetDomain(), info.GetReason(), err, reason)
	}
	return info
}

// received is one message, or the end, of a stream.
type received[T any] struct {
	msg T
	err error
}

// reader receives a stream on its own goroutine so that every wait on it
// has a deadline. The goroutine ends with the stream (its context
// cancelled when the test ends).
type reader[T any] struct {
	ch   chan received[T]
	done bool // the stream's end was seen
}

func startReader[T any](ctx context.Context, recv func() (T, error)) *reader[T] {
	r := &reader[T]{ch: make(chan received[T], 64)}
	go func() {
		for {
			m, err := recv()
			select {
			case r.ch <- received[T]{m, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return r
}

// next returns the next message, or the stream's end (io.EOF or a status
// error), failing the test after timeout.
func (r *reader[T]) next(t testing.TB, timeout time.Duration) (T, error) {
	t.Helper()
	var zero T
	if r.done {
		t.Fatal("read past the end of the stream")
	}
	select {
	case got := <-r.ch:
		if got.err != nil {
			r.done = true
		}
		return got.msg, got.err
	case <-time.After(timeout):
		t.Fatalf("no stream message within %v", timeout)
		return zero, nil
	}
}

// mustNext is next for a message that must come.
func (r *reader[T]) mustNext(t testing.TB) T {
	t.Helper()
	m, err := r.next(t, waitTimeout)
	if err != nil {
		t.Fatalf("stream ended (%v), want a message", err)
	}
	return m
}

// lease is a client's lease stream.
type lease struct {
	stream grpc.BidiStreamingClient[registryv1.LeaseRequest, registryv1.LeaseResponse]
	cancel context.CancelFunc // cuts the stream as a crash or network loss would
	in     *reader[*registryv1.LeaseResponse]
	reqID  uint64
	opened *registryv1.LeaseOpened
}

// openLease opens a lease stream on c and sends open; it fails the test
// unless the server answers opened.
func openLease(t testing.TB, c *client, open *registryv1.OpenLease) *lease {
	t.Helper()
	l, err := tryOpenLease(t, c, open)
	if err != nil {
		t.Fatalf("open lease: %v", err)
	}
	return l
}

// tryOpenLease is openLease returning the stream's error when the server
// refuses the open.
func tryOpenLease(t testing.TB, c *client, open *registryv1.OpenLease) (*lease, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := c.reg.Lease(ctx)
	if err != nil {
		t.Fatalf("Lease: %v", err)
	}
	l := &lease{stream: stream, cancel: cancel, in: startReader(ctx, stream.Recv)}
	l.send(t, &registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Open{Open: open}})
	resp, err := l.in.next(t, waitTimeout)
	if err != nil {
		return nil, err
	}
	if resp.GetRequestId() != l.reqID {
		t.Fatalf("opened answers request %d, want %d", resp.GetRequestId(), l.reqID)
	}
	l.opened = resp.GetOpened()
	if l.opened == nil || !strings.HasPrefix(l.opened.GetLeaseId(), "lse_") {
		t.Fatalf("first lease response = %v, want opened with a lse_ id", resp)
	}
	return l, nil
}

// ID returns the lease's id.
func (l *lease) ID() string { return l.opened.GetLeaseId() }

// send sends req with the next request id.
func (l *lease) send(t testing.TB, req *registryv1.LeaseRequest) {
	t.Helper()
	l.reqID++
	req.RequestId = l.reqID
	if err := l.stream.Send(req); err != nil {
		t.Fatalf("lease send: %v", err)
	}
}

// close sends close and checks the answer says released pins, then that
// the stream ends cleanly.
func (l *lease) close(t testing.TB, released int32) {
	t.Helper()
	l.send(t, &registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Close{Close: &registryv1.CloseLease{}}})
	resp := l.in.mustNext(t)
	if resp.GetRequestId() != l.reqID || resp.GetClosed() == nil {
		t.Fatalf("answer to close = %v, want closed for request %d", resp, l.reqID)
	}
	if got := resp.GetClosed().GetReleased(); got != released {
		t.Fatalf("closed.released = %d, want %d", got, released)
	}
	l.wantEOF(t)
}

// wantEOF checks that the server ends the stream cleanly next.
func (l *lease) wantEOF(t testing.TB) {
	t.Helper()
	if resp, err := l.in.next(t, waitTimeout); !errors.Is(err, io.EOF) {
		t.Fatalf("lease stream: got %v, %v; want its clean end (io.EOF)", resp, err)
	}
}

// watch is an open Watch stream.
type watch struct {
	in *reader[*registryv1.WatchResponse]
}

// openWatch watches handles on c and checks that the first event is
// CURRENT with state want.
func openWatch(t testing.TB, c *client, h string, want registryv1.ObjectState, pins int32) *watch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := c.reg.Watch(ctx, &registryv1.WatchRequest{Handles: []string{h}})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	w := &watch{in: startReader(ctx, stream.Recv)}
	ev := w.next(t)
	if ev.GetKind() != registryv1.EventKind_EVENT_KIND_CURRENT || ev.GetHandle() != h ||
		ev.GetState() != want || ev.GetPinCount() != pins {
		t.Fatalf("first watch event = %v, want CURRENT %v pin_count %d for %s", ev, want, pins, h)
	}
	return w
}

// next returns the next event, failing if the stream ends instead.
func (w *watch) next(t testing.TB) *registryv1.Event {
	t.Helper()
	return w.in.mustNext(t).GetEvent()
}

// put stores data, pinned by leaseID if it is not empty.
func put(t testing.TB, c *client, data []byte, leaseID string) string {
	t.Helper()
	resp, err := c.reg.Put(rpcCtx(t), &registryv1.PutRequest{Data: data, ContentType: "application/octet-stream", LeaseId: leaseID})
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if !strings.HasPrefix(resp.GetHandle(), "obj_") {
		t.Fatalf("Put handle = %q, want an obj_ handle", resp.GetHandle())
	}
	return resp.GetHandle()
}

// wantResolves checks that h resolves to exactly data.
func wantResolves(t testing.TB, c *client, h string, data []byte) {
	t.Helper()
	resp, err := c.reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: h})
	if err != nil {
		t.Fatalf("Resolve(%s): %v", h, err)
	}
	if !bytes.Equal(resp.GetData(), data) {
		t.Fatalf("Resolve(%s) returned %d bytes that differ from the %d put", h, len(resp.GetData()), len(data))
	}
}

// wantStat checks h's state and pin count.
func wantStat(t testing.TB, c *client, h string, state registryv1.ObjectState, pins int32) {
	t.Helper()
	resp, err := c.reg.Stat(rpcCtx(t), &registryv1.StatRequest{Handle: h})
	if err != nil {
		t.Fatalf("Stat(%s): %v", h, err)
	}
	if got := resp.GetInfo(); got.GetState() != state || got.GetPinCount() != pins {
		t.Fatalf("Stat(%s) = %v pin_count %d, want %v pin_count %d", h, got.GetState(), got.GetPinCount(), state, pins)
	}
}

// wantGone checks that Resolve and Stat both fail on h with code and
// reason.
func wantGone(t testing.TB, c *client, h string, code codes.Code, reason string) {
	t.Helper()
	_, err := c.reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: h})
	wantStatus(t, err, code, reason)
	_, err = c.reg.Stat(rpcCtx(t), &registryv1.StatRequest{Handle: h})
	wantStatus(t, err, code, reason)
}

// collect forces a collection in the daemon.
func collect(t testing.TB, c *client) *registryv1.CollectResponse {
	t.Helper()
	resp, err := c.admin.Collect(rpcCtx(t), &registryv1.CollectRequest{})
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	return resp
}

// findLease returns the live lease id, or nil.
func findLease(t testing.TB, c *client, id string) *registryv1.LeaseInfo {
	t.Helper()
	resp, err := c.admin.ListLeases(rpcCtx(t), &registryv1.ListLeasesRequest{})
	if err != nil {
		t.Fatalf("ListLeases: %v", err)
	}
	for _, l := range resp.GetLeases() {
		if l.GetLeaseId() == id {
			return l
		}
	}
	return nil
}

// waitLease polls ListLeases until ok holds for lease id (nil: not
// listed), failing the test after timeout. It returns the last answer.
func waitLease(t testing.TB, c *client, id string, timeout time.Duration, what string, ok func(*registryv1.LeaseInfo) bool) *registryv1.LeaseInfo {
	t.Helper()
	var last *registryv1.LeaseInfo
	poll(t, timeout, what, func() bool {
		last = findLease(t, c, id)
		return ok(last)
	})
	return last
}

// poll calls cond every pollInterval until it returns true, failing the
// test after timeout. The number of calls is bounded by the timeout.
func poll(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for i, n := 0, int(timeout/pollInterval)+1; i < n; i++ {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		<-tick.C
	}
	t.Fatalf("timed out after %v waiting for %s", timeout, what)
}
