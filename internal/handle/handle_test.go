package handle_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weakref/registry/internal/handle"
)

// testKey is a fixed MAC key, so that handles in seeds and tables are
// reproducible.
var testKey = bytes.Repeat([]byte{0x5a}, handle.MinKeyLen)

func newCodec(t testing.TB, cfg handle.Config) *handle.Codec {
	t.Helper()
	if cfg.Key == nil {
		cfg.Key = testKey
	}
	c, err := handle.NewCodec(cfg)
	if err != nil {
		t.Fatalf("NewCodec(%+v): %v", cfg, err)
	}
	return c
}

var kinds = []handle.Kind{handle.Object, handle.Lease, handle.PageToken}

// isBase64URL reports whether s holds only characters of the unpadded
// URL-safe base64 alphabet.
func isBase64URL(s string) bool {
	for i := range len(s) {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func TestNewFormatParseRoundTrip(t *testing.T) {
	c := newCodec(t, handle.Config{Node: 7, Epoch: 12345})
	for _, k := range kinds {
		t.Run(k.Prefix(), func(t *testing.T) {
			for range 100 {
				id, h := c.New(k)
				if got := c.Format(k, id); got != h {
					t.Fatalf("Format(%v, id) = %q, New returned %q", k, got, h)
				}
				if !strings.HasPrefix(h, k.Prefix()) {
					t.Fatalf("handle %q lacks prefix %q", h, k.Prefix())
				}
				if len(h) != len(k.Prefix())+handle.EncodedLen {
					t.Fatalf("len(%q) = %d, want %d", h, len(h), len(k.Prefix())+handle.EncodedLen)
				}
				if body := h[len(k.Prefix()):]; !isBase64URL(body) {
					t.Fatalf("handle %q has characters outside base64url", h)
				}
				got, err := c.Parse(k, h)
				if err != nil {
					t.Fatalf("Parse(%v, %q): %v", k, h, err)
				}
				if got != id {
					t.Fatalf("Parse(%v, %q) = %x, want %x", k, h, got, id)
				}
			}
		})
	}
}

func TestKindPrefixes(t *testing.T) {
	if got := handle.Object.Prefix(); got != "obj_" {
		t.Errorf("Object.Prefix() = %q, want obj_", got)
	}
	if got := handle.Lease.Prefix(); got != "lse_" {
		t.Errorf("Lease.Prefix() = %q, want lse_", got)
	}
	if got := handle.PageToken.Prefix(); got != "pgt_" {
		t.Errorf("PageToken.Prefix() = %q, want pgt_", got)
	}
}

func TestHandleIsVerifiedByAnotherCodecWithSameKeyNodeAndEpoch(t *testing.T) {
	a := newCodec(t, handle.Config{Node: 3, Epoch: 99})
	b := newCodec(t, handle.Config{Node: 3, Epoch: 99})
	id, h := a.New(handle.Object)
	got, err := b.Parse(handle.Object, h)
	if err != nil || got != id {
		t.Fatalf("Parse by a codec sharing key, node and epoch = %x, %v; want %x, nil", got, err, id)
	}
}

func TestNewCodecCopiesKey(t *testing.T) {
	key := bytes.Clone(testKey)
	c := newCodec(t, handle.Config{Key: key, Epoch: 1})
	key[0] ^= 0xff // the caller reuses its buffer before the codec's first use
	_, h := c.New(handle.Object)
	same := newCodec(t, handle.Config{Key: testKey, Epoch: 1})
	if _, err := same.Parse(handle.Object, h); err != nil {
		t.Fatalf("a handle minted after the caller changed its key slice does not verify under the original key: %v", err)
	}
}

// flip returns s with the character at i replaced by another base64url
// character.
func flip(s string, i int) string {
	r := byte('A')
	if s[i] == 'A' {
		r = 'B'
	}
	return s[:i] + string(r) + s[i+1:]
}

func replaceAt(s string, i int, c byte) string {
	return s[:i] + string(c) + s[i+1:]
}

func TestParseRejects(t *testing.T) {
	const node, epoch = 7, 12345
	c := newCodec(t, handle.Config{Node: node, Epoch: epoch})
	_, obj := c.New(handle.Object)
	_, lse := c.New(handle.Lease)
	otherKey := newCodec(t, handle.Config{Key: bytes.Repeat([]byte{0xa5}, handle.MinKeyLen), Node: node, Epoch: epoch})
	_, foreignKeyObj := otherKey.New(handle.Object)
	otherKeyOtherEpoch := newCodec(t, handle.Config{Key: bytes.Repeat([]byte{0xa5}, handle.MinKeyLen), Node: node, Epoch: epoch - 1})
	_, foreignKeyOldObj := otherKeyOtherEpoch.New(handle.Object)
	earlier := newCodec(t, handle.Config{Node: node, Epoch: epoch - 5})
	_, oldObj := earlier.New(handle.Object)
	_, oldLse := earlier.New(handle.Lease)
	otherNode := newCodec(t, handle.Config{Node: node + 1, Epoch: epoch})
	_, foreignObj := otherNode.New(handle.Object)
	otherNodeAndEpoch := newCodec(t, handle.Config{Node: 300, Epoch: epoch + 1})
	_, foreignOldObj := otherNodeAndEpoch.New(handle.Object)

	p := len("obj_")
	tests := []struct {
		name string
		kind handle.Kind
		in   string
		want error // a sentinel; nil when wantRestarted or wantForeign
		// For typed errors:
		wantRestarted *handle.RestartedError
		wantForeign   *handle.ForeignNodeError
	}{
		{name: "empty string", kind: handle.Object, in: "", want: handle.ErrMalformed},
		{name: "prefix only", kind: handle.Object, in: "obj_", want: handle.ErrMalformed},
		{name: "wrong prefix", kind: handle.Object, in: "abc_" + obj[p:], want: handle.ErrMalformed},
		{name: "upper-case prefix", kind: handle.Object, in: "OBJ_" + obj[p:], want: handle.ErrMalformed},
		// The prefix tells the kinds apart before the MAC is looked at.
		{name: "lease handle parsed as object", kind: handle.Object, in: lse, want: handle.ErrMalformed},
		{name: "object handle parsed as lease", kind: handle.Lease, in: obj, want: handle.ErrMalformed},
		// With the prefix swapped the shape fits, but the kind is under
		// the MAC.
		{name: "lease body under object prefix", kind: handle.Object, in: "obj_" + lse[p:], want: handle.ErrUnknown},
		{name: "object body under lease prefix", kind: handle.Lease, in: "lse_" + obj[p:], want: handle.ErrUnknown},
		{name: "truncated by one", kind: handle.Object, in: obj[:len(obj)-1], want: handle.ErrMalformed},
		{name: "truncated by four", kind: handle.Object, in: obj[:len(obj)-4], want: handle.ErrMalformed},
		{name: "one char too long", kind: handle.Object, in: obj + "A", want: handle.ErrMalformed},
		{name: "four chars too long", kind: handle.Object, in: obj + "AAAA", want: handle.ErrMalformed},
		{name: "standard base64 plus", kind: handle.Object, in: replaceAt(obj, p+10, '+'), want: handle.ErrMalformed},
		{name: "standard base64 slash", kind: handle.Object, in: replaceAt(obj, p+10, '/'), want: handle.ErrMalformed},
		{name: "padding char", kind: handle.Object, in: replaceAt(obj, len(obj)-1, '='), want: handle.ErrMalformed},
		{name: "space", kind: handle.Object, in: replaceAt(obj, p+3, ' '), want: handle.ErrMalformed},
		{name: "newline the decoder would skip", kind: handle.Object, in: replaceAt(obj, p+3, '\n'), want: handle.ErrMalformed},
		{name: "non-ASCII", kind: handle.Object, in: obj[:len(obj)-2] + "é", want: handle.ErrMalformed},
		// The version is read before the MAC: another version is not a handle.
		{name: "flipped char in version", kind: handle.Object, in: flip(obj, p), want: handle.ErrMalformed},
		{name: "flipped char in node", kind: handle.Object, in: flip(obj, p+3), want: handle.ErrUnknown},
		{name: "flipped char in epoch", kind: handle.Object, in: flip(obj, p+6), want: handle.ErrUnknown},
		{name: "flipped char in random part", kind: handle.Object, in: flip(obj, p+20), want: handle.ErrUnknown},
		{name: "flipped char straddling random part and MAC", kind: handle.Object, in: flip(obj, p+33), want: handle.ErrUnknown},
		{name: "flipped first char of MAC", kind: handle.Object, in: flip(obj, p+34), want: handle.ErrUnknown},
		{name: "flipped last char of MAC", kind: handle.Object, in: flip(obj, len(obj)-1), want: handle.ErrUnknown},
		{name: "flipped char in lease MAC", kind: handle.Lease, in: flip(lse, len(lse)-1), want: handle.ErrUnknown},
		{name: "different key", kind: handle.Object, in: foreignKeyObj, want: handle.ErrUnknown},
		// The MAC is checked first: another key's handle is unknown even
		// when its epoch differs too.
		{name: "different key and epoch", kind: handle.Object, in: foreignKeyOldObj, want: handle.ErrUnknown},
		{name: "same key earlier epoch", kind: handle.Object, in: oldObj, wantRestarted: &handle.RestartedError{Issued: epoch - 5, Current: epoch}},
		{name: "same key earlier epoch lease", kind: handle.Lease, in: oldLse, wantRestarted: &handle.RestartedError{Issued: epoch - 5, Current: epoch}},
		{name: "same key other node", kind: handle.Object, in: foreignObj, wantForeign: &handle.ForeignNodeError{Node: node + 1, Epoch: epoch}},
		// The node is checked before the epoch.
		{name: "same key other node and epoch", kind: handle.Object, in: foreignOldObj, wantForeign: &handle.ForeignNodeError{Node: 300, Epoch: epoch + 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := c.Parse(tt.kind, tt.in)
			if err == nil {
				t.Fatalf("Parse(%v, %q) = %x, nil; want an error", tt.kind, tt.in, id)
			}
			if id != (handle.ID{}) {
				t.Errorf("Parse returned ID %x alongside error %v; want the zero ID", id, err)
			}
			switch {
			case tt.wantRestarted != nil:
				var re *handle.RestartedError
				if !errors.As(err, &re) {
					t.Fatalf("Parse error = %v (%T), want *RestartedError", err, err)
				}
				if *re != *tt.wantRestarted {
					t.Fatalf("RestartedError = %+v, want %+v", *re, *tt.wantRestarted)
				}
			case tt.wantForeign != nil:
				var fe *handle.ForeignNodeError
				if !errors.As(err, &fe) {
					t.Fatalf("Parse error = %v (%T), want *ForeignNodeError", err, err)
				}
				if *fe != *tt.wantForeign {
					t.Fatalf("ForeignNodeError = %+v, want %+v", *fe, *tt.wantForeign)
				}
			default:
				if !errors.Is(err, tt.want) {
					t.Fatalf("Parse error = %v, want %v", err, tt.want)
				}
			}
		})
	}
}

func TestTypedErrorsSayWhatHappened(t *testing.T) {
	re := &handle.RestartedError{Issued: 1, Current: 2}
	if got := re.Error(); !strings.Contains(got, "epoch 1, now 2") {
		t.Errorf("RestartedError.Error() = %q, want it to name both epochs", got)
	}
	fe := &handle.ForeignNodeError{Node: 42}
	if got := fe.Error(); !strings.Contains(got, "42") {
		t.Errorf("ForeignNodeError.Error() = %q, want it to name the node", got)
	}
}

func TestForeignHookAnswersOnlyForAnotherNodesHandle(t *testing.T) {
	var asked []handle.ForeignNodeError
	errCluster := errors.New("the cluster's answer")
	c := newCodec(t, handle.Config{Node: 1, Epoch: 10, Foreign: func(fe *handle.ForeignNodeError) error {
		asked = append(asked, *fe)
		return fmt.Errorf("%w: %w", errCluster, fe)
	}})
	_, own := c.New(handle.Object)
	if _, err := c.Parse(handle.Object, own); err != nil {
		t.Fatalf("Parse of its own handle: %v", err)
	}
	_, old := newCodec(t, handle.Config{Node: 1, Epoch: 9}).New(handle.Object)
	var re *handle.RestartedError
	if _, err := c.Parse(handle.Object, old); !errors.As(err, &re) {
		t.Fatalf("Parse of an earlier run's handle = %v, want *RestartedError", err)
	}
	_, other := newCodec(t, handle.Config{Node: 2, Epoch: 11}).New(handle.Lease)
	_, err := c.Parse(handle.Lease, other)
	var fe *handle.ForeignNodeError
	if !errors.Is(err, errCluster) || !errors.As(err, &fe) || fe.Node != 2 {
		t.Fatalf("Parse of another node's handle = %v, want the hook's answer wrapping node 2", err)
	}
	if len(asked) != 1 || asked[0] != (handle.ForeignNodeError{Node: 2, Epoch: 11}) {
		t.Fatalf("hook asked %+v, want once, for node 2 epoch 11", asked)
	}
}

func TestNewCodecValidatesConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     handle.Config
		wantErr bool
	}{
		{name: "nil key", cfg: handle.Config{}, wantErr: true},
		{name: "key one byte short", cfg: handle.Config{Key: make([]byte, handle.MinKeyLen-1)}, wantErr: true},
		{name: "key of minimum length", cfg: handle.Config{Key: make([]byte, handle.MinKeyLen)}},
		{name: "long key", cfg: handle.Config{Key: make([]byte, 128)}},
		{name: "epoch over 48 bits", cfg: handle.Config{Key: testKey, Epoch: 1 << 48}, wantErr: true},
		{name: "epoch max uint64", cfg: handle.Config{Key: testKey, Epoch: ^uint64(0)}, wantErr: true},
		{name: "epoch largest 48-bit", cfg: handle.Config{Key: testKey, Epoch: 1<<48 - 1}},
		{name: "largest node", cfg: handle.Config{Key: testKey, Node: 0xffff, Epoch: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := handle.NewCodec(tt.cfg)
			if tt.wantErr {
				if err == nil || c != nil {
					t.Fatalf("NewCodec = %v, %v; want nil and an error", c, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewCodec: %v", err)
			}
			if c.Node() != tt.cfg.Node {
				t.Errorf("Node() = %d, want %d", c.Node(), tt.cfg.Node)
			}
			if tt.cfg.Epoch != 0 && c.Epoch() != tt.cfg.Epoch {
				t.Errorf("Epoch() = %d, want %d", c.Epoch(), tt.cfg.Epoch)
			}
			// The extremes of node and epoch survive the round trip.
			for _, k := range kinds {
				id, h := c.New(k)
				if got, err := c.Parse(k, h); err != nil || got != id {
					t.Errorf("Parse(New(%v)) = %x, %v; want %x, nil", k, got, err, id)
				}
			}
		})
	}
}

func TestZeroEpochMeansNowInMilliseconds(t *testing.T) {
	before := uint64(time.Now().UnixMilli())
	c := newCodec(t, handle.Config{})
	after := uint64(time.Now().UnixMilli())
	if e := c.Epoch(); e < before || e > after {
		t.Fatalf("Epoch() = %d, want between %d and %d", e, before, after)
	}
}

func TestNewMintsDistinctIDs(t *testing.T) {
	const n = 100_000
	c := newCodec(t, handle.Config{Epoch: 1})
	ids := make(map[handle.ID]struct{}, n)
	handles := make(map[string]struct{}, n)
	for i := range n {
		id, h := c.New(handle.Object)
		ids[id] = struct{}{}
		handles[h] = struct{}{}
		if len(ids) != i+1 || len(handles) != i+1 {
			t.Fatalf("call %d repeated an ID or handle (%x, %q)", i, id, h)
		}
	}
}

// TestMintFromManyGoroutinesRepeatsNoID: IDs come from batches of random
// bytes kept in pooled states; goroutines minting at once never get the
// same bytes twice, and every ID verifies.
func TestMintFromManyGoroutinesRepeatsNoID(t *testing.T) {
	const goroutines, each = 4, 5000
	c := newCodec(t, handle.Config{Epoch: 1})
	out := make([][]handle.ID, goroutines)
	var wg sync.WaitGroup
	for g := range out {
		wg.Go(func() {
			for range each {
				id, mac := c.Mint(handle.Object)
				if got, err := c.Parse(handle.Object, c.FormatMAC(handle.Object, id, mac)); err != nil || got != id {
					t.Errorf("minted %x parses as %x, %v", id, got, err)
					return
				}
				out[g] = append(out[g], id)
			}
		})
	}
	wg.Wait()
	seen := make(map[handle.ID]struct{}, goroutines*each)
	for _, ids := range out {
		for _, id := range ids {
			if _, dup := seen[id]; dup {
				t.Fatalf("ID %x minted twice", id)
			}
			seen[id] = struct{}{}
		}
	}
}

func BenchmarkNew(b *testing.B) {
	c := newCodec(b, handle.Config{Epoch: 1})
	b.ReportAllocs()
	for b.Loop() {
		c.New(handle.Object)
	}
}

func BenchmarkParse(b *testing.B) {
	c := newCodec(b, handle.Config{Epoch: 1})
	_, h := c.New(handle.Object)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Parse(handle.Object, h); err != nil {
			b.Fatal(err)
		}
	}
}
