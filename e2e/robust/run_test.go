package robust

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// scenario is one faulted run.
type scenario struct {
	bin      string
	env      []string
	duration time.Duration
	workers  int // mixed workers
	wrong    bool
	stopRead bool
	faults   faultSet
	every    time.Duration // print figures this often (soak); 0: never
	baseline bool          // check goroutines and heap against the baseline
}

// outcome is what a run found.
type outcome struct {
	violations []violation
	ops        int
	faults     int64
	figures    []string
	samples    []figures // the soak's, in order; none while registryd restarts
}

func (o *outcome) has(kind, substr string) bool {
	for _, v := range o.violations {
		if v.kind == kind && strings.Contains(v.msg, substr) {
			return true
		}
	}
	return false
}

// figures are registryd's numbers at one moment.
type figures struct {
	goroutines int
	heap       uint64
	leases     int64
	pins       int64
	objects    int64 // pinned + lingering + weak
}

func (c *cluster) figures() (figures, error) {
	st, err := c.stats()
	if err != nil {
		return figures{}, err
	}
	g, err := c.goroutines()
	if err != nil {
		return figures{}, err
	}
	o := st.GetObjects()
	return figures{goroutines: g, heap: st.GetGc().GetHeapAllocBytes(), leases: st.GetLeasesAttached() + st.GetLeasesDetached(),
		pins: st.GetPins(), objects: o.GetPinned() + o.GetLingering() + o.GetWeak()}, nil
}

func (f figures) String() string {
	return fmt.Sprintf("goroutines %d, heap %.1f MiB, leases %d, pins %d, objects %d", f.goroutines, float64(f.heap)/(1<<20), f.leases, f.pins, f.objects)
}

// run runs sc and checks its history; it fails t only for errors of the
// harness, and returns what the checker found.
func run(t *testing.T, sc scenario) *outcome {
	loose := *flagLoose
	if testing.Short() {
		loose = min(loose, 2000)
	}
	c := newCluster(t, sc.bin, sc.env)
	obs := c.startObservers()
	defer obs.stop()
	// The baseline: registryd idle but observed, after a collection.
	c.collect()
	var base figures
	if !poll(10*time.Second, func() bool {
		var err error
		base, err = c.figures()
		return err == nil
	}) {
		t.Fatal("no baseline figures from registryd")
	}
	t.Logf("baseline: %v", base)
	out := &outcome{}

	for range sc.workers {
		c.startWorker("mixed", "-leases", "3", "-objects", "4")
	}
	if sc.wrong {
		c.startWorker("wrong", "-leases", "1", "-objects", "3")
	}
	if sc.stopRead {
		c.startWorker("stopread", "-leases", "1", "-objects", "50", "-size", "64")
	}
	in := c.startFaults(sc.faults, sc.duration/3)
	// The run lasts sc.duration of registryd serving: a restart's
	// downtime is added.
	start := time.Now()
	nextReport := start.Add(sc.every)
	tick := time.NewTicker(250 * time.Millisecond)
	for time.Since(start)-in.downtime() < sc.duration {
		<-tick.C
		if sc.every > 0 && time.Now().After(nextReport) {
			nextReport = nextReport.Add(sc.every)
			var now any = "registryd restarting"
			if f, err := c.figures(); err == nil {
				now = f
				out.samples = append(out.samples, f)
			}
			line := fmt.Sprintf("soak %5.0fs: ops %d, faults %d, %v", time.Since(start).Seconds(), c.hist.len(), c.faults.Load(), now)
			t.Log(line)
			out.figures = append(out.figures, line)
		}
	}
	tick.Stop()
	in.stop()
	c.stopWorkers(10 * time.Second)
	c.healProxies()
	out.violations = append(out.violations, in.violations...)

	// Every lease has ended now (the workers are gone): registryd must
	// know it within keepalive time + timeout.
	var f figures
	if !poll(keepaliveTime+keepaliveTimeout+5*time.Second, func() bool {
		var err error
		f, err = c.figures()
		return err == nil && f.leases == 0 && f.pins == 0
	}) {
		out.violations = append(out.violations, violation{kindLeftover, fmt.Sprintf("every worker is gone but registryd still counts: %v", f)})
	}
	// Invariant 2, scrape or no scrape: the next forced collection takes
	// every object. First with the observers still running.
	// The observers at full speed, over a crowd of unpinned objects, so
	// that a scan that touches payloads during the collection's mark
	// would keep some alive.
	c.putLoose(loose)
	hammer := c.startHammer()
	out.violations = append(out.violations, c.collectsEverything("observers running")...)
	hammer()
	obs.stop()
	c.putLoose(loose)
	out.violations = append(out.violations, c.collectsEverything("no observer")...)
	if sc.baseline {
		out.violations = append(out.violations, c.backToBaseline(base)...)
	}

	recs := c.hist.snapshot()
	out.ops = len(recs)
	out.faults = c.faults.Load()
	dir := *flagVis
	if dir == "" {
		dir = t.TempDir()
	}
	out.violations = append(out.violations, check(recs, dir)...)
	if len(out.violations) > 0 {
		path := filepath.Join(dir, "history.jsonl")
		if f, err := os.Create(path); err == nil {
			enc := json.NewEncoder(f)
			for _, r := range recs {
				enc.Encode(r)
			}
			f.Close()
			t.Logf("history of %d records: %s", len(recs), path)
		}
	}
	end, _ := c.figures()
	t.Logf("%d operations, %d faults in %v; shutdowns %v; end: %v", out.ops, out.faults, sc.duration, in.shutdowns, end)
	return out
}

