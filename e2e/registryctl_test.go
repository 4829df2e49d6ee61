package e2e

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// registryctl's exit statuses (cmd/registryctl/main.go).
const (
	ctlOK          = 0
	ctlError       = 1
	ctlUsage       = 2
	ctlNotFound    = 3
	ctlUnavailable = 4
)

const (
	// ctlRunTimeout bounds one registryctl run that should end by itself;
	// past it the process is killed and the test fails as a hang.
	ctlRunTimeout = 20 * time.Second
	// ctlFast is how long a registryctl run may take when it must fail at
	// once, or within its --timeout of 1s.
	ctlFast = 5 * time.Second
)

var (
	handleRE  = regexp.MustCompile(`^obj_[A-Za-z0-9_-]{52}$`)
	holdingRE = regexp.MustCompile(`^holding (obj_[A-Za-z0-9_-]{52}) under lease (lse_[A-Za-z0-9_-]{52}); interrupt \(Ctrl-C\) to release it$`)
)

// ctlOpts says how to run registryctl beyond its arguments.
type ctlOpts struct {
	addr  string   // given as --addr, unless empty
	env   []string // added to an environment cleared of REGISTRYCTL_* variables
	stdin []byte   // nil: /dev/null
}

// ctlResult is one finished run of registryctl.
type ctlResult struct {
	args           []string
	stdout, stderr string
	code           int
	took           time.Duration
}

func (r ctlResult) String() string {
	return fmt.Sprintf("registryctl %s: exit %d after %v\nstdout:\n%s\nstderr:\n%s",
		strings.Join(r.args, " "), r.code, r.took.Round(time.Millisecond), r.stdout, r.stderr)
}

// ctlCommand prepares registryctl with args: --addr first, when given, and
// an environment that holds no REGISTRYCTL_* variable of the one running
// the tests.
func ctlCommand(ctx context.Context, o ctlOpts, args []string) *exec.Cmd {
	if o.addr != "" {
		args = append([]string{"--addr", o.addr}, args...)
	}
	cmd := exec.CommandContext(ctx, registryctlBin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRYCTL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, o.env...)
	if o.stdin != nil {
		cmd.Stdin = bytes.NewReader(o.stdin)
	}
	return cmd
}

// ctl runs registryctl against addr and returns its outputs and exit
// status; a run that does not end within ctlRunTimeout fails the test.
func ctl(t testing.TB, addr string, args ...string) ctlResult {
	t.Helper()
	return runCtl(t, ctlOpts{addr: addr}, args...)
}

// runCtl is ctl with options.
func runCtl(t testing.TB, o ctlOpts, args ...string) ctlResult {
	t.Helper()
	r, err := execCtl(o, args)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// execCtl runs registryctl; the error says it could not run or hung.
// Unlike runCtl, it may be called from any goroutine.
func execCtl(o ctlOpts, args []string) (ctlResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ctlRunTimeout)
	defer cancel()
	cmd := ctlCommand(ctx, o, args)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := ctlResult{args: args, stdout: stdout.String(), stderr: stderr.String(), code: exitCode(err), took: time.Since(start)}
	if ctx.Err() != nil {
		return r, fmt.Errorf("registryctl hung: killed after %v\n%s", ctlRunTimeout, r)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return r, fmt.Errorf("run registryctl %s: %w", strings.Join(args, " "), err)
	}
	return r, nil
}

// wantExit fails the test unless r exited with code.
func wantExit(t testing.TB, r ctlResult, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("want exit %d; got %s", code, r)
	}
}

// wantSuccess fails the test unless r exited 0 with nothing on stderr.
func wantSuccess(t testing.TB, r ctlResult) {
	t.Helper()
	wantExit(t, r, ctlOK)
	if r.stderr != "" {
		t.Fatalf("want nothing on stderr; got %s", r)
	}
}

// errLine checks that stderr is exactly one line "registryctl: ...",
// with no panic or stack trace, and returns it without its newline.
func errLine(t testing.TB, r ctlResult) string {
	t.Helper()
	for _, bad := range []string{"panic", "goroutine ", ".go:"} {
		if strings.Contains(r.stderr, bad) {
			t.Errorf("stderr contains %q (a panic or stack trace?): %s", bad, r)
		}
	}
	line, ok := strings.CutSuffix(r.stderr, "\n")
	if !ok || strings.Contains(line, "\n") || !strings.HasPrefix(line, "registryctl: ") {
		t.Fatalf("want stderr to be one line \"registryctl: ...\"; got %s", r)
	}
	return line
}

// wantErrLine checks r's exit status and its one error line, which must
// contain each of want, and returns the line.
func wantErrLine(t testing.TB, r ctlResult, code int, want ...string) string {
	t.Helper()
	wantExit(t, r, code)
	line := errLine(t, r)
	for _, w := range want {
		if !strings.Contains(line, w) {
			t.Errorf("error line %q does not contain %q", line, w)
		}
	}
	return line
}

// decode parses registryctl's json output into m.
func decode(t testing.TB, r ctlResult, m proto.Message) {
	t.Helper()
	if err := protojson.Unmarshal([]byte(r.stdout), m); err != nil {
		t.Fatalf("stdout is not a %T in JSON: %v\n%s", m, err, r)
	}
}

// decodeMap parses json output that is no API message (version, health).
func decodeMap(t testing.TB, r ctlResult) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		t.Fatalf("stdout is not a JSON object: %v\n%s", err, r)
	}
	return m
}

// tableRows splits table output into the fields of each non-empty line,
// the header first.
func tableRows(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			rows = append(rows, f)
		}
	}
	return rows
}

// rowOf returns the table row whose first field is key, or nil.
func rowOf(rows [][]string, key string) []string {
	for _, r := range rows {
		if r[0] == key {
			return r
		}
	}
	return nil
}

// lineLog collects the lines of one output stream of a running process
// and lets a test wait, with a deadline, for a line.
type lineLog struct {
	mu      sync.Mutex
	lines   []string
	ended   bool
	changed chan struct{} // closed and replaced at every change
}

func newLineLog() *lineLog { return &lineLog{changed: make(chan struct{})} }

func (l *lineLog) update(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f()
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *lineLog) copyFrom(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		l.update(func() { l.lines = append(l.lines, line) })
	}
	io.Copy(io.Discard, r)
	l.update(func() { l.ended = true })
}

// String returns the lines so far, each ended by a newline.
func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, line := range l.lines {
		b.WriteString(line + "\n")
	}
	return b.String()
}

// waitFor waits up to timeout for a line that match accepts and returns
// it; ok is false if the stream ended or the time ran out first.
func (l *lineLog) waitFor(timeout time.Duration, match func(string) bool) (line string, ok bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		lines, ended, changed := l.lines, l.ended, l.changed
		l.mu.Unlock()
		for _, line := range lines {
			if match(line) {
				return line, true
			}
		}
		if ended {
			return "", false
		}
		select {
		case <-changed:
		case <-deadline.C:
			return "", false
		}
	}
}

// ctlProc is a registryctl running in the background: put --hold, hold
// or watch. It is killed when the test ends, if still running.
type ctlProc struct {
	args           []string
	cmd            *exec.Cmd
	stdout, stderr *lineLog
	start          time.Time
	exited         chan struct{} // closed once the process was reaped
	err            error         // cmd.Wait's result; read after exited
}

// startCtl starts registryctl with args in the background.
func startCtl(t testing.TB, o ctlOpts, args ...string) *ctlProc {
	t.Helper()
	cmd := ctlCommand(context.Background(), o, args)
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &ctlProc{args: args, cmd: cmd, stdout: newLineLog(), stderr: newLineLog(), exited: make(chan struct{})}
	p.start = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start registryctl: %v", err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.stdout.copyFrom(outPipe) }()
	go func() { defer wg.Done(); p.stderr.copyFrom(errPipe) }()
	go func() {
		wg.Wait() // all read before Wait closes the pipes
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("background %s", p.result())
		}
	})
	return p
}

// result is the process's outputs so far and its exit status (-1 while it
// runs or when killed).
func (p *ctlProc) result() ctlResult {
	r := ctlResult{args: p.args, stdout: p.stdout.String(), stderr: p.stderr.String(), code: -1, took: time.Since(p.start)}
	select {
	case <-p.exited:
		r.code = exitCode(p.err)
	default:
	}
	return r
}

