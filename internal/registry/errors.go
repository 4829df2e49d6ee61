package registry

import (
	"errors"
	"fmt"
)

// Sentinel errors. The gRPC layer maps each to a status code and reason in
// one place; handle.ErrMalformed, handle.ErrUnknown and the handle
// package's typed errors come through unchanged.
var (
	// ErrCollected: the handle is genuine but the Go GC took its object.
	ErrCollected = errors.New("object was collected")
	// ErrDeleted: an operator deleted the object.
	ErrDeleted = errors.New("object was deleted")
	// ErrPayloadEmpty: Put with no bytes.
	ErrPayloadEmpty = errors.New("payload is empty")
	// ErrPinned: Delete without force of an object that a lease pins.
	ErrPinned = errors.New("object is pinned")
	// ErrClosed: the registry was closed.
	ErrClosed = errors.New("registry is closed")
	// ErrPageToken: a ListObjects page token this run of this registry
	// did not make (malformed, altered, of another key, node or run).
	ErrPageToken = errors.New("page token is invalid")
)

// LimitError reports that a request would exceed a configured limit.
type LimitError struct {
	// Limit names the limit, as in stats (e.g. "OBJECT_TOO_LARGE").
	Limit string
	// Max is the configured maximum.
	Max int64
	// Want is what the request would have needed.
	Want int64
	// Identity, for a limit per identity, names whose it is; empty for a
	// limit on all callers together.
	Identity string
}

func (e *LimitError) Error() string {
	if e.Identity != "" {
		return fmt.Sprintf("limit %s of identity %q reached: %d needed, %d allowed", e.Limit, e.Identity, e.Want, e.Max)
	}
	return fmt.Sprintf("limit %s reached: %d needed, %d allowed", e.Limit, e.Want, e.Max)
}

// Limit names, as reported in stats and as the reasons of
// RESOURCE_EXHAUSTED errors.
const (
	LimitObjectSize  = "OBJECT_TOO_LARGE"
	LimitPinnedBytes = "PINNED_BYTES_LIMIT"
	LimitWatchers    = "WATCHER_LIMIT"
)

// LabelError reports a label that breaks the label rules.
type LabelError struct {
	Key    string
	Reason string
}

func (e *LabelError) Error() string {
	return fmt.Sprintf("label %q: %s", e.Key, e.Reason)
}