// putLoose puts n small objects without a lease, recording them.
func (c *cluster) putLoose(n int) {
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 4 {
				data := []byte(fmt.Sprintf("loose object %d of %d, put by the test", i, n))
				ctx, cancel := rpcCtx()
				start := time.Now().UnixNano()
				resp, err := c.reg.Put(ctx, &registryv1.PutRequest{Data: data})
				cancel()
				c.record(Record{Op: OpPut, Handle: resp.GetHandle(), Start: start, End: time.Now().UnixNano(), Result: ResultOf(err), Sum: Checksum(data)})
			}
		}()
	}
	wg.Wait()
}

// startHammer runs GetStats, /metrics and ListObjects back to back on
// two goroutines each until the returned function is called.
func (c *cluster) startHammer() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				cctx, ccancel := context.WithTimeout(ctx, rpcTimeout)
				c.admin.GetStats(cctx, &registryv1.GetStatsRequest{})
				c.admin.ListObjects(cctx, &registryv1.ListObjectsRequest{State: registryv1.ObjectState_OBJECT_STATE_WEAK, PageSize: 1000})
				ccancel()
				if resp, err := httpClient.Get("http://" + c.daemon().MetricsAddr + "/metrics"); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	return func() { cancel(); wg.Wait() }
}

// collectsEverything forces a collection once every lease has ended and
// checks that it left no object, that ListObjects lists none, and that
// no handle put resolves any more.
func (c *cluster) collectsEverything(when string) []violation {
	var vs []violation
	if err := c.collect(); err != nil {
		return []violation{{kindLeftover, "Collect: " + err.Error()}}
	}
	st, err := c.stats()
	if err != nil {
		return []violation{{kindLeftover, "GetStats: " + err.Error()}}
	}
	if o := st.GetObjects(); o.GetPinned()+o.GetLingering()+o.GetWeak() != 0 {
		vs = append(vs, violation{kindLeftover, fmt.Sprintf("%s: a forced collection with every lease ended left objects pinned %d, lingering %d, weak %d (suspected leaks %d)",
			when, o.GetPinned(), o.GetLingering(), o.GetWeak(), st.GetSuspectedLeaks())})
	}
	ctx, cancel := rpcCtx()
	defer cancel()
	list, err := c.admin.ListObjects(ctx, &registryv1.ListObjectsRequest{PageSize: 10})
	if err == nil && len(list.GetObjects()) > 0 {
		var hs []string
		for _, o := range list.GetObjects() {
			hs = append(hs, fmt.Sprintf("%s %v weak_gc_cycles=%d", o.GetHandle(), o.GetState(), o.GetWeakGcCycles()))
		}
		vs = append(vs, violation{kindListed, fmt.Sprintf("%s: ListObjects after the collection still lists %s", when, strings.Join(hs, "; "))})
	}
	// A sample of the handles put must not resolve.
	resolved := 0
	for i, r := range c.hist.snapshot() {
		if r.Op != OpPut || r.Handle == "" || i%7 != 0 {
			continue
		}
		rctx, cancel := rpcCtx()
		_, err := c.reg.Resolve(rctx, &registryv1.ResolveRequest{Handle: r.Handle})
		cancel()
		if err == nil {
			resolved++
		}
	}
	if resolved > 0 {
		vs = append(vs, violation{kindListed, fmt.Sprintf("%s: %d handles still resolve after the collection", when, resolved)})
	}
	return vs
}