// waitStderr waits for a stderr line containing marker and returns it.
func (p *ctlProc) waitStderr(t testing.TB, marker string) string {
	t.Helper()
	line, ok := p.stderr.waitFor(waitTimeout, func(l string) bool { return strings.Contains(l, marker) })
	if !ok {
		select { // an early exit: let it be reaped, for the report
		case <-p.exited:
		case <-time.After(time.Second):
		}
		t.Fatalf("no stderr line with %q: %s", marker, p.result())
	}
	return line
}

// waitStdout waits for a stdout line that match accepts and returns it.
func (p *ctlProc) waitStdout(t testing.TB, what string, match func(string) bool) string {
	t.Helper()
	line, ok := p.stdout.waitFor(waitTimeout, match)
	if !ok {
		t.Fatalf("no stdout line with %s: %s", what, p.result())
	}
	return line
}

// wait waits for the process to end by itself and returns its result.
func (p *ctlProc) wait(t testing.TB) ctlResult {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(waitTimeout):
		t.Fatalf("registryctl did not exit within %v: %s", waitTimeout, p.result())
	}
	return p.result()
}

// interrupt sends SIGINT, as Ctrl-C would, and waits for the exit.
func (p *ctlProc) interrupt(t testing.TB) ctlResult {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatalf("interrupt registryctl: %v: %s", err, p.result())
	}
	return p.wait(t)
}

// ctlPutHold runs 'registryctl put --hold' with args and stdin in the
// background and waits until it holds the object; it returns the process,
// the handle and the lease id.
func ctlPutHold(t testing.TB, addr string, stdin []byte, args ...string) (p *ctlProc, h, leaseID string) {
	t.Helper()
	p = startCtl(t, ctlOpts{addr: addr, stdin: stdin}, append([]string{"put", "--hold"}, args...)...)
	line := p.waitStderr(t, "holding ")
	m := holdingRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("put --hold said %q, want \"holding HANDLE under lease ID; interrupt (Ctrl-C) to release it\"", line)
	}
	return p, m[1], m[2]
}

// wantReleased interrupts a put --hold or hold process and checks that it
// closes its lease cleanly: exit 0, and "closed lease ID; released N
// pin(s)" as its last stderr line.
func wantReleased(t testing.TB, p *ctlProc, leaseID string, pins int) ctlResult {
	t.Helper()
	r := p.interrupt(t)
	wantExit(t, r, ctlOK)
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	want := fmt.Sprintf("closed lease %s; released %d pin", leaseID, pins)
	if pins != 1 {
		want += "s"
	}
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "holding ") || lines[1] != want {
		t.Fatalf("want stderr \"holding ...\" then %q; got %s", want, r)
	}
	return r
}

// ctlWaitCollected runs 'registryctl gc' and 'registryctl get h' until get
// says the object was collected, failing the test after waitTimeout. It
// returns get's last result.
func ctlWaitCollected(t testing.TB, addr, h string) ctlResult {
	t.Helper()
	var r ctlResult
	poll(t, waitTimeout, h+" to be collected", func() bool {
		wantExit(t, ctl(t, addr, "gc"), ctlOK)
		r = ctl(t, addr, "get", h)
		return r.code != ctlOK
	})
	wantErrLine(t, r, ctlNotFound, "registryctl: "+h+": object was collected", "(OBJECT_COLLECTED)")
	return r
}

// ctlEvents parses watch -w json output: one Event per line.
func ctlEvents(t testing.TB, r ctlResult) []*registryv1.Event {
	t.Helper()
	var evs []*registryv1.Event
	for _, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		if line == "" {
			continue
		}
		ev := &registryv1.Event{}
		if err := protojson.Unmarshal([]byte(line), ev); err != nil {
			t.Fatalf("watch line %q is not an Event in JSON: %v\n%s", line, err, r)
		}
		evs = append(evs, ev)
	}
	return evs
}

// isEvent matches a watch -w json line that is an event of kind about h.
func isEvent(kind registryv1.EventKind, h string) func(string) bool {
	return func(line string) bool {
		ev := &registryv1.Event{}
		return protojson.Unmarshal([]byte(line), ev) == nil && ev.GetKind() == kind && ev.GetHandle() == h
	}
}

