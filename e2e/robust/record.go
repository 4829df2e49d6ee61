package robust

import (
	"context"
	"errors"
	"hash/crc32"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// Record is one operation of the history: what a worker or the test did to
// registryd, when, and what came back. Workers write one Record per line,
// as JSON, on their stdout; the test decodes them and adds its own.
type Record struct {
	// Op is the operation: see the Op* constants.
	Op string `json:"op"`
	// Worker is the worker process that did it; -1 for the test itself.
	Worker int `json:"w"`
	// Handle and Lease are what it was done to, when it names them.
	Handle string `json:"handle,omitempty"`
	Lease  string `json:"lease,omitempty"`
	// Start and End are wall-clock nanoseconds around the call: the call
	// was sent after Start, and its answer received before End.
	Start int64 `json:"start"`
	End   int64 `json:"end"`
	// Result is what came back: ResultOK, a pin outcome (PINNED,
	// ALREADY_PINNED, UNPINNED, NOT_PINNED), an ErrorInfo reason
	// (OBJECT_COLLECTED, ...) or "code:Unavailable" for a status without
	// one (see ResultOf).
	Result string `json:"result"`
	// Sum is the CRC-32C of the bytes put, or of the bytes a Resolve
	// returned.
	Sum uint32 `json:"sum,omitempty"`
	// Detail says more, for people reading a failure.
	Detail string `json:"detail,omitempty"`
}

// The operations of a history.
const (
	OpPut       = "put"        // Put; Lease set when it pinned atomically
	OpPin       = "pin"        // one handle of a lease's pin request
	OpUnpinCall = "unpin_call" // an unpin request is about to be sent
	OpUnpin     = "unpin"      // one handle of a lease's unpin answer
	OpResolve   = "resolve"    // Resolve; Sum of the bytes returned
	OpStat      = "stat"       // Stat, or the test's InspectObject
	OpOpen      = "open"       // a lease stream opened: Lease is its id
	OpCloseCall = "close_call" // the client is about to close its lease
	OpLeaseEnd  = "lease_end"  // the lease stream ended: Result says how
	OpWrong     = "wrong"      // a wrong request on a held lease; Detail which
	OpStopRead  = "stop_read"  // the client stops reading its lease stream now
	OpReady     = "ready"      // a holding worker holds everything it will
	OpDelete    = "delete"     // the test's DeleteObject; Detail "force" or ""
	OpRevoke    = "revoke"     // the test's RevokeLease
	OpFault     = "fault"      // the test injected a fault; Detail which
	OpRestart   = "restart"    // registryd stopped (Start) and served again (End)
)

// Results that are not reasons.
const (
	ResultOK        = "OK"
	ResultClosed    = "closed"    // lease_end: the client's close was answered
	ResultCancelled = "cancelled" // lease_end: the client cancelled its stream
	ResultTimeout   = "timeout"   // lease_end: no answer in time; the client gave up
)

// Checksum is the CRC-32C of b, as Record.Sum holds it.
func Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ResultOf names err as a Record.Result: ResultOK for nil, the registry
// ErrorInfo reason when there is one, else "code:" and the gRPC code.
func ResultOf(err error) string {
	if err == nil {
		return ResultOK
	}
	if errors.Is(err, context.Canceled) {
		return "code:Canceled"
	}
	st, ok := status.FromError(err)
	if !ok {
		return "error:" + err.Error()
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() != "" {
			return info.GetReason()
		}
	}
	return "code:" + st.Code().String()
}
