//go:build registry_fault

package registry

import (
	"os"
	"sync"
	"sync/atomic"
)

// A test-only build (-tags registry_fault) that breaks one promise on
// purpose, chosen by the environment variable REGISTRY_FAULT, so that the
// robustness suite (e2e/robust) can show its checker catches it. Never in
// a release binary: fault_off.go is the release build.
//
//	REGISTRY_FAULT=skip-pin      every pin of an unpinned object answers
//	                             PINNED but leaves the payload held only
//	                             weakly: the GC may take a pinned object.
//	                             Every one, not the first only: a single
//	                             skipped pin was caught only when a GC came
//	                             while it was held and a read followed, and
//	                             a 5 s run missed it one time in three
//	REGISTRY_FAULT=keep-payload  the first payload to become WEAK is kept
//	                             alive for ever: a forced collection after
//	                             every lease ended leaves it behind
var faultMode = sync.OnceValue(func() string { return os.Getenv("REGISTRY_FAULT") })

var (
	faultKeepDone atomic.Bool
	faultKept     []*payload // guarded by faultKeepDone: written once
)

func faultPin(e *entry) {
	if faultMode() == "skip-pin" {
		e.strong = nil
	}
}

func faultUnpinned(p *payload) {
	if faultMode() == "keep-payload" && p != nil && faultKeepDone.CompareAndSwap(false, true) {
		faultKept = append(faultKept, p)
	}
}