// kindsOf returns the kinds of h's events, in order, and checks that
// sequence numbers rise along the stream (the CURRENT events that start a
// watch of several objects share the sequence of that moment).
func kindsOf(t testing.TB, evs []*registryv1.Event, h string) []registryv1.EventKind {
	t.Helper()
	var kinds []registryv1.EventKind
	var seq uint64
	for _, ev := range evs {
		if ev.GetSequence() < seq || ev.GetSequence() == seq && ev.GetKind() != registryv1.EventKind_EVENT_KIND_CURRENT {
			t.Errorf("event %v has sequence %d, not above the previous %d", ev.GetKind(), ev.GetSequence(), seq)
		}
		seq = ev.GetSequence()
		if ev.GetHandle() == h {
			kinds = append(kinds, ev.GetKind())
		}
	}
	return kinds
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// blackHole listens on loopback, accepts connections and never says a
// thing: a hung server, or something else than registryd on the port.
func blackHole(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// TestRegistryctlUsageErrors: a mistake in the command line exits 2 with
// one line that says what is wrong and names the help of the command,
// before anything is sent to a server.
func TestRegistryctlUsageErrors(t *testing.T) {
	t.Parallel()
	addr := closedPort(t) // a usage error must come before any dial: else exit 4
	tests := []struct {
		name string
		args []string
		env  []string
		help string   // the command whose help the line points to
		want []string // more of the line
	}{
		{name: "get without a handle", args: []string{"get"}, help: "registryctl get", want: []string{"want one HANDLE, got 0 arguments"}},
		{name: "get with two handles", args: []string{"get", "obj_a", "obj_b"}, help: "registryctl get", want: []string{"got 2 arguments"}},
		{name: "inspect without a handle", args: []string{"inspect"}, help: "registryctl inspect", want: []string{"HANDLE"}},
		{name: "rm without a handle", args: []string{"rm"}, help: "registryctl rm", want: []string{"HANDLE"}},
		{name: "hold without a handle", args: []string{"hold"}, help: "registryctl hold", want: []string{"HANDLE"}},
		{name: "leases without a subcommand", args: []string{"leases"}, help: "registryctl leases", want: []string{"ls or revoke"}},
		{name: "leases revoke without an id", args: []string{"leases", "revoke"}, help: "registryctl leases revoke", want: []string{"LEASE_ID"}},
		{name: "unknown command", args: []string{"insp"}, help: "registryctl", want: []string{`unknown command "insp"`, `did you mean "inspect"?`}},
		{name: "unknown flag", args: []string{"get", "--bogus", "obj_a"}, help: "registryctl get", want: []string{"unknown flag: --bogus"}},
		{name: "bad flag value", args: []string{"ls", "--limit", "many"}, help: "registryctl ls", want: []string{"--limit", `"many"`}},
		{name: "output xml", args: []string{"stats", "-w", "xml"}, help: "registryctl stats", want: []string{`--output "xml"`, "table, json or yaml"}},
		{name: "token without tls off loopback", args: []string{"stats", "--token", "s3cret", "--addr", "registry.example.org:7600"}, help: "registryctl stats", want: []string{"--token", "--tls"}},
		{name: "cert without key", args: []string{"stats", "--cert", "client.pem"}, help: "registryctl stats", want: []string{"--cert and --key"}},
		{name: "zero timeout", args: []string{"stats", "--timeout", "0s"}, help: "registryctl stats", want: []string{"--timeout must be positive"}},
		{name: "ls bad state", args: []string{"ls", "--state", "gone"}, help: "registryctl ls", want: []string{`--state "gone"`}},
		{name: "ls bad label", args: []string{"ls", "--label", "team"}, help: "registryctl ls", want: []string{`--label "team"`, "key=value"}},
		{name: "ls negative limit", args: []string{"ls", "--limit", "-1"}, help: "registryctl ls", want: []string{"--limit"}},
		{name: "put bad label", args: []string{"put", "--label", "=x"}, help: "registryctl put", want: []string{`--label "=x"`}},
		{name: "watch kind with handles", args: []string{"watch", "obj_a", "--kind", "COLLECTED"}, help: "registryctl watch", want: []string{"--kind"}},
		{name: "watch unknown kind", args: []string{"watch", "--kind", "EATEN"}, help: "registryctl watch", want: []string{`--kind "EATEN"`}},
		{name: "output from env", args: []string{"stats"}, env: []string{"REGISTRYCTL_OUTPUT=xml"}, help: "registryctl stats", want: []string{`REGISTRYCTL_OUTPUT "xml": want table, json or yaml`}},
		{name: "timeout from env", args: []string{"stats"}, env: []string{"REGISTRYCTL_TIMEOUT=soon"}, help: "registryctl stats", want: []string{`REGISTRYCTL_TIMEOUT="soon"`}},
		{name: "token from env without tls off loopback", args: []string{"health", "--addr", "registry.example.org:7600"}, env: []string{"REGISTRYCTL_TOKEN=s3cret"}, help: "registryctl health", want: []string{"REGISTRYCTL_TOKEN would be sent in clear text", "--tls"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCtl(t, ctlOpts{addr: addr, env: tt.env}, tt.args...)
			line := wantErrLine(t, r, ctlUsage, tt.want...)
			if want := "; see '" + tt.help + " --help'"; !strings.HasSuffix(line, want) {
				t.Errorf("error line %q does not end with %q", line, want)
			}
			if r.stdout != "" {
				t.Errorf("stdout is not empty: %s", r)
			}
			if strings.Contains(r.stderr, "s3cret") {
				t.Errorf("the token is echoed: %s", r)
			}
			if r.took > ctlFast {
				t.Errorf("a usage error took %v", r.took)
			}
		})
	}
}

// TestRegistryctlUnreachable: with no registryd to answer, every command
// says so in one line, naming the address and what to check, and exits 4
// within its timeout: at once when the port is closed, after --timeout
// when something accepts connections but never answers.
func TestRegistryctlUnreachable(t *testing.T) {
	t.Parallel()
	// Well-formed, but no server ever sees them.
	const (
		h   = "obj_AQAAAaIX-Rq2OrDMVaTN3DeLaXbh_8fxPzveKN9RGr3-87uH4zNu"
		lid = "lse_AQAAAaIX-Rq2hh2ADQAbtyYEEBw7logWc-wF0fnEygY_2swXoPtF"
	)
	commands := []struct {
		name  string
		args  []string
		stdin []byte
	}{
		{name: "stats", args: []string{"stats"}},
		{name: "ls", args: []string{"ls"}},
		{name: "inspect", args: []string{"inspect", h}},
		{name: "put", args: []string{"put"}, stdin: []byte("payload")},
		{name: "put --hold", args: []string{"put", "--hold"}, stdin: []byte("payload")},
		{name: "get", args: []string{"get", h}},
		{name: "hold", args: []string{"hold", h}},
		{name: "leases ls", args: []string{"leases", "ls"}},
		{name: "leases revoke", args: []string{"leases", "revoke", lid, "--reason", "test"}},
		{name: "rm", args: []string{"rm", "--force", h}},
		{name: "gc", args: []string{"gc"}},
		{name: "watch", args: []string{"watch"}},
		{name: "watch HANDLE", args: []string{"watch", h}},
		{name: "health", args: []string{"health"}},
		{name: "version", args: []string{"version"}},
	}
	checkStdout := func(t *testing.T, name string, r ctlResult) {
		t.Helper()
		switch {
		case name == "version": // the client's own version is still worth telling
			if !strings.HasPrefix(r.stdout, "registryctl ") || strings.Count(r.stdout, "\n") != 1 {
				t.Errorf("want stdout to be the client's version line only; got %s", r)
			}
		case r.stdout != "":
			t.Errorf("want nothing on stdout; got %s", r)
		}
	}

	t.Run("closed port", func(t *testing.T) {
		t.Parallel()
		addr := closedPort(t)
		for _, c := range commands {
			t.Run(c.name, func(t *testing.T) {
				r := runCtl(t, ctlOpts{addr: addr, stdin: c.stdin}, c.args...)
				line := wantErrLine(t, r, ctlUnavailable, "--addr", "connection refused")
				if want := "registryctl: cannot reach registryd at " + addr + ":"; !strings.HasPrefix(line, want) {
					t.Errorf("error line %q does not start with %q", line, want)
				}
				checkStdout(t, c.name, r)
				if r.took > ctlFast {
					t.Errorf("took %v to find nothing listening", r.took)
				}
			})
		}
	})

	t.Run("black hole", func(t *testing.T) {
		t.Parallel()
		addr := blackHole(t)
		// Run them all at once: each takes its --timeout of 1s.
		results := make([]ctlResult, len(commands))
		errs := make([]error, len(commands))
		var wg sync.WaitGroup
		for i, c := range commands {
			wg.Go(func() {
				results[i], errs[i] = execCtl(ctlOpts{addr: addr, stdin: c.stdin}, append([]string{"--timeout", "1s"}, c.args...))
			})
		}
		wg.Wait()
		for i, c := range commands {
			t.Run(c.name, func(t *testing.T) {
				if errs[i] != nil {
					t.Fatal(errs[i])
				}
				r := results[i]
				wantErrLine(t, r, ctlUnavailable, "no answer from registryd at "+addr+" within 1s", "--addr", "--timeout")
				checkStdout(t, c.name, r)
				if r.took > ctlFast {
					t.Errorf("took %v with --timeout 1s", r.took)
				}
			})
		}
	})
}

// TestRegistryctlExitCodes: the exit status tells the kind of failure.
func TestRegistryctlExitCodes(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	r := runCtl(t, ctlOpts{addr: d.Addr, stdin: []byte("x")}, "put")
	wantSuccess(t, r)
	h := strings.TrimSpace(r.stdout)
	// The same handle with its last character, part of its MAC, altered:
	// well-formed, never issued.
	last := "A"
	if strings.HasSuffix(h, last) {
		last = "B"
	}
	forged := h[:len(h)-1] + last

	tests := []struct {
		name  string
		addr  string
		args  []string
		stdin []byte
		code  int
		want  string // in the error line
	}{
		{name: "ok", args: []string{"health"}, code: ctlOK},
		{name: "malformed handle", args: []string{"get", "obj_nope"}, code: ctlError, want: "(HANDLE_MALFORMED)"},
		{name: "malformed lease id", args: []string{"leases", "revoke", "lse_nope"}, code: ctlError, want: "(LEASE_ID_MALFORMED)"},
		{name: "empty input", args: []string{"put"}, stdin: []byte{}, code: ctlError, want: "stdin is empty"},
		{name: "missing file", args: []string{"put", filepath.Join(t.TempDir(), "absent.bin")}, code: ctlError, want: "absent.bin"},
		{name: "usage", args: []string{"get"}, code: ctlUsage, want: "see 'registryctl get --help'"},
		{name: "unknown handle", args: []string{"get", forged}, code: ctlNotFound, want: "(HANDLE_UNKNOWN)"},
		{name: "unknown service", args: []string{"health", "--service", "no.such.Service"}, code: ctlNotFound, want: "unknown service"},
		{name: "unavailable", addr: closedPort(t), args: []string{"stats"}, code: ctlUnavailable, want: "cannot reach registryd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := cmp.Or(tt.addr, d.Addr)
			r := runCtl(t, ctlOpts{addr: addr, stdin: tt.stdin}, tt.args...)
			if tt.code == ctlOK {
				wantSuccess(t, r)
				return
			}
			wantErrLine(t, r, tt.code, tt.want)
			if r.stdout != "" {
				t.Errorf("want nothing on stdout; got %s", r)
			}
		})
	}
}

// TestRegistryctlObjects: put, get, inspect and ls, table and json.
func TestRegistryctlObjects(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	dir := t.TempDir()

	// Two objects held for the whole test by put --hold: one from stdin
	// with a content type and labels, one from a file.
	data1 := []byte("the first object, from stdin\n")
	p1, h1, l1 := ctlPutHold(t, d.Addr, data1, "--content-type", "text/plain", "--label", "team=ml", "-l", "tier=gold", "--client-name", "ctl-objects")
	data2 := []byte(`{"second": true}`)
	file2 := filepath.Join(dir, "second.json")
	if err := os.WriteFile(file2, data2, 0o600); err != nil {
		t.Fatal(err)
	}
	p2, h2, l2 := ctlPutHold(t, d.Addr, nil, file2)

	t.Run("put", func(t *testing.T) {
		r := runCtl(t, ctlOpts{addr: d.Addr, stdin: []byte("weak")}, "put", "--label", "kind=weak")
		wantSuccess(t, r)
		if !handleRE.MatchString(strings.TrimSuffix(r.stdout, "\n")) || strings.Count(r.stdout, "\n") != 1 {
			t.Errorf("want stdout to be the new handle; got %s", r)
		}
		r = runCtl(t, ctlOpts{addr: d.Addr, stdin: []byte("weak, json")}, "put", "-", "-w", "json", "--content-type", "application/x-test")
		wantSuccess(t, r)
		var resp registryv1.PutResponse
		decode(t, r, &resp)
		info := resp.GetInfo()
		if !handleRE.MatchString(resp.GetHandle()) || info.GetHandle() != resp.GetHandle() {
			t.Errorf("put -w json: handle %q, info.handle %q; want the same obj_ handle", resp.GetHandle(), info.GetHandle())
		}
		// Not held: weak from the start.
		if info.GetState() != registryv1.ObjectState_OBJECT_STATE_WEAK || info.GetPinCount() != 0 ||
			info.GetSize() != int64(len("weak, json")) || info.GetContentType() != "application/x-test" {
			t.Errorf("put -w json: info = %v; want weak, 0 pins, size %d, application/x-test", info, len("weak, json"))
		}
	})

	t.Run("get", func(t *testing.T) {
		r := ctl(t, d.Addr, "get", h1)
		wantSuccess(t, r)
		if r.stdout != string(data1) {
			t.Errorf("get wrote %q, want %q", r.stdout, data1)
		}

		out := filepath.Join(dir, "out.json")
		r = ctl(t, d.Addr, "get", h2, "-O", out)
		wantSuccess(t, r)
		if r.stdout != "" {
			t.Errorf("get -O wrote to stdout too: %s", r)
		}
		if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, data2) {
			t.Errorf("get -O wrote %q (%v), want %q", got, err, data2)
		}

		r = ctl(t, d.Addr, "get", h1, "-w", "json")
		wantSuccess(t, r)
		var resp registryv1.ResolveResponse
		decode(t, r, &resp)
		if !bytes.Equal(resp.GetData(), data1) || resp.GetInfo().GetHandle() != h1 ||
			resp.GetInfo().GetState() != registryv1.ObjectState_OBJECT_STATE_PINNED || resp.GetInfo().GetPinCount() != 1 {
			t.Errorf("get -w json = %v; want data %q, %s pinned once", &resp, data1, h1)
		}
	})

	t.Run("inspect", func(t *testing.T) {
		r := ctl(t, d.Addr, "inspect", h1)
		wantSuccess(t, r)
		rows := tableRows(r.stdout)
		for key, want := range map[string]string{"HANDLE": h1, "OWNER": "anonymous", "STATE": "pinned", "LABELS": "team=ml,tier=gold", "PINS": "1"} {
			if row := rowOf(rows, key); len(row) < 2 || row[1] != want {
				t.Errorf("inspect row %s = %q, want %q\n%s", key, row, want, r.stdout)
			}
		}
		if !strings.Contains(r.stdout, "CONTENT TYPE  text/plain\n") {
			t.Errorf("inspect does not show content type text/plain:\n%s", r.stdout)
		}
		// Who pins it: the lease of the put --hold, and its client name.
		if rowOf(rows, "PINNED") == nil {
			t.Errorf("inspect has no PINNED BY section:\n%s", r.stdout)
		}
		if row := rowOf(rows, l1); len(row) < 2 || row[1] != "ctl-objects" {
			t.Errorf("inspect row of lease %s = %q, want client ctl-objects\n%s", l1, row, r.stdout)
		}

		r = ctl(t, d.Addr, "inspect", h1, "-w", "json")
		wantSuccess(t, r)
		var resp registryv1.InspectObjectResponse
		decode(t, r, &resp)
		info := resp.GetInfo()
		if info.GetHandle() != h1 || info.GetContentType() != "text/plain" || info.GetSize() != int64(len(data1)) ||
			info.GetPinCount() != 1 || len(info.GetLabels()) != 2 || info.GetLabels()["team"] != "ml" || info.GetLabels()["tier"] != "gold" {
			t.Errorf("inspect -w json info = %v; want %s, text/plain, %d bytes, 1 pin, labels team=ml tier=gold", info, h1, len(data1))
		}
		if pins := resp.GetPins(); len(pins) != 1 || pins[0].GetLeaseId() != l1 || pins[0].GetClientName() != "ctl-objects" {
			t.Errorf("inspect -w json pins = %v; want lease %s of ctl-objects", pins, l1)
		}

		r = ctl(t, d.Addr, "inspect", h2, "-w", "json")
		wantSuccess(t, r)
		resp.Reset()
		decode(t, r, &resp)
		if resp.GetInfo().GetContentType() != "application/json" || len(resp.GetPins()) != 1 || resp.GetPins()[0].GetLeaseId() != l2 {
			t.Errorf("inspect %s -w json = %v; want content type application/json from the file name, pinned by %s", h2, &resp, l2)
		}
	})

	// handles lists with -w json and returns the handles, sorted.
	handles := func(t *testing.T, args ...string) (hs []string, next string) {
		t.Helper()
		r := ctl(t, d.Addr, append([]string{"ls", "-w", "json"}, args...)...)
		wantSuccess(t, r)
		var resp registryv1.ListObjectsResponse
		decode(t, r, &resp)
		for _, o := range resp.GetObjects() {
			hs = append(hs, o.GetHandle())
		}
		slices.Sort(hs)
		return hs, resp.GetNextPageToken()
	}
	sorted := func(hs ...string) []string { return slices.Sorted(slices.Values(hs)) }

	t.Run("ls", func(t *testing.T) {
		for _, tt := range []struct {
			args []string
			want []string
		}{
			{args: []string{"--state", "pinned"}, want: sorted(h1, h2)},
			{args: []string{"--label", "team=ml"}, want: []string{h1}},
			{args: []string{"--label", "team=ml", "-l", "tier=gold"}, want: []string{h1}},
			{args: []string{"--label", "team=ml", "-l", "tier=silver"}},
			{args: []string{"--lease", l2}, want: []string{h2}},
		} {
			if got, _ := handles(t, tt.args...); !slices.Equal(got, tt.want) {
				t.Errorf("ls %s listed %q, want %q", strings.Join(tt.args, " "), got, tt.want)
			}
		}
		// --state weak lists only weak objects (those put above, unless
		// already collected).
		r := ctl(t, d.Addr, "ls", "--state", "weak", "-w", "json")
		wantSuccess(t, r)
		var resp registryv1.ListObjectsResponse
		decode(t, r, &resp)
		for _, o := range resp.GetObjects() {
			if o.GetState() != registryv1.ObjectState_OBJECT_STATE_WEAK {
				t.Errorf("ls --state weak listed %v", o)
			}
		}

		r = ctl(t, d.Addr, "ls", "--state", "pinned")
		wantSuccess(t, r)
		rows := tableRows(r.stdout)
		if len(rows) != 3 || !slices.Equal(rows[0], []string{"HANDLE", "STATE", "PINS", "SIZE", "TYPE", "AGE", "LABELS"}) {
			t.Fatalf("ls --state pinned: want a header and 2 rows; got %s", r)
		}
		if row := rowOf(rows, h1); len(row) != 8 || row[1] != "pinned" || row[2] != "1" || row[5] != "text/plain" || row[7] != "team=ml,tier=gold" {
			t.Errorf("ls row of %s = %q", h1, row)
		}

		r = ctl(t, d.Addr, "ls", "--label", "team=nobody")
		wantExit(t, r, ctlOK)
		if r.stdout != "" || r.stderr != "No objects.\n" {
			t.Errorf("ls of nothing: want \"No objects.\" on stderr only; got %s", r)
		}
	})

	t.Run("ls pages", func(t *testing.T) {
		// Five more objects, pinned by a lease of the test's own.
		c := dial(t, d.Addr)
		l := openLease(t, c, &registryv1.OpenLease{ClientName: "e2e-pages"})
		var all []string
		for i := range 5 {
			resp, err := c.reg.Put(rpcCtx(t), &registryv1.PutRequest{Data: fmt.Appendf(nil, "page object %d", i), LeaseId: l.ID(), Labels: map[string]string{"set": "pages"}})
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			all = append(all, resp.GetHandle())
		}
		slices.Sort(all)

		r := ctl(t, d.Addr, "ls", "--label", "set=pages", "--limit", "3")
		wantExit(t, r, ctlOK)
		if rows := tableRows(r.stdout); len(rows) != 4 || rows[0][0] != "HANDLE" {
			t.Errorf("ls --limit 3 of 5: want a header and 3 rows; got %s", r)
		}
		if want := "more objects than --limit 3; raise it, or use 0 for all\n"; r.stderr != want {
			t.Errorf("ls --limit 3 of 5: want stderr %q; got %s", want, r)
		}

		first, next := handles(t, "--label", "set=pages", "--limit", "3")
		if len(first) != 3 || next == "" {
			t.Errorf("ls --limit 3 -w json: %d objects, next_page_token %q; want 3 and a token", len(first), next)
		}
		for _, h := range first {
			if !slices.Contains(all, h) {
				t.Errorf("ls --limit 3 listed %s, not one of the five", h)
			}
		}
		if got, next := handles(t, "--label", "set=pages"); !slices.Equal(got, all) || next != "" {
			t.Errorf("ls (all) listed %q, next_page_token %q; want all five, no token", got, next)
		}

		r = ctl(t, d.Addr, "ls", "--label", "set=pages", "--limit", "5")
		wantSuccess(t, r) // exactly the limit: no note
		if rows := tableRows(r.stdout); len(rows) != 6 {
			t.Errorf("ls --limit 5 of 5: want a header and 5 rows; got %s", r)
		}
		l.close(t, 5)
	})

	wantReleased(t, p1, l1, 1)
	wantReleased(t, p2, l2, 1)
	if r := p1.result(); r.stdout != h1+"\n" {
		t.Errorf("put --hold: want the handle on stdout; got %s", r)
	}
}

