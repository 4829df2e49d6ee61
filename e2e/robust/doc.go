// Package robust is the robustness suite: it runs a real registryd and
// real client processes (./worker) on loopback, injects faults while
// observers watch, records every operation and its result, and checks the
// history against DESIGN's invariants. etcd's tests/robustness is the
// model.
//
// # What runs
//
// Worker processes drive registryd over raw gRPC, each through its own
// netfault proxy: "mixed" workers put, pin (objects they put unpinned, and
// other leases' objects), resolve, unpin, close or abandon leases in a
// loop; a "wrong" worker sends, on a lease that holds pins, a pin of 1001
// handles, a second open and an empty request; a "stopread" worker stops
// reading its lease stream. All the while the test scrapes /metrics, calls
// GetStats, pages through ListObjects and calls InspectObject.
//
// # Faults
//
//   - kill: SIGKILL a worker mid-stream (a replacement starts);
//   - freeze: SIGSTOP a worker, then SIGCONT, or SIGKILL it;
//   - cut, stall, blackhole: its netfault proxy closes its connections,
//     holds every byte for a while, or swallows them until keepalive ends
//     the connection;
//   - restart: registryd gets SIGTERM under load and starts again with the
//     same key (a new epoch: old handles must answer REGISTRY_RESTARTED);
//   - gc storm: AdminService.Collect in a loop;
//   - revoke and delete: RevokeLease, DeleteObject and forced DeleteObject
//     of objects that leases are pinning.
//
// # What is checked
//
//   - every handle's history is linearizable against a model of its
//     lifecycle (porcupine, partitioned by handle): a pinned object is
//     never reported collected or deleted (unless force-deleted), Resolve
//     returns exactly the bytes put (CRC-32C), a collected object never
//     comes back, and a handle of an earlier run answers REGISTRY_RESTARTED;
//   - every lease that ended had a cause: its client closed or cancelled
//     it, an operator revoked it, a fault hit its worker, or registryd
//     restarted; a wrong request is answered with LeaseResponse.error and
//     the lease stays;
//   - a revoked lease whose client stopped reading ends promptly, and
//     registryd exits on SIGTERM before its --shutdown-timeout even so;
//   - once every lease has ended, no lease and no pin is left, and a forced
//     collection leaves no object, with the observers running and without
//     them; ListObjects then lists nothing and no handle resolves;
//   - registryd's goroutines (go_goroutines in /metrics, live at every
//     scrape) and heap return to their baseline.
//
// The checker is shown to work against registryd built with -tags
// registry_fault (internal/registry/fault_on.go): a build that skips a pin,
// and one that keeps a payload alive, are both caught.
//
// Once the workers are gone the test puts -robust.loose unpinned objects
// and forces a collection twice: with GetStats, /metrics and ListObjects
// hammered meanwhile, then with no observer at all.
//
// TestKilledLeaseStreamsLeaveNoPins kills lease streams abruptly (SIGKILL
// of half the holding workers, a blackholed connection for the other half)
// and checks that no pin is left, every lease is gone within keepalive
// time + timeout, and goroutines return to baseline.
//
// # Running
//
//	go test ./e2e/robust                          # the short CI variant
//	go test ./e2e/robust -robust.duration 60s     # a longer run
//	go test ./e2e/robust -run Killed -robust.streams 1000
//	go test ./e2e/robust -run Soak -soak 10m -timeout 15m
//
// Flags:
//
//	-robust.duration  how long the faulted run lasts, registryd serving (default 15s; 8s with -short)
//	-robust.streams   lease streams killed by TestKilledLeaseStreamsLeaveNoPins (default 200; 100 with -short)
//	-robust.workers   mixed workers (default 3)
//	-robust.loose     unpinned objects put before each final forced collection (default 5000; 2000 with -short)
//	-robust.vis       directory for porcupine visualisations of a failed check (default: t.TempDir())
//	-soak             run TestSoak this long (default 0: skipped)
//	-soak.every       how often the soak prints its figures (default 30s)
//
// When a run finds a violation, its whole history (history.jsonl, one
// Record a line) is written next to the visualisation.
package robust
