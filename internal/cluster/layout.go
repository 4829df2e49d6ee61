// Package cluster is what the nodes of one registry and their clients
// agree on in etcd: where a cluster's keys live, and what a node writes
// about itself there. registryd's membership writes it, the Go client and
// registryctl read it; neither side needs the other's code.
//
// A cluster NAME has two key ranges:
//
//	registry/NAME/nodes/TAG   one endpoint per live node, written through
//	                          go.etcd.io/etcd/client/v3/naming/endpoints, so
//	                          etcd's own gRPC resolver (target
//	                          "etcd:///registry/NAME/nodes") sees every node
//	registry/NAME/tags/TAG    the claim of node tag TAG, created only if absent
//
// Both keys of a node are attached to its etcd lease: a node that stops
// keeping the lease alive leaves the cluster when the lease's TTL runs out,
// and one that shuts down cleanly revokes it and leaves at once.
package cluster

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/client/v3/naming/endpoints"
)

// Scheme is the URL scheme of a cluster target: "etcd:///registry/NAME".
const Scheme = "etcd"

const root = "registry/"

// CheckName says whether name can name a cluster: 1 to 64 letters, digits,
// '.', '_' or '-', so that it is one path segment of every key.
func CheckName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("cluster name %q: want 1 to 64 characters", name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return fmt.Errorf("cluster name %q: want only letters, digits, '.', '_' and '-'", name)
		}
	}
	if name == "." || name == ".." {
		return fmt.Errorf("cluster name %q: not a path segment", name)
	}
	return nil
}

// NodesTarget is the target of cluster name's endpoints, for
// endpoints.NewManager.
func NodesTarget(name string) string { return root + name + "/nodes" }

// NodeKey is the endpoint key of node tag in cluster name.
func NodeKey(name string, tag uint16) string {
	return NodesTarget(name) + "/" + strconv.Itoa(int(tag))
}

// TagKey is the claim key of node tag in cluster name.
func TagKey(name string, tag uint16) string {
	return root + name + "/tags/" + strconv.Itoa(int(tag))
}

// TagOfKey reads the node tag from an endpoint or claim key.
func TagOfKey(key string) (uint16, error) {
	i := strings.LastIndexByte(key, '/')
	n, err := strconv.ParseUint(key[i+1:], 10, 16)
	if err != nil {
		return 0, fmt.Errorf("key %q: no node tag at its end", key)
	}
	return uint16(n), nil
}

// Target is the cluster target of name for client.Dial and registryctl
// --cluster: "etcd:///registry/NAME".
func Target(name string) string { return Scheme + ":///" + root + name }

// NameOfTarget reads the cluster name from a target "etcd:///registry/NAME"
// (or "etcd://AUTHORITY/registry/NAME"; the authority is ignored, as etcd's
// resolver ignores it: the etcd endpoints are given separately).
func NameOfTarget(target string) (string, error) {
	rest, ok := strings.CutPrefix(target, Scheme+"://")
	if !ok {
		return "", fmt.Errorf("cluster target %q: want etcd:///registry/NAME", target)
	}
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[i+1:]
	} else {
		rest = ""
	}
	name, ok := strings.CutPrefix(rest, root)
	if !ok {
		return "", fmt.Errorf("cluster target %q: want etcd:///registry/NAME", target)
	}
	if err := CheckName(name); err != nil {
		return "", fmt.Errorf("cluster target %q: %w", target, err)
	}
	return name, nil
}

// Member is what a node says of itself in its endpoint's metadata.
type Member struct {
	// Node is the node's tag, the one its handles carry.
	Node uint16 `json:"node"`
	// Epoch is the node's run: handles of an earlier epoch answer
	// REGISTRY_RESTARTED.
	Epoch uint64 `json:"epoch"`
	// Version is the build of registryd (internal/version).
	Version string `json:"version"`
	// Started is when the node's run began.
	Started time.Time `json:"started"`
	// KeyID is the fingerprint of the node's handle MAC key (KeyID), so
	// that a node with another key, whose handles every other node would
	// answer HANDLE_UNKNOWN, refuses to join rather than serve them.
	KeyID string `json:"key_id,omitempty"`
}

// keyIDLabel is what KeyID MACs: a fixed string, so the fingerprint says
// nothing of the key but whether two are the same.
const keyIDLabel = "registry cluster key fingerprint v1"

// KeyID is the fingerprint of a handle MAC key: the first 8 bytes of
// HMAC-SHA256(key, a fixed label), in hex. It reveals nothing of the key
// (finding a key from it is finding an HMAC key from one output), and two
// nodes share a key exactly when, but for a 2^-64 chance, they share it.
func KeyID(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(keyIDLabel))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// Endpoint is m's endpoint at addr, the node's advertised address.
func (m Member) Endpoint(addr string) endpoints.Endpoint {
	return endpoints.Endpoint{Addr: addr, Metadata: m}
}

// MemberOf reads the metadata of an endpoint read back from etcd (the
// endpoints package decodes it into a map) or built by Endpoint.
func MemberOf(ep endpoints.Endpoint) (Member, error) {
	if m, ok := ep.Metadata.(Member); ok {
		return m, nil
	}
	b, err := json.Marshal(ep.Metadata)
	if err != nil {
		return Member{}, err
	}
	var m Member
	if err := json.Unmarshal(b, &m); err != nil {
		return Member{}, fmt.Errorf("endpoint %s: metadata: %w", ep.Addr, err)
	}
	if ep.Addr == "" {
		return Member{}, errors.New("endpoint without an address")
	}
	return m, nil
}

// Claim is the value of a tag's claim key: who holds the tag, so that a
// second node with the same tag can say which.
type Claim struct {
	Addr    string    `json:"addr"`
	Epoch   uint64    `json:"epoch"`
	Started time.Time `json:"started"`
}