// TestRegistryctlHold: hold pins every handle under one lease until
// interrupted, or none of them.
func TestRegistryctlHold(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	pa, ha, la := ctlPutHold(t, d.Addr, []byte("object a"), "--client-name", "ctl-hold-a")
	pb, hb, lb := ctlPutHold(t, d.Addr, []byte("object b"), "--client-name", "ctl-hold-b")
	r := runCtl(t, ctlOpts{addr: d.Addr, stdin: []byte("object c")}, "put")
	wantSuccess(t, r)
	hc := strings.TrimSpace(r.stdout)
	ctlWaitCollected(t, d.Addr, hc)

	// leases lists the live leases by id.
	leases := func(t *testing.T) map[string]*registryv1.LeaseInfo {
		t.Helper()
		r := ctl(t, d.Addr, "leases", "ls", "-w", "json")
		wantSuccess(t, r)
		var resp registryv1.ListLeasesResponse
		decode(t, r, &resp)
		out := map[string]*registryv1.LeaseInfo{}
		for _, l := range resp.GetLeases() {
			out[l.GetLeaseId()] = l
		}
		return out
	}
	pins := func(t *testing.T, h string) []*registryv1.PinHolder {
		t.Helper()
		r := ctl(t, d.Addr, "inspect", h, "-w", "json")
		wantSuccess(t, r)
		var resp registryv1.InspectObjectResponse
		decode(t, r, &resp)
		if int(resp.GetInfo().GetPinCount()) != len(resp.GetPins()) {
			t.Errorf("inspect %s: pin_count %d but %d pins listed", h, resp.GetInfo().GetPinCount(), len(resp.GetPins()))
		}
		return resp.GetPins()
	}
	holdingN := regexp.MustCompile(`^holding (\d+) objects? under lease (lse_[A-Za-z0-9_-]{52}); interrupt \(Ctrl-C\) to release$`)

	t.Run("holds until interrupted", func(t *testing.T) {
		p := startCtl(t, ctlOpts{addr: d.Addr}, "hold", ha, hb, "--client-name", "ctl-hold")
		m := holdingN.FindStringSubmatch(p.waitStderr(t, "holding "))
		if m == nil || m[1] != "2" {
			t.Fatalf("hold: want \"holding 2 objects under lease ID; ...\"; got %s", p.result())
		}
		lid := m[2]
		if l := leases(t)[lid]; l == nil || !l.GetAttached() || l.GetClientName() != "ctl-hold" || l.GetPinCount() != 2 {
			t.Errorf("hold's lease as listed = %v; want attached, client ctl-hold, 2 pins", l)
		}
		if ps := pins(t, ha); len(ps) != 2 || !slices.ContainsFunc(ps, func(p *registryv1.PinHolder) bool {
			return p.GetLeaseId() == lid && p.GetClientName() == "ctl-hold"
		}) {
			t.Errorf("pins of %s = %v; want its put --hold's and %s of ctl-hold", ha, ps, lid)
		}

		r := wantReleased(t, p, lid, 2)
		rows := tableRows(r.stdout)
		if len(rows) != 3 || !slices.Equal(rows[0], []string{"HANDLE", "RESULT", "SIZE", "DETAIL"}) {
			t.Fatalf("hold: want a header and a row per handle; got %s", r)
		}
		for _, h := range []string{ha, hb} {
			if row := rowOf(rows, h); len(row) < 2 || row[1] != "pinned" {
				t.Errorf("hold row of %s = %q, want pinned", h, row)
			}
		}
		if _, ok := leases(t)[lid]; ok {
			t.Errorf("lease %s is still listed after hold closed it", lid)
		}
		if ps := pins(t, ha); len(ps) != 1 || ps[0].GetLeaseId() != la {
			t.Errorf("pins of %s after hold ended = %v; want only %s", ha, ps, la)
		}
	})

	t.Run("json", func(t *testing.T) {
		p := startCtl(t, ctlOpts{addr: d.Addr}, "hold", hb, "-w", "json")
		m := holdingN.FindStringSubmatch(p.waitStderr(t, "holding "))
		if m == nil || m[1] != "1" {
			t.Fatalf("hold: want \"holding 1 object under lease ID; ...\"; got %s", p.result())
		}
		r := wantReleased(t, p, m[2], 1)
		var resp registryv1.PinResults
		decode(t, r, &resp)
		if res := resp.GetResults(); len(res) != 1 || res[0].GetHandle() != hb || res[0].GetOutcome() != registryv1.PinOutcome_PIN_OUTCOME_PINNED {
			t.Errorf("hold -w json = %v; want one result, %s pinned", &resp, hb)
		}
	})

	t.Run("all or nothing", func(t *testing.T) {
		r := ctl(t, d.Addr, "hold", ha, hc, hb, "--client-name", "ctl-all-or-nothing")
		line := wantErrLine(t, r, ctlNotFound)
		if !regexp.MustCompile(`^registryctl: 1 of 3 handles could not be pinned; closed lease lse_[A-Za-z0-9_-]{52}, releasing 2 pins$`).MatchString(line) {
			t.Errorf("hold with a collected handle: error line %q", line)
		}
		rows := tableRows(r.stdout)
		if row := rowOf(rows, hc); len(row) < 2 || row[1] != "failed" || !strings.Contains(strings.Join(row, " "), "(OBJECT_COLLECTED)") {
			t.Errorf("hold row of %s = %q, want failed (OBJECT_COLLECTED)\n%s", hc, row, r.stdout)
		}
		for _, h := range []string{ha, hb} {
			if row := rowOf(rows, h); len(row) < 2 || row[1] != "pinned" {
				t.Errorf("hold row of %s = %q, want pinned (then released)\n%s", h, row, r.stdout)
			}
		}
		// Nothing is left pinned by it: only the two put --hold leases
		// live, each pinning its one object.
		ls := leases(t)
		if len(ls) != 2 || ls[la].GetPinCount() != 1 || ls[lb].GetPinCount() != 1 {
			t.Errorf("leases after a failed hold = %v; want only %s and %s, one pin each", ls, la, lb)
		}
		for _, h := range []string{ha, hb} {
			if ps := pins(t, h); len(ps) != 1 {
				t.Errorf("pins of %s after a failed hold = %v; want one", h, ps)
			}
		}
	})

	t.Run("failures", func(t *testing.T) {
		// Not found only: 3. Anything else among the failures: 1.
		wantErrLine(t, ctl(t, d.Addr, "hold", hc), ctlNotFound, "1 of 1 handle could not be pinned", "releasing 0 pins")
		wantErrLine(t, ctl(t, d.Addr, "hold", hc, "obj_nope"), ctlError, "2 of 2 handles could not be pinned")
	})

	// Once their holders stop, nothing keeps a and b: hold left no pin.
	wantReleased(t, pa, la, 1)
	wantReleased(t, pb, lb, 1)
	ctlWaitCollected(t, d.Addr, ha)
	ctlWaitCollected(t, d.Addr, hb)
	r = ctl(t, d.Addr, "leases", "ls")
	if r.code != ctlOK || r.stdout != "" || r.stderr != "No leases.\n" {
		t.Errorf("leases ls with none: want \"No leases.\" on stderr; got %s", r)
	}
}

