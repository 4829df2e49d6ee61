//go:build amd64 || 386 || s390x

package registry

// orderedLoads: this machine keeps loads in program order (total store
// order), so the plain loads peek makes between its two atomic loads of
// seq cannot be performed after the second one. peek relies on it.
const orderedLoads = true
