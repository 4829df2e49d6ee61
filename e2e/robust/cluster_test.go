package robust

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/netfault"
)

// testWorker is the Worker of records the test itself makes.
const testWorker = -1

// history collects the records of every worker and of the test. It is
// safe for concurrent use.
type history struct {
	mu      sync.Mutex
	records []Record               // guarded by mu
	notify  map[string]chan Record // op -> channel the test waits on; guarded by mu
}

func (h *history) add(r Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	if ch := h.notify[r.Op]; ch != nil {
		select {
		case ch <- r:
		default:
		}
	}
}

// watchOp returns a channel that receives the records of op from now on
// (those that find it full are only kept in the history).
func (h *history) watchOp(op string) <-chan Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.notify == nil {
		h.notify = map[string]chan Record{}
	}
	ch := make(chan Record, 1024)
	h.notify[op] = ch
	return ch
}

func (h *history) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.records)
}

func (h *history) snapshot() []Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Record(nil), h.records...)
}

// cluster is one registryd (restartable), the workers around it each
// behind its own netfault proxy, and the test's own admin connection,
// behind a proxy too so that it follows a restart.
type cluster struct {
	t    testing.TB
	bin  string
	env  []string
	args []string
	hist *history

	mu      sync.Mutex
	d       *daemon           // guarded by mu
	proxies []*netfault.Proxy // guarded by mu; every proxy, for a restart
	workers []*worker         // guarded by mu

	adminProxy *netfault.Proxy
	conn       *grpc.ClientConn
	reg        registryv1.RegistryServiceClient
	admin      registryv1.AdminServiceClient
	nextID     atomic.Int32
	faults     atomic.Int64
}

func newCluster(t testing.TB, bin string, env []string, args ...string) *cluster {
	c := &cluster{t: t, bin: bin, env: env, args: args, hist: &history{}}
	c.d = startDaemon(t, bin, env, args...)
	c.adminProxy = netfault.New(t, c.d.Addr)
	c.proxies = append(c.proxies, c.adminProxy)
	conn, err := grpc.NewClient(c.adminProxy.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}, MinConnectTimeout: 2 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c.conn = conn
	c.reg = registryv1.NewRegistryServiceClient(conn)
	c.admin = registryv1.NewAdminServiceClient(conn)
	return c
}

func (c *cluster) daemon() *daemon {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.d
}

// record adds one of the test's own operations to the history.
func (c *cluster) record(r Record) {
	r.Worker = testWorker
	c.hist.add(r)
}

// fault records a fault injected on worker w (testWorker: on registryd or
// every worker) now.
func (c *cluster) fault(w int, what string) {
	c.faults.Add(1)
	now := time.Now().UnixNano()
	c.hist.add(Record{Op: OpFault, Worker: w, Start: now, End: now, Detail: what})
}

// worker is one worker process and its proxy.
type worker struct {
	id     int
	mode   string
	flags  []string
	proxy  *netfault.Proxy
	cmd    *exec.Cmd
	exited chan struct{}
	frozen atomic.Bool
}

// startWorker starts a worker process in mode, with extra flags, behind a
// new proxy.
func (c *cluster) startWorker(mode string, flags ...string) *worker {
	c.t.Helper()
	id := int(c.nextID.Add(1))
	p := netfault.New(c.t, c.daemon().Addr)
	args := append([]string{"-addr", p.Addr(), "-id", strconv.Itoa(id), "-mode", mode,
		"-seed", strconv.FormatInt(time.Now().UnixNano(), 10), "-duration", "30m"}, flags...)
	cmd := exec.Command(workerBin, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start worker: %v", err)
	}
	w := &worker{id: id, mode: mode, flags: flags, proxy: p, cmd: cmd, exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var r Record
			if json.Unmarshal(sc.Bytes(), &r) == nil { // a SIGKILL may cut the last line
				r.Worker = id
				c.hist.add(r)
			}
		}
		cmd.Wait()
		close(w.exited)
	}()
	c.t.Cleanup(func() { c.killWorker(w, "cleanup") })
	c.mu.Lock()
	c.proxies = append(c.proxies, p)
	c.workers = append(c.workers, w)
	c.mu.Unlock()
	return w
}