// TestRegistryctlLeases: leases ls lists the holders; leases revoke ends a
// lease, and its holder process exits 1 saying an operator revoked it, and
// why.
func TestRegistryctlLeases(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	p1, h1, l1 := ctlPutHold(t, d.Addr, []byte("revoked under put --hold"), "--client-name", "ctl-revokee")
	p2, h2, l2 := ctlPutHold(t, d.Addr, []byte("held twice"), "--client-name", "ctl-second")
	p3 := startCtl(t, ctlOpts{addr: d.Addr}, "hold", h2, "--client-name", "ctl-third")
	l3 := regexp.MustCompile(`lse_[A-Za-z0-9_-]{52}`).FindString(p3.waitStderr(t, "holding 1 object under lease "))

	r := ctl(t, d.Addr, "leases", "ls")
	wantSuccess(t, r)
	rows := tableRows(r.stdout)
	if len(rows) != 4 || !slices.Equal(rows[0], []string{"LEASE", "CLIENT", "IDENTITY", "PEER", "PINS", "STATUS", "GRACE", "AGE"}) {
		t.Fatalf("leases ls: want a header and 3 rows; got %s", r)
	}
	if row := rowOf(rows, l1); len(row) != 8 || row[1] != "ctl-revokee" || row[2] != "anonymous" || !strings.HasPrefix(row[3], "127.0.0.1:") || row[4] != "1" || row[5] != "attached" {
		t.Errorf("leases ls row of %s = %q", l1, row)
	}

	r = ctl(t, d.Addr, "leases", "ls", "-w", "json")
	wantSuccess(t, r)
	var list registryv1.ListLeasesResponse
	decode(t, r, &list)
	byID := map[string]*registryv1.LeaseInfo{}
	for _, l := range list.GetLeases() {
		byID[l.GetLeaseId()] = l
	}
	for id, client := range map[string]string{l1: "ctl-revokee", l2: "ctl-second", l3: "ctl-third"} {
		if l := byID[id]; l == nil || l.GetClientName() != client || !l.GetAttached() || l.GetPinCount() != 1 {
			t.Errorf("leases ls -w json: %s = %v; want attached, client %s, 1 pin", id, l, client)
		}
	}
	if len(byID) != 3 {
		t.Errorf("leases ls -w json lists %d leases, want 3", len(byID))
	}

	t.Run("revoke put --hold", func(t *testing.T) {
		r := ctl(t, d.Addr, "leases", "revoke", l1, "--reason", "disk maintenance")
		wantSuccess(t, r)
		if want := "revoked " + l1 + "; released 1 pin\n"; r.stdout != want {
			t.Errorf("leases revoke: want stdout %q; got %s", want, r)
		}
		r = p1.wait(t)
		wantExit(t, r, ctlError)
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		want := "registryctl: lease " + l1 + ` ended: an operator revoked it ("disk maintenance"); 1 pin released`
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "holding "+h1) || lines[1] != want {
			t.Errorf("the revoked put --hold: want stderr \"holding ...\" then %q; got %s", want, r)
		}
		// Gone: a second revoke does not find it.
		wantErrLine(t, ctl(t, d.Addr, "leases", "revoke", l1), ctlNotFound, l1, "(LEASE_NOT_FOUND)")
	})

	t.Run("revoke hold", func(t *testing.T) {
		r := ctl(t, d.Addr, "leases", "revoke", l3, "--reason", "too greedy", "-w", "json")
		wantSuccess(t, r)
		var resp registryv1.RevokeLeaseResponse
		decode(t, r, &resp)
		if resp.GetReleased() != 1 {
			t.Errorf("leases revoke -w json = %v, want released 1", &resp)
		}
		r = p3.wait(t)
		wantExit(t, r, ctlError)
		if want := "registryctl: lease " + l3 + ` ended: an operator revoked it ("too greedy"); 1 pin released` + "\n"; !strings.HasSuffix(r.stderr, want) {
			t.Errorf("the revoked hold: want stderr to end with %q; got %s", want, r)
		}
	})

	wantReleased(t, p2, l2, 1)
	r = ctl(t, d.Addr, "leases", "ls", "-w", "json")
	wantSuccess(t, r)
	list.Reset()
	decode(t, r, &list)
	if len(list.GetLeases()) != 0 {
		t.Errorf("leases ls -w json after every lease ended = %v", &list)
	}
}

