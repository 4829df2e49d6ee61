package robust

import (
	"testing"
)

// TestCheckerJudgesHistories feeds the checker small hand-written
// histories, one per promise, and checks what it says of each.
func TestCheckerJudgesHistories(t *testing.T) {
	const h, l, l2 = "obj_a", "lse_1", "lse_2"
	// at makes a record of worker 1 from start to end (in ms).
	at := func(start, end int64, r Record) Record {
		r.Start, r.End = start*1e6, end*1e6
		if r.Worker == 0 {
			r.Worker = 1
		}
		return r
	}
	open := func(ms int64, lease string) Record {
		return at(ms, ms, Record{Op: OpOpen, Lease: lease, Result: ResultOK})
	}
	put := func(ms int64, lease string) Record {
		return at(ms, ms+1, Record{Op: OpPut, Handle: h, Lease: lease, Result: ResultOK, Sum: 7})
	}
	pin := func(ms int64, lease, result string) Record {
		return at(ms, ms+1, Record{Op: OpPin, Handle: h, Lease: lease, Result: result})
	}
	resolve := func(ms int64, result string, sum uint32) Record {
		return at(ms, ms+1, Record{Op: OpResolve, Handle: h, Result: result, Sum: sum})
	}
	closeLease := func(ms int64, lease string) []Record {
		return []Record{at(ms, ms, Record{Op: OpCloseCall, Lease: lease}), at(ms+1, ms+1, Record{Op: OpLeaseEnd, Lease: lease, Result: ResultClosed})}
	}
	fault := func(ms int64, worker int) Record {
		return at(ms, ms, Record{Op: OpFault, Worker: worker, Detail: "kill"})
	}
	cat := func(parts ...any) []Record {
		var out []Record
		for _, p := range parts {
			switch p := p.(type) {
			case Record:
				out = append(out, p)
			case []Record:
				out = append(out, p...)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		recs []Record
		want string // the kind of violation; "" for none
	}{
		{"a pinned object resolves to its bytes", cat(open(0, l), put(1, l), resolve(3, ResultOK, 7), closeLease(5, l)), ""},
		{"a pinned object reported collected is caught", cat(open(0, l), put(1, ""), pin(3, l, "PINNED"), resolve(5, "OBJECT_COLLECTED", 0)), kindHistory},
		{"an unpinned object may be collected", cat(put(1, ""), resolve(3, "OBJECT_COLLECTED", 0)), ""},
		{"a collected object that comes back is caught", cat(put(1, ""), resolve(3, "OBJECT_COLLECTED", 0), resolve(5, ResultOK, 7)), kindHistory},
		{"other bytes than those put are caught", cat(put(1, ""), resolve(3, ResultOK, 8)), kindHistory},
		{"a closed lease's object may be collected", cat(open(0, l), put(1, l), closeLease(3, l), resolve(6, "OBJECT_COLLECTED", 0)), ""},
		{"a killed lease's object may be collected", cat(open(0, l), put(1, l), fault(3, 1), resolve(6, "OBJECT_COLLECTED", 0)), ""},
		{"another lease's pin holds on", cat(open(0, l), open(0, l2), put(1, l), pin(2, l2, "PINNED"), closeLease(3, l), resolve(6, "OBJECT_COLLECTED", 0)), kindHistory},
		{"an unanswered unpin may have let go", cat(open(0, l), put(1, l), at(3, 0, Record{Op: OpUnpinCall, Handle: h, Lease: l}), resolve(6, "OBJECT_COLLECTED", 0)), ""},
		{"a force delete ends the pin", cat(open(0, l), put(1, l), at(3, 4, Record{Op: OpDelete, Worker: testWorker, Handle: h, Result: ResultOK, Detail: "force"}), resolve(6, "OBJECT_DELETED", 0)), ""},
		{"a delete without force of a pinned object is caught", cat(open(0, l), put(1, l), at(3, 4, Record{Op: OpDelete, Worker: testWorker, Handle: h, Result: ResultOK})), kindHistory},
		{"an earlier run's handle answers restarted", cat(put(1, ""), at(3, 5, Record{Op: OpRestart, Worker: testWorker}), resolve(6, "REGISTRY_RESTARTED", 0)), ""},
		{"an earlier run's handle reported collected is caught", cat(put(1, ""), at(3, 5, Record{Op: OpRestart, Worker: testWorker}), resolve(6, "OBJECT_COLLECTED", 0)), kindHistory},
		{"a lease that ends with no cause is caught", cat(open(0, l), put(1, l), at(3, 3, Record{Op: OpLeaseEnd, Lease: l, Result: "TOO_MANY_HANDLES"})), kindLeaseCause},
		{"a lease that ends after a fault on its worker is explained", cat(open(0, l), put(1, l), fault(2, 1), at(3, 3, Record{Op: OpLeaseEnd, Lease: l, Result: "code:Unavailable"})), ""},
		{"a wrong request that ends the stream is caught", cat(open(0, l), at(2, 3, Record{Op: OpWrong, Lease: l, Result: "stream ended", Detail: "second open"})), kindWrong},
		{"a wrong request cut short by a fault on its worker is explained", cat(open(0, l), at(2, 4, Record{Op: OpWrong, Lease: l, Result: "stream ended", Detail: "empty request"}), fault(3, 1),
			at(4, 4, Record{Op: OpLeaseEnd, Lease: l, Result: "code:Unavailable"})), ""},
		{"a wrong request that ends the stream before the fault is caught", cat(open(0, l), at(2, 3, Record{Op: OpWrong, Lease: l, Result: "stream ended", Detail: "empty request"}), fault(5, 1),
			at(5, 5, Record{Op: OpLeaseEnd, Lease: l, Result: "code:Unavailable"})), kindWrong},
		{"a wrong request answered by an error is fine", cat(open(0, l), at(2, 3, Record{Op: OpWrong, Lease: l, Result: "error:LEASE_ALREADY_OPEN", Detail: "second open"}), closeLease(4, l)), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vs := check(tc.recs, "")
			switch {
			case tc.want == "" && len(vs) > 0:
				t.Errorf("violations %v, want none", vs)
			case tc.want != "":
				found := false
				for _, v := range vs {
					found = found || v.kind == tc.want
				}
				if !found {
					t.Errorf("violations %v, want one of kind %s", vs, tc.want)
				}
			}
		})
	}
}