// workerByID returns the worker numbered id, or nil.
func (c *cluster) workerByID(id int) *worker {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.workers {
		if w.id == id {
			return w
		}
	}
	return nil
}

// killWorker SIGKILLs w, recording it unless it had exited already.
func (c *cluster) killWorker(w *worker, why string) {
	select {
	case <-w.exited:
		return
	default:
	}
	c.fault(w.id, "kill:"+why)
	w.cmd.Process.Signal(syscall.SIGKILL)
	w.cmd.Process.Signal(syscall.SIGCONT)
	<-w.exited
}

// stopWorkers asks every worker to close its leases and exit (SIGINT),
// and kills those still there after timeout.
func (c *cluster) stopWorkers(timeout time.Duration) {
	c.mu.Lock()
	ws := append([]*worker(nil), c.workers...)
	c.mu.Unlock()
	for _, w := range ws {
		w.cmd.Process.Signal(syscall.SIGCONT)
		w.cmd.Process.Signal(syscall.SIGINT)
	}
	deadline := time.After(timeout)
	for _, w := range ws {
		select {
		case <-w.exited:
		case <-deadline:
			c.killWorker(w, "did not stop")
		}
	}
	for _, w := range ws {
		c.killWorker(w, "did not stop")
	}
}

// healProxies ends every network fault.
func (c *cluster) healProxies() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.proxies {
		p.SetBlackhole(false)
		p.SetStall(false)
	}
}

// restart sends registryd SIGTERM and starts it again with the same key
// and flags, moving every proxy to the new address. It returns how long
// the old one took to exit.
func (c *cluster) restart() (time.Duration, bool) {
	old := c.daemon()
	start := time.Now().UnixNano()
	took, clean := old.terminate(shutdownTimeout + 5*time.Second)
	d := startDaemon(c.t, c.bin, c.env, c.args...)
	c.mu.Lock()
	c.d = d
	for _, p := range c.proxies {
		p.SetUpstream(d.Addr)
		p.Drop() // connections to the old process are dead anyway
	}
	c.mu.Unlock()
	c.hist.add(Record{Op: OpRestart, Worker: testWorker, Start: start, End: time.Now().UnixNano(),
		Detail: fmt.Sprintf("old registryd exited in %v (clean %v)", took.Round(time.Millisecond), clean)})
	return took, clean
}

// ctx returns a context for one of the test's calls.
func rpcCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), rpcTimeout)
}

// stats calls GetStats.
func (c *cluster) stats() (*registryv1.GetStatsResponse, error) {
	ctx, cancel := rpcCtx()
	defer cancel()
	return c.admin.GetStats(ctx, &registryv1.GetStatsRequest{})
}

// collect forces a collection, recording nothing: a collection changes no
// handle's lifecycle in the model, it only lets the GC do what it may.
func (c *cluster) collect() error {
	ctx, cancel := rpcCtx()
	defer cancel()
	_, err := c.admin.Collect(ctx, &registryv1.CollectRequest{})
	return err
}

// goroutinesLine finds the goroutine gauge, by the name of either
// Prometheus's Go collector or OpenTelemetry's runtime metrics.
var goroutinesLine = regexp.MustCompile(`^(?:go_goroutines|go_goroutine_count|go_goroutine)(?:\{[^}]*\})? ([0-9.e+]+)$`)

// goroutines scrapes registryd's /metrics for its goroutine count.
func (c *cluster) goroutines() (int, error) {
	resp, err := httpClient.Get("http://" + c.daemon().MetricsAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if m := goroutinesLine.FindSubmatch(sc.Bytes()); m != nil {
			f, err := strconv.ParseFloat(string(m[1]), 64)
			return int(f), err
		}
	}
	return 0, fmt.Errorf("no goroutine gauge in /metrics (status %s)", resp.Status)
}

// goroutinesUntil polls until ok holds of registryd's goroutine count
// or timeout passes, and returns the last count. The count is live:
// Prometheus's Go collector reads runtime.NumGoroutine at every scrape.
func (c *cluster) goroutinesUntil(timeout time.Duration, ok func(int) bool) (int, bool) {
	n := 0
	held := poll(timeout, func() bool {
		var err error
		n, err = c.goroutines()
		return err == nil && ok(n)
	})
	return n, held
}

var httpClient = &http.Client{Timeout: rpcTimeout}
