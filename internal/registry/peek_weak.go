//go:build !(amd64 || 386 || s390x)

package registry

// orderedLoads: on this machine a load may be performed after a later
// acquire load (arm64's LDAR orders only what follows it), so peek's
// copy could be read after its check of seq; Go offers no load fence.
// peek declines, and every read takes the shard's read lock.
const orderedLoads = false