// TestRegistryctlRm: rm refuses a pinned object, naming who pins it;
// --force deletes it anyway, and its handle then answers "deleted".
func TestRegistryctlRm(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	data := []byte("to be deleted")
	p, h, lid := ctlPutHold(t, d.Addr, data, "--client-name", "ctl-rm-holder")

	r := ctl(t, d.Addr, "rm", h)
	wantErrLine(t, r, ctlError, "registryctl: "+h+": refusing to delete", "pinned by 1 lease: "+lid+" (ctl-rm-holder)", "--force")
	if r.stdout != "" {
		t.Errorf("refused rm wrote to stdout: %s", r)
	}
	if r := ctl(t, d.Addr, "get", h); r.code != ctlOK || r.stdout != string(data) {
		t.Fatalf("after a refused rm, get: %s", r)
	}

	r = ctl(t, d.Addr, "rm", "--force", h)
	wantSuccess(t, r)
	if want := fmt.Sprintf("deleted %s (%d B); released its pin in %s\n", h, len(data), lid); r.stdout != want {
		t.Errorf("rm --force: want stdout %q; got %s", want, r)
	}
	wantErrLine(t, ctl(t, d.Addr, "get", h), ctlNotFound, "registryctl: "+h+": object was deleted", "(OBJECT_DELETED)")
	wantErrLine(t, ctl(t, d.Addr, "rm", h), ctlNotFound, "(OBJECT_DELETED)")
	wantErrLine(t, ctl(t, d.Addr, "inspect", h), ctlNotFound, "(OBJECT_DELETED)")
	// The holder's lease lives on, with nothing left to pin.
	wantReleased(t, p, lid, 0)

	p2, h2, lid2 := ctlPutHold(t, d.Addr, []byte("deleted, json"))
	r = ctl(t, d.Addr, "rm", h2, "--force", "-w", "json")
	wantSuccess(t, r)
	var resp registryv1.DeleteObjectResponse
	decode(t, r, &resp)
	if resp.GetInfo().GetHandle() != h2 || !slices.Equal(resp.GetReleasedLeaseIds(), []string{lid2}) {
		t.Errorf("rm --force -w json = %v; want %s, released lease %s", &resp, h2, lid2)
	}
	wantReleased(t, p2, lid2, 0)
}

