package client

import (
	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// PinOutcome is what a pin or unpin did to one handle.
type PinOutcome int

// The outcomes of a pin or unpin; OutcomeUnknown is the zero value, for an
// outcome this client does not know.
const (
	OutcomeUnknown       PinOutcome = iota
	OutcomePinned                   // this lease now pins it
	OutcomeAlreadyPinned            // this lease already pinned it
	OutcomeUnpinned                 // this lease no longer pins it
	OutcomeNotPinned                // this lease did not pin it
	OutcomeFailed                   // see PinResult.Err
)

func (o PinOutcome) String() string {
	switch o {
	case OutcomePinned:
		return "pinned"
	case OutcomeAlreadyPinned:
		return "already pinned"
	case OutcomeUnpinned:
		return "unpinned"
	case OutcomeNotPinned:
		return "not pinned"
	case OutcomeFailed:
		return "failed"
	}
	return "unknown"
}

// PinResult is the result of pinning or unpinning one handle.
type PinResult struct {
	Handle  string
	Outcome PinOutcome
	Err     error // an *Error when Outcome is OutcomeFailed, else nil
	Info    Info  // the object after the operation, when it exists
}

func resultsFrom(rs *registryv1.PinResults) []PinResult {
	out := make([]PinResult, len(rs.GetResults()))
	for i, r := range rs.GetResults() {
		out[i] = PinResult{Handle: r.GetHandle(), Outcome: PinOutcome(r.GetOutcome()), Info: infoFrom(r.GetInfo())}
		if e := r.GetError(); e != nil {
			out[i].Err = fromHandleError(e)
		}
	}
	return out
}
