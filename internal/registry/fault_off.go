//go:build !registry_fault

package registry

// The release build has no faults: these hooks do nothing and the compiler
// inlines them away. fault_on.go, built only with -tags registry_fault,
// breaks the lifecycle on purpose so that e2e/robust can show that its
// checker catches a registry that breaks its invariants.

// faultPin is called when a pin makes an unpinned object PINNED, after the
// entry took its strong pointer. The caller holds e's shard lock.
func faultPin(*entry) {}

// faultUnpinned is called with an object's payload as its last pin goes
// and it becomes WEAK. The caller holds the payload's shard lock.
func faultUnpinned(*payload) {}