// TestRegistryctlWatch: watch prints every object's events until
// interrupted, or named objects' until they end; --kind filters, and -w
// json prints one JSON object per line.
func TestRegistryctlWatch(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	all := startCtl(t, ctlOpts{addr: d.Addr}, "watch", "-w", "json")
	table := startCtl(t, ctlOpts{addr: d.Addr}, "watch")
	ends := startCtl(t, ctlOpts{addr: d.Addr}, "watch", "--kind", "collected", "--kind", "DELETED", "-w", "json")
	for _, w := range []*ctlProc{all, table, ends} {
		w.waitStderr(t, "watching all objects")
	}

	p1, h1, l1 := ctlPutHold(t, d.Addr, []byte("collected while watched"))
	p2, h2, l2 := ctlPutHold(t, d.Addr, []byte("deleted while watched"))
	named := startCtl(t, ctlOpts{addr: d.Addr}, "watch", h1, h2, "-w", "json")
	named.waitStderr(t, "watching "+h1+" "+h2)

	wantReleased(t, p1, l1, 1)
	wantSuccess(t, ctl(t, d.Addr, "rm", "--force", h2))
	ctlWaitCollected(t, d.Addr, h1)

	t.Run("named objects", func(t *testing.T) {
		// It ends by itself once both are gone.
		r := named.wait(t)
		wantExit(t, r, ctlOK)
		if want := "watching " + h1 + " " + h2 + "\n"; r.stderr != want {
			t.Errorf("watch: want stderr %q; got %s", want, r)
		}
		evs := ctlEvents(t, r)
		if k := kindsOf(t, evs, h1); !slices.Equal(k, []registryv1.EventKind{
			registryv1.EventKind_EVENT_KIND_CURRENT, registryv1.EventKind_EVENT_KIND_UNPINNED,
			registryv1.EventKind_EVENT_KIND_WEAK, registryv1.EventKind_EVENT_KIND_COLLECTED,
		}) {
			t.Errorf("events of %s = %v; want CURRENT UNPINNED WEAK COLLECTED\n%s", h1, k, r)
		}
		if k := kindsOf(t, evs, h2); !slices.Equal(k, []registryv1.EventKind{registryv1.EventKind_EVENT_KIND_CURRENT, registryv1.EventKind_EVENT_KIND_DELETED}) {
			t.Errorf("events of %s = %v; want CURRENT DELETED\n%s", h2, k, r)
		}
		for _, ev := range evs {
			if ev.GetKind() == registryv1.EventKind_EVENT_KIND_CURRENT && (ev.GetState() != registryv1.ObjectState_OBJECT_STATE_PINNED || ev.GetPinCount() != 1) {
				t.Errorf("CURRENT event %v; want pinned once", ev)
			}
		}
	})

	t.Run("all objects", func(t *testing.T) {
		all.waitStdout(t, "COLLECTED of "+h1, isEvent(registryv1.EventKind_EVENT_KIND_COLLECTED, h1))
		all.waitStdout(t, "DELETED of "+h2, isEvent(registryv1.EventKind_EVENT_KIND_DELETED, h2))
		r := all.interrupt(t)
		wantExit(t, r, ctlOK)
		if r.stderr != "watching all objects\n" {
			t.Errorf("watch: want stderr \"watching all objects\"; got %s", r)
		}
		evs := ctlEvents(t, r)
		if k := kindsOf(t, evs, h1); !slices.Equal(k, []registryv1.EventKind{
			registryv1.EventKind_EVENT_KIND_CREATED, registryv1.EventKind_EVENT_KIND_PINNED, registryv1.EventKind_EVENT_KIND_UNPINNED,
			registryv1.EventKind_EVENT_KIND_WEAK, registryv1.EventKind_EVENT_KIND_COLLECTED,
		}) {
			t.Errorf("events of %s = %v; want CREATED PINNED UNPINNED WEAK COLLECTED\n%s", h1, k, r)
		}
		for _, ev := range evs {
			if ev.GetKind() == registryv1.EventKind_EVENT_KIND_UNPINNED && ev.GetHandle() == h1 && ev.GetLeaseId() != l1 {
				t.Errorf("UNPINNED event %v; want lease %s", ev, l1)
			}
		}
		if k := kindsOf(t, evs, h2); len(k) < 2 || k[0] != registryv1.EventKind_EVENT_KIND_CREATED || k[len(k)-1] != registryv1.EventKind_EVENT_KIND_DELETED {
			t.Errorf("events of %s = %v; want CREATED first, DELETED last", h2, k)
		}
	})

	t.Run("kind filter", func(t *testing.T) {
		ends.waitStdout(t, "DELETED of "+h2, isEvent(registryv1.EventKind_EVENT_KIND_DELETED, h2))
		ends.waitStdout(t, "COLLECTED of "+h1, isEvent(registryv1.EventKind_EVENT_KIND_COLLECTED, h1))
		r := ends.interrupt(t)
		wantExit(t, r, ctlOK)
		evs := ctlEvents(t, r)
		if len(evs) != 2 {
			t.Errorf("watch --kind collected --kind DELETED printed %d events, want 2\n%s", len(evs), r)
		}
		for _, ev := range evs {
			if k := ev.GetKind(); k != registryv1.EventKind_EVENT_KIND_COLLECTED && k != registryv1.EventKind_EVENT_KIND_DELETED {
				t.Errorf("watch --kind collected --kind DELETED printed %v", ev)
			}
		}
	})

	t.Run("table", func(t *testing.T) {
		hasRow := func(kind, h string) func(string) bool {
			return func(line string) bool { f := strings.Fields(line); return len(f) > 3 && f[2] == kind && f[3] == h }
		}
		table.waitStdout(t, "COLLECTED of "+h1, hasRow("COLLECTED", h1))
		table.waitStdout(t, "DELETED of "+h2, hasRow("DELETED", h2))
		r := table.interrupt(t)
		wantExit(t, r, ctlOK)
		rows := tableRows(r.stdout)
		if len(rows) == 0 || !slices.Equal(rows[0], []string{"TIME", "SEQ", "KIND", "HANDLE", "STATE", "PINS", "SIZE", "LEASE"}) {
			t.Fatalf("watch table: want a header first; got %s", r)
		}
		for _, row := range rows[1:] {
			if len(row) != 9 { // SIZE is "N B"
				t.Errorf("watch table row %q has %d fields, want 9", row, len(row))
			}
		}
	})

	wantReleased(t, p2, l2, 0)
}

// TestRegistryctlLifecycle is the README's tour with registryctl alone:
// put --hold in one process, get from another, a watch in a third; the
// holder stops, gc collects the object, get fails with the collected
// message, and the watch printed each step, then ended by itself.
func TestRegistryctlLifecycle(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	data := randomBytes(4096)

	holder, h, lid := ctlPutHold(t, d.Addr, data, "--client-name", "tour")
	w := startCtl(t, ctlOpts{addr: d.Addr}, "watch", h, "-w", "json")
	w.waitStderr(t, "watching "+h)

	r := ctl(t, d.Addr, "get", h)
	wantSuccess(t, r)
	if r.stdout != string(data) {
		t.Fatalf("get returned %d bytes that differ from the %d put", len(r.stdout), len(data))
	}

	// A forced collection while it is pinned frees nothing.
	r = ctl(t, d.Addr, "gc", "-w", "json")
	wantSuccess(t, r)
	var gc registryv1.CollectResponse
	decode(t, r, &gc)
	if gc.GetCollectedObjects() != 0 {
		t.Errorf("gc while pinned collected %d objects, want 0", gc.GetCollectedObjects())
	}
	if r := ctl(t, d.Addr, "get", h); r.code != ctlOK || r.stdout != string(data) {
		t.Fatalf("get after gc while pinned: %s", r)
	}

	wantReleased(t, holder, lid, 1)
	r = ctlWaitCollected(t, d.Addr, h)
	want := "registryctl: " + h + ": object was collected: no lease pinned it and the garbage collector took it; hold a lease on objects you still need (OBJECT_COLLECTED)"
	if line := errLine(t, r); line != want {
		t.Errorf("get of a collected object:\n got %q\nwant %q", line, want)
	}

	r = w.wait(t) // ends by itself: its only object is gone
	wantExit(t, r, ctlOK)
	if r.stderr != "watching "+h+"\n" {
		t.Errorf("watch: want only \"watching %s\" on stderr; got %s", h, r)
	}
	evs := ctlEvents(t, r)
	wantEvs := []struct {
		kind  registryv1.EventKind
		state registryv1.ObjectState
		pins  int32
		lease string
	}{
		{registryv1.EventKind_EVENT_KIND_CURRENT, registryv1.ObjectState_OBJECT_STATE_PINNED, 1, ""},
		{registryv1.EventKind_EVENT_KIND_UNPINNED, registryv1.ObjectState_OBJECT_STATE_WEAK, 0, lid},
		{registryv1.EventKind_EVENT_KIND_WEAK, registryv1.ObjectState_OBJECT_STATE_WEAK, 0, ""},
		{registryv1.EventKind_EVENT_KIND_COLLECTED, registryv1.ObjectState_OBJECT_STATE_COLLECTED, 0, ""},
	}
	kindsOf(t, evs, h) // checks the sequence numbers
	if len(evs) != len(wantEvs) {
		t.Fatalf("watch printed %d events, want %d\n%s", len(evs), len(wantEvs), r)
	}
	for i, want := range wantEvs {
		ev := evs[i]
		if ev.GetHandle() != h || ev.GetKind() != want.kind || ev.GetState() != want.state || ev.GetPinCount() != want.pins || ev.GetLeaseId() != want.lease {
			t.Errorf("watch event %d = %v; want %v %v pins %d lease %q", i+1, ev, want.kind, want.state, want.pins, want.lease)
		}
	}

	r = ctl(t, d.Addr, "stats", "-w", "json")
	wantSuccess(t, r)
	var st registryv1.GetStatsResponse
	decode(t, r, &st)
	if st.GetCollectedObjects() != 1 || st.GetCollectedBytes() != int64(len(data)) || st.GetPuts() != 1 {
		t.Errorf("stats: %d puts, collected %d objects, %d bytes; want 1 put, 1 object, %d bytes", st.GetPuts(), st.GetCollectedObjects(), st.GetCollectedBytes(), len(data))
	}
}

