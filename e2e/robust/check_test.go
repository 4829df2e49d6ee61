package robust

import (
	"cmp"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// A violation is one broken promise the checker found.
type violation struct {
	kind string // what promise: see the kind* constants
	msg  string
}

// The kinds of violation.
const (
	kindHistory    = "history"     // a handle's history fits no lifecycle (pinned collected, wrong bytes...)
	kindLeaseCause = "lease-cause" // a lease ended with nothing to end it
	kindWrong      = "wrong-request"
	kindStopRead   = "stop-reader"
	kindLeftover   = "leftover" // objects, leases or pins left once every lease ended
	kindListed     = "listed"   // ListObjects or Resolve still knows a collected object
	kindBaseline   = "baseline" // goroutines or heap did not return to baseline
	kindShutdown   = "shutdown" // registryd took its whole shutdown timeout
	kindGrowth     = "growth"   // a soak's heap or goroutines grew after warm-up
)

func (v violation) String() string { return v.kind + ": " + v.msg }

// never is the Return of an operation whose answer never came: it may
// have taken effect at any time after its call.
const never = math.MaxInt64 / 2

// lifeInput is one operation on a handle, as the model sees it.
type lifeInput struct {
	op     string // put, pin, unpin, unpin?, end, resolve, stat, delete, force, restart
	handle string
	lease  string
	sum    uint32
	who    string // for people: the record it came from
}

// lifeState is a handle's state in the model. Comparable, so that
// porcupine's default equality works.
type lifeState struct {
	created bool
	sum     uint32
	pinners string // sorted lease ids, comma-separated
	gone    uint8  // goneNo, goneCollected, goneDeleted, goneRestarted
}

const (
	goneNo = iota
	goneCollected
	goneDeleted
	goneRestarted
)

func (s lifeState) pinnedBy(l string) bool { return slices.Contains(s.leases(), l) }
func (s lifeState) pinned() bool           { return s.pinners != "" }

func (s lifeState) leases() []string {
	if s.pinners == "" {
		return nil
	}
	return strings.Split(s.pinners, ",")
}

func (s lifeState) with(l string) lifeState {
	ls := append(s.leases(), l)
	sort.Strings(ls)
	s.pinners = strings.Join(slices.Compact(ls), ",")
	return s
}

func (s lifeState) without(l string) lifeState {
	s.pinners = strings.Join(slices.DeleteFunc(s.leases(), func(x string) bool { return x == l }), ",")
	return s
}

// limitReasons may fail a pin at any time and change nothing.
var limitReasons = map[string]bool{"PINNED_BYTES_LIMIT": true, "PINS_PER_LEASE_LIMIT": true, "LEASE_LIMIT": true}

// step is the model of one handle's lifecycle (DESIGN, "Object
// lifecycle" and "Invariants"). It returns the states the handle may be
// in after in answered out; none when that answer is impossible.
func step(s lifeState, in lifeInput, out string) []lifeState {
	one := func(s lifeState) []lifeState { return []lifeState{s} }
	if in.op == "put" {
		if s.created {
			return nil
		}
		s = lifeState{created: true, sum: in.sum}
		if in.lease != "" {
			s = s.with(in.lease)
		}
		return one(s)
	}
	if !s.created {
		return nil
	}
	switch in.op {
	case "restart":
		return one(lifeState{created: true, sum: s.sum, gone: goneRestarted})
	case "end":
		return one(s.without(in.lease))
	}
	switch s.gone {
	case goneRestarted:
		// A handle of an earlier run answers REGISTRY_RESTARTED, never
		// collected or unknown.
		if in.op == "unpin" || in.op == "unpin?" {
			return one(s)
		}
		if out == "REGISTRY_RESTARTED" {
			return one(s)
		}
		return nil
	case goneCollected, goneDeleted:
		switch {
		case in.op == "unpin?":
			return one(s)
		case in.op == "unpin" && out == "UNPINNED":
			return nil
		case out == "OBJECT_COLLECTED":
			// A tombstone is bounded: a deleted object may later
			// answer collected.
			return one(s)
		case out == "OBJECT_DELETED" && s.gone == goneDeleted:
			return one(s)
		case in.op == "unpin" && out == "NOT_PINNED":
			return one(s)
		}
		return nil
	}
	// The object is alive.
	collected := lifeState{created: true, sum: s.sum, gone: goneCollected}
	switch in.op {
	case "pin":
		switch {
		case out == "PINNED" && !s.pinnedBy(in.lease):
			return one(s.with(in.lease))
		case out == "ALREADY_PINNED" && s.pinnedBy(in.lease):
			return one(s)
		case out == "OBJECT_COLLECTED" && !s.pinned():
			return one(collected)
		case limitReasons[out]:
			return one(s)
		}
	case "unpin":
		switch {
		case out == "UNPINNED" && s.pinnedBy(in.lease):
			return one(s.without(in.lease))
		case out == "NOT_PINNED" && !s.pinnedBy(in.lease):
			return one(s)
		case out == "OBJECT_COLLECTED" && !s.pinned():
			return one(collected)
		}
	case "unpin?": // sent, never answered: done or not
		return []lifeState{s, s.without(in.lease)}
	case "resolve", "stat":
		switch {
		case out == ResultOK && (in.op == "stat" || in.sum == s.sum):
			return one(s)
		case out == "OBJECT_COLLECTED" && !s.pinned():
			return one(collected)
		}
	case "delete":
		switch {
		case out == ResultOK && !s.pinned():
			return one(lifeState{created: true, sum: s.sum, gone: goneDeleted})
		case out == "OBJECT_PINNED" && s.pinned():
			return one(s)
		case out == "OBJECT_COLLECTED" && !s.pinned():
			return one(collected)
		}
	case "force":
		switch {
		case out == ResultOK:
			return one(lifeState{created: true, sum: s.sum, gone: goneDeleted})
		case out == "OBJECT_COLLECTED" && !s.pinned():
			return one(collected)
		}
	}
	return nil
}

var lifecycleModel = porcupine.NondeterministicModel{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range h {
			k := op.Input.(lifeInput).handle
			if _, ok := by[k]; !ok {
				order = append(order, k)
			}
			by[k] = append(by[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, k := range order {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() []any { return []any{lifeState{}} },
	Step: func(state, input, output any) []any {
		var out []any
		for _, s := range step(state.(lifeState), input.(lifeInput), output.(string)) {
			out = append(out, s)
		}
		return out
	},
	DescribeOperation: func(input, output any) string {
		in := input.(lifeInput)
		return fmt.Sprintf("%s %s -> %s", in.op, in.lease, output)
	},
	DescribeState: func(state any) string {
		s := state.(lifeState)
		return fmt.Sprintf("pinners=[%s] gone=%d", s.pinners, s.gone)
	},
}

// leaseLife is what the history says of one lease.
type leaseLife struct {
	id        string
	worker    int
	opened    int64 // the open's answer
	last      int64 // the last answer on it
	endCall   int64 // from when its pins may have gone
	caused    bool  // something ended it at endCall: a close, revoke, fault or restart
	endReturn int64 // by when they had gone (never: unknown)
	result    string
	handles   map[string]bool // pinned by it at some time
}

// checker turns a history into operations and violations.
type checker struct {
	recs       []Record
	leases     map[string]*leaseLife
	violations []violation
}

func check(recs []Record, visDir string) []violation {
	slices.SortStableFunc(recs, func(a, b Record) int { return cmp.Compare(a.Start, b.Start) })
	c := &checker{recs: recs, leases: map[string]*leaseLife{}}
	c.leaseEnds()
	c.wrongRequests()
	c.linearizable(visDir)
	return c.violations
}

func (c *checker) add(kind, format string, args ...any) {
	c.violations = append(c.violations, violation{kind, fmt.Sprintf(format, args...)})
}

// causes of a lease's end other than its own records, by worker.
func (c *checker) causes() (byWorker map[int][]Record, restarts []Record, revokes map[string]Record) {
	byWorker, revokes = map[int][]Record{}, map[string]Record{}
	for _, r := range c.recs {
		switch r.Op {
		case OpFault, OpStopRead:
			byWorker[r.Worker] = append(byWorker[r.Worker], r)
		case OpRestart:
			restarts = append(restarts, r)
		case OpRevoke:
			if _, ok := revokes[r.Lease]; !ok {
				revokes[r.Lease] = r
			}
		}
	}
	return byWorker, restarts, revokes
}

// leaseEnds works out, for every lease, when its pins may have gone and
// whether something ended it.
func (c *checker) leaseEnds() {
	byWorker, restarts, revokes := c.causes()
	closeCalls := map[string]int64{}
	for _, r := range c.recs {
		if r.Lease == "" {
			continue
		}
		l := c.leases[r.Lease]
		if l == nil && r.Op == OpOpen && r.Result == ResultOK {
			l = &leaseLife{id: r.Lease, worker: r.Worker, opened: r.End, endReturn: never, handles: map[string]bool{}}
			c.leases[r.Lease] = l
		}
		if l == nil {
			continue
		}
		switch r.Op {
		case OpCloseCall:
			if _, ok := closeCalls[r.Lease]; !ok {
				closeCalls[r.Lease] = r.Start
			}
		case OpLeaseEnd:
			l.result, l.endReturn = r.Result, r.End
		case OpPin:
			if r.Result == "PINNED" || r.Result == "ALREADY_PINNED" {
				l.handles[r.Handle] = true
			}
		case OpPut:
			if r.Result == ResultOK {
				l.handles[r.Handle] = true
			}
		}
		if r.Worker == l.worker && r.End > l.last && r.Op != OpLeaseEnd {
			l.last = r.End
		}
	}
	for _, l := range c.leases {
		// The earliest thing that may have ended the lease: its close,
		// a revoke, a fault on its worker or a restart after it opened.
		end := int64(never)
		if t, ok := closeCalls[l.id]; ok {
			end = min(end, t)
		}
		if r, ok := revokes[l.id]; ok {
			end = min(end, r.Start)
		}
		for _, f := range byWorker[l.worker] {
			if f.Start >= l.opened-int64(time.Millisecond) {
				end = min(end, f.Start)
			}
		}
		for _, f := range restarts {
			if f.Start >= l.opened {
				end = min(end, f.Start)
			}
		}
		switch {
		case end < never && (l.result == "" || end <= l.endReturn):
			l.endCall, l.caused = end, true
		case l.result == "":
			// Still held when the history ended (a worker killed at
			// the end is a fault on it, so this is rare).
			l.endCall = never - 1
		default:
			c.add(kindLeaseCause, "lease %s of worker %d ended (%s) though nothing ended it: no close, revoke, fault or restart", l.id, l.worker, l.result)
			l.endCall = l.last // its pins may have gone since its last answer
		}
	}
}

// wrongRequests: a wrong request on a held lease is answered by an error,
// and the lease stays, unless something else ended the lease (a fault on
// its worker, a revoke, a restart) before the answer came.
func (c *checker) wrongRequests() {
	for _, r := range c.recs {
		if r.Op == OpWrong && !strings.HasPrefix(r.Result, "error:") {
			if l := c.leases[r.Lease]; l != nil && l.caused && l.endCall <= r.End {
				continue
			}
			c.add(kindWrong, "%s on lease %s of worker %d: got %s, want LeaseResponse.error with the lease kept", r.Detail, r.Lease, r.Worker, r.Result)
		}
	}
}

// operations turns the history into the model's operations.
func (c *checker) operations() []porcupine.Operation {
	var ops []porcupine.Operation
	addOp := func(r Record, in lifeInput, out string, ret int64) {
		in.who = fmt.Sprintf("w%d", r.Worker)
		ops = append(ops, porcupine.Operation{ClientId: r.Worker + 1, Input: in, Output: out, Call: r.Start, Return: ret})
	}
	known := func(result string) bool {
		return !strings.HasPrefix(result, "code:") && !strings.HasPrefix(result, "error:")
	}
	answered := map[string]bool{} // lease|handle|start of unpins answered
	for _, r := range c.recs {
		if r.Op == OpUnpin {
			answered[r.Lease+"|"+r.Handle+"|"+fmt.Sprint(r.Start)] = true
		}
	}
	puts := map[string]int64{} // handle -> put's start
	var restarts []Record
	for _, r := range c.recs {
		switch r.Op {
		case OpRestart:
			restarts = append(restarts, r)
		case OpPut:
			if r.Result == ResultOK && r.Handle != "" {
				puts[r.Handle] = r.Start
				addOp(r, lifeInput{op: "put", handle: r.Handle, lease: r.Lease, sum: r.Sum}, ResultOK, r.End)
			}
		}
	}
	for _, r := range c.recs {
		if _, ok := puts[r.Handle]; !ok || r.Handle == "" {
			continue
		}
		in := lifeInput{handle: r.Handle, lease: r.Lease, sum: r.Sum}
		switch r.Op {
		case OpPin:
			if known(r.Result) {
				in.op = "pin"
				addOp(r, in, r.Result, r.End)
			}
		case OpUnpinCall:
			if !answered[r.Lease+"|"+r.Handle+"|"+fmt.Sprint(r.Start)] {
				in.op = "unpin?"
				addOp(r, in, "", never)
			}
		case OpUnpin:
			in.op = "unpin"
			if !known(r.Result) {
				in.op = "unpin?"
			}
			addOp(r, in, r.Result, r.End)
		case OpResolve, OpStat:
			if known(r.Result) {
				in.op = r.Op
				in.lease = ""
				addOp(r, in, r.Result, r.End)
			}
		case OpDelete:
			if known(r.Result) {
				in.op = "delete"
				if r.Detail == "force" {
					in.op = "force"
				}
				addOp(r, in, r.Result, r.End)
			}
		}
	}
	for _, l := range c.leases {
		for h := range l.handles {
			if _, ok := puts[h]; ok {
				ops = append(ops, porcupine.Operation{ClientId: l.worker + 1, Input: lifeInput{op: "end", handle: h, lease: l.id, who: "lease end " + l.result},
					Output: "", Call: min(l.endCall, never-1), Return: max(l.endReturn, l.endCall)})
			}
		}
	}
	for _, rs := range restarts {
		for h, start := range puts {
			if start < rs.End { // a put during the shutdown may have been served

				ops = append(ops, porcupine.Operation{ClientId: 0, Input: lifeInput{op: "restart", handle: h, who: "restart"}, Output: "", Call: rs.Start, Return: rs.End})
			}
		}
	}
	return ops
}

// linearizable checks every handle's history against the model, and
// writes a visualisation of those that do not fit into visDir.
func (c *checker) linearizable(visDir string) {
	ops := c.operations()
	model := lifecycleModel.ToModel()
	switch porcupine.CheckOperationsTimeout(model, ops, 5*time.Minute) {
	case porcupine.Ok:
		return
	case porcupine.Unknown:
		c.add(kindHistory, "porcupine gave up checking %d operations within its time limit", len(ops))
		return
	}
	// Name the handles whose histories do not fit, and draw the first
	// few: verbose checking of the whole history would cost far more.
	var bad []porcupine.Operation
	n := 0
	for _, part := range model.Partition(ops) {
		if porcupine.CheckOperations(model, part) {
			continue
		}
		n++
		if n <= 3 {
			h := part[0].Input.(lifeInput).handle
			c.add(kindHistory, "handle %s: its history fits no lifecycle the design allows:\n%s", h, describe(part))
			bad = append(bad, part...)
		}
	}
	if n > 3 {
		c.add(kindHistory, "%d more handles' histories do not fit", n-3)
	}
	if visDir != "" && len(bad) > 0 {
		_, info := porcupine.CheckOperationsVerbose(model, bad, time.Minute)
		path := filepath.Join(visDir, "lifecycle.html")
		if err := porcupine.VisualizePath(model, info, path); err == nil {
			c.add(kindHistory, "visualisation: %s", path)
		}
	}
}

func describe(ops []porcupine.Operation) string {
	ops = slices.Clone(ops)
	slices.SortFunc(ops, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	t0 := ops[0].Call
	var b strings.Builder
	for i, op := range ops {
		if i == 40 {
			fmt.Fprintf(&b, "  ... %d more\n", len(ops)-i)
			break
		}
		in := op.Input.(lifeInput)
		ret := "never"
		if op.Return < never-1 {
			ret = fmt.Sprintf("%.3fs", float64(op.Return-t0)/1e9)
		}
		fmt.Fprintf(&b, "  [%.3fs, %s] %-8s lease=%s %s -> %v\n", float64(op.Call-t0)/1e9, ret, in.op, in.lease, in.who, op.Output)
	}
	return b.String()
}