// backToBaseline checks that registryd's goroutines and heap return to
// what they were before the run.
func (c *cluster) backToBaseline(base figures) []violation {
	const goroutineSlack = 10 // timers, an idle connection's transport
	g, ok := c.goroutinesUntil(10*time.Second, func(n int) bool { return n <= base.goroutines+goroutineSlack })
	c.collect()
	f, _ := c.figures()
	f.goroutines = g
	var vs []violation
	if !ok {
		vs = append(vs, violation{kindBaseline, fmt.Sprintf("goroutines %d, baseline %d (+%d allowed)", f.goroutines, base.goroutines, goroutineSlack)})
	}
	if limit := max(2*base.heap, base.heap+16<<20); f.heap > limit {
		vs = append(vs, violation{kindBaseline, fmt.Sprintf("heap %d bytes after the run, baseline %d", f.heap, base.heap)})
	}
	return vs
}

// TestRobustness is the faulted run: every fault, the observers, the
// checker. Short by default (the CI variant); -robust.duration makes it
// longer.
func TestRobustness(t *testing.T) {
	d := *flagDuration
	if testing.Short() {
		d = min(d, 8*time.Second)
	}
	out := run(t, scenario{bin: registrydBin, duration: d, workers: *flagWorkers, wrong: true, stopRead: true, faults: allFaults, baseline: true})
	out.report(t)
}

// TestSoak is TestRobustness for -soak, printing figures every
// -soak.every.
func TestSoak(t *testing.T) {
	if *flagSoak == 0 {
		t.Skip("no -soak duration given")
	}
	out := run(t, scenario{bin: registrydBin, duration: *flagSoak, workers: *flagWorkers, wrong: true, stopRead: true, faults: allFaults, every: *flagSoakEach, baseline: true})
	out.violations = append(out.violations, flatAfterWarmUp(out.samples)...)
	out.report(t)
}

// flatAfterWarmUp checks a soak's series: after its first third (the
// warm-up), registryd's heap stays within twice the warm-up's highest plus
// 16 MiB, and its goroutines within the warm-up's highest plus a slack for
// the workers' connections coming and going. A leak grows past both over
// minutes; the load's own swings do not.
func flatAfterWarmUp(samples []figures) []violation {
	if len(samples) < 3 {
		return nil // too short to tell a trend
	}
	warm := samples[:len(samples)/3]
	var heapMax uint64
	goMax := 0
	for _, f := range warm {
		heapMax, goMax = max(heapMax, f.heap), max(goMax, f.goroutines)
	}
	const slack = 30
	var vs []violation
	for i, f := range samples[len(warm):] {
		if f.heap > 2*heapMax+16<<20 || f.goroutines > goMax+slack {
			vs = append(vs, violation{kindGrowth, fmt.Sprintf("sample %d: heap %.1f MiB, goroutines %d, after a warm-up of at most %.1f MiB and %d",
				len(warm)+i, float64(f.heap)/(1<<20), f.goroutines, float64(heapMax)/(1<<20), goMax)})
		}
	}
	return vs
}

// report fails t with the violations: the first few of each kind, or all
// of them with -v.
func (o *outcome) report(t *testing.T) {
	t.Helper()
	byKind := map[string][]violation{}
	var kinds []string
	for _, v := range o.violations {
		if byKind[v.kind] == nil {
			kinds = append(kinds, v.kind)
		}
		byKind[v.kind] = append(byKind[v.kind], v)
	}
	for _, k := range kinds {
		vs := byKind[k]
		t.Errorf("%d %s violations", len(vs), k)
		for i, v := range vs {
			if i == 3 && !testing.Verbose() {
				t.Logf("  ... and %d more", len(vs)-i)
				break
			}
			t.Logf("  %v", v)
		}
	}
}

// TestCheckerCatchesBrokenRegistry runs registryd built with
// -tags registry_fault and checks that the checker reports the broken
// promise: a pin that does not hold, a payload kept after its lease.
func TestCheckerCatchesBrokenRegistry(t *testing.T) {
	calm := faultSet{gcStorm: true} // nothing else that ends leases
	for _, tc := range []struct {
		fault string
		kind  string
		in    string
	}{
		{"skip-pin", kindHistory, "fits no lifecycle"},
		{"keep-payload", kindLeftover, "no observer"},
	} {
		t.Run(tc.fault, func(t *testing.T) {
			out := run(t, scenario{bin: registrydFaultBin, env: []string{"REGISTRY_FAULT=" + tc.fault}, duration: 5 * time.Second, workers: 2, faults: calm})
			for _, v := range out.violations {
				t.Logf("reported, as it should: %v", v)
			}
			if !out.has(tc.kind, tc.in) {
				t.Errorf("the checker did not catch REGISTRY_FAULT=%s: want a %s violation (%q)", tc.fault, tc.kind, tc.in)
			}
		})
	}
}
