package server

import (
	"strings"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// A batch request's thousand handles cost protobuf-go a thousand string
// allocations and the growth of their slice, by copies, to a thousand:
// under BatchResolve, decoding the request was a fifth of registryd's
// CPU, more than resolving the handles. decodeBatch decodes the two batch
// requests itself: it copies the request once, counts the handles, and
// makes each a substring of that copy, so a request costs two
// allocations whatever its length.
//
// It answers only what it is sure of, a message of the request's own
// fields with valid UTF-8, as protobuf-go would decode it; anything else
// (an unknown field, a wrong wire type, a truncated varint) it leaves to
// protobuf-go, which decodes or refuses it as it always did.
//
// The handles share the request's copy: one kept beyond the call (none
// is: an answer copies what it says of a handle into its own message)
// keeps the whole request alive.

// decodeBatch decodes data into v if v is a batch request decodeBatch
// knows and data is plain; it reports whether it did. When it did not, v
// is as it was.
func decodeBatch(data mem.BufferSlice, v any) bool {
	var withLease bool
	switch v.(type) {
	case *registryv1.BatchResolveRequest:
		withLease = true
	case *registryv1.BatchStatRequest:
	default:
		return false
	}
	// One copy of the request, which the handles share: gRPC reuses its
	// buffers once Unmarshal returns. A Builder grown to size neither
	// clears its buffer first nor copies it again for String.
	var sb strings.Builder
	sb.Grow(data.Len())
	for _, buf := range data {
		sb.Write(buf.ReadOnlyData())
	}
	all := sb.String()
	b := unsafe.Slice(unsafe.StringData(all), len(all)) // read only
	req, ok := scanBatch(b, withLease)
	if !ok {
		return false
	}
	hs := req.fill(all, b)
	switch m := v.(type) {
	case *registryv1.BatchResolveRequest:
		proto.Reset(m)
		m.Handles, m.LeaseId, m.WithInfo = hs, req.leaseID, req.withInfo
	case *registryv1.BatchStatRequest:
		proto.Reset(m)
		m.Handles = hs
	}
	return true
}

// batchScan is what the first pass over a batch request found.
type batchScan struct {
	handles  int // how many
	bytes    int // of all of them together
	leaseID  string
	withInfo bool
}

// Field numbers of both batch requests (see registry.proto).
const (
	fieldHandles  protowire.Number = 1
	fieldLeaseID  protowire.Number = 2 // BatchResolveRequest only
	fieldWithInfo protowire.Number = 3 // BatchResolveRequest only
)

// scanBatch checks that b holds only the request's fields, each of its
// wire type, every string valid UTF-8, and counts the handles. withLease
// allows fields 2 and 3 (BatchResolveRequest).
func scanBatch(b []byte, withLease bool) (batchScan, bool) {
	var sc batchScan
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return sc, false
		}
		b = b[n:]
		switch {
		case num == fieldHandles && typ == protowire.BytesType,
			withLease && num == fieldLeaseID && typ == protowire.BytesType:
			v, k := protowire.ConsumeBytes(b)
			if k < 0 || !utf8.Valid(v) {
				return sc, false
			}
			b = b[k:]
			if num == fieldHandles {
				sc.handles++
				sc.bytes += len(v)
			} else {
				sc.leaseID = string(v) // the last one wins, as in protobuf
			}
		case withLease && num == fieldWithInfo && typ == protowire.VarintType:
			v, k := protowire.ConsumeVarint(b)
			if k < 0 {
				return sc, false
			}
			b = b[k:]
			sc.withInfo = v != 0
		default:
			return sc, false
		}
	}
	return sc, true
}

// fill returns the handles of b, which scanBatch found plain: substrings
// of all, whose bytes b are.
func (sc batchScan) fill(all string, b []byte) []string {
	if sc.handles == 0 {
		return nil
	}
	hs := make([]string, 0, sc.handles)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		b = b[n:]
		if typ == protowire.VarintType {
			_, k := protowire.ConsumeVarint(b)
			b = b[k:]
			continue
		}
		v, k := protowire.ConsumeBytes(b)
		if num == fieldHandles {
			start := len(all) - len(b) + k - len(v)
			hs = append(hs, all[start:start+len(v)])
		}
		b = b[k:]
	}
	return hs
}