// TestRegistryctlServer: stats, gc, health, version and completion.
func TestRegistryctlServer(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	p, _, lid := ctlPutHold(t, d.Addr, []byte("pinned for the figures"))

	t.Run("stats", func(t *testing.T) {
		r := ctl(t, d.Addr, "stats")
		wantSuccess(t, r)
		rows := tableRows(r.stdout)
		if row := rowOf(rows, "SERVER"); len(row) < 2 || row[1] != "registryd" {
			t.Errorf("stats SERVER row = %q\n%s", row, r.stdout)
		}
		if row := rowOf(rows, "pinned"); len(row) < 3 || row[1] != "1" {
			t.Errorf("stats pinned row = %q, want 1 object\n%s", row, r.stdout)
		}
		if !strings.Contains(r.stdout, "1 attached, 0 detached") {
			t.Errorf("stats does not show 1 attached lease:\n%s", r.stdout)
		}

		var fromJSON, fromYAML registryv1.GetStatsResponse
		r = ctl(t, d.Addr, "stats", "-w", "json")
		wantSuccess(t, r)
		decode(t, r, &fromJSON)
		r = ctl(t, d.Addr, "stats", "-w", "yaml")
		wantSuccess(t, r)
		j, err := yaml.YAMLToJSON([]byte(r.stdout))
		if err != nil {
			t.Fatalf("stats -w yaml is not YAML: %v\n%s", err, r)
		}
		if err := protojson.Unmarshal(j, &fromYAML); err != nil {
			t.Fatalf("stats -w yaml is not a GetStatsResponse: %v\n%s", err, r)
		}
		for name, st := range map[string]*registryv1.GetStatsResponse{"json": &fromJSON, "yaml": &fromYAML} {
			if st.GetObjects().GetPinned() != 1 || st.GetLeasesAttached() != 1 || st.GetPins() != 1 || st.GetPuts() != 1 ||
				st.GetServerVersion() == "" || len(st.GetLimits()) == 0 {
				t.Errorf("stats -w %s = %v; want 1 pinned object, 1 attached lease, 1 pin, 1 put, a version, limits", name, st)
			}
		}
	})

	t.Run("gc", func(t *testing.T) {
		r := ctl(t, d.Addr, "gc")
		wantSuccess(t, r)
		if !regexp.MustCompile(`^collected \d+ objects? \(.+\) in .+; heap .+ -> .+\n$`).MatchString(r.stdout) {
			t.Errorf("gc: %s", r)
		}
		r = ctl(t, d.Addr, "gc", "-w", "json")
		wantSuccess(t, r)
		var resp registryv1.CollectResponse
		decode(t, r, &resp)
		if resp.GetCollectedObjects() != 0 || resp.GetHeapBeforeBytes() == 0 || resp.GetDuration() == nil {
			t.Errorf("gc -w json = %v; want nothing collected (all pinned), heap and duration figures", &resp)
		}
	})

	t.Run("health", func(t *testing.T) {
		r := ctl(t, d.Addr, "health")
		wantSuccess(t, r)
		if r.stdout != "SERVING\n" {
			t.Errorf("health: want SERVING; got %s", r)
		}
		r = ctl(t, d.Addr, "health", "--service", "registry.v1.RegistryService", "-w", "json")
		wantSuccess(t, r)
		if m := decodeMap(t, r); m["status"] != "SERVING" {
			t.Errorf("health -w json = %v, want status SERVING", m)
		}
	})

	t.Run("version", func(t *testing.T) {
		// --client asks no server: it works with none.
		r := ctl(t, closedPort(t), "version", "--client")
		wantSuccess(t, r)
		client, ok := strings.CutPrefix(strings.TrimSuffix(r.stdout, "\n"), "registryctl ")
		if !ok || client == "" || strings.Contains(client, "\n") {
			t.Fatalf("version --client: want one line \"registryctl VERSION\"; got %s", r)
		}
		r = ctl(t, closedPort(t), "version", "--client", "-w", "json")
		wantSuccess(t, r)
		if m := decodeMap(t, r); len(m) != 1 || m["client"] != client {
			t.Errorf("version --client -w json = %v, want only client %q", m, client)
		}

		// Both binaries come from this checkout, built by TestMain.
		r = ctl(t, d.Addr, "version")
		wantSuccess(t, r)
		if want := "registryctl " + client + "\nregistryd   " + client + " (at " + d.Addr + ")\n"; r.stdout != want {
			t.Errorf("version: want\n%s got %s", want, r)
		}
		r = ctl(t, d.Addr, "version", "-w", "json")
		wantSuccess(t, r)
		if m := decodeMap(t, r); len(m) != 2 || m["client"] != client || m["server"] != client {
			t.Errorf("version -w json = %v, want client and server %q", m, client)
		}
	})

	t.Run("completion", func(t *testing.T) {
		r := ctl(t, "", "completion", "bash")
		wantSuccess(t, r)
		if !strings.Contains(r.stdout, "registryctl") || !strings.Contains(r.stdout, "complete ") {
			t.Errorf("completion bash does not look like a bash completion script for registryctl:\n%.500s", r.stdout)
		}
	})

	wantReleased(t, p, lid, 1)
}

// TestRegistryctlEnv: every global flag has a REGISTRYCTL_* twin, and a
// flag given wins over it.
func TestRegistryctlEnv(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	closed := closedPort(t)
	serving := func(t *testing.T, r ctlResult) {
		t.Helper()
		wantSuccess(t, r)
		if r.stdout != "SERVING\n" {
			t.Errorf("want SERVING in a table; got %s", r)
		}
	}
	unreachable := func(addr string) func(*testing.T, ctlResult) {
		return func(t *testing.T, r ctlResult) {
			t.Helper()
			wantErrLine(t, r, ctlUnavailable, "cannot reach registryd at "+addr+":")
		}
	}
	tests := []struct {
		name  string
		addr  string // --addr
		env   []string
		args  []string
		check func(*testing.T, ctlResult)
	}{
		{name: "address from env", env: []string{"REGISTRYCTL_ADDR=" + d.Addr}, args: []string{"health"}, check: serving},
		{name: "address flag wins", addr: d.Addr, env: []string{"REGISTRYCTL_ADDR=" + closed}, args: []string{"health"}, check: serving},
		{name: "address from env, unreachable", env: []string{"REGISTRYCTL_ADDR=" + closed}, args: []string{"health"}, check: unreachable(closed)},
		{name: "address flag wins, unreachable", addr: closed, env: []string{"REGISTRYCTL_ADDR=" + d.Addr}, args: []string{"health"}, check: unreachable(closed)},
		{name: "output from env", addr: d.Addr, env: []string{"REGISTRYCTL_OUTPUT=json"}, args: []string{"health"}, check: func(t *testing.T, r ctlResult) {
			wantSuccess(t, r)
			if m := decodeMap(t, r); m["status"] != "SERVING" {
				t.Errorf("health with REGISTRYCTL_OUTPUT=json = %v", m)
			}
		}},
		{name: "output flag wins", addr: d.Addr, env: []string{"REGISTRYCTL_OUTPUT=json"}, args: []string{"health", "-w", "table"}, check: serving},
		{name: "timeout from env", addr: d.Addr, env: []string{"REGISTRYCTL_TIMEOUT=5s"}, args: []string{"health"}, check: serving},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, runCtl(t, ctlOpts{addr: tt.addr, env: tt.env}, tt.args...))
		})
	}
}
