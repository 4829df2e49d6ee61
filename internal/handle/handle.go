// Package handle mints and verifies the registry's capabilities: the opaque
// strings that name objects ("obj_…") and leases ("lse_…"), and the page
// tokens of listings ("pgt_…").
//
// A handle is 128 random bits plus, under an HMAC-SHA256 with the server
// key, the kind, a format version, the issuing node's tag and the epoch of
// the registryd run that issued it. Verifying the MAC lets the server tell,
// with no memory of past handles, a malformed string from one it never
// issued, from one issued by an earlier run or another node, from one it
// issued and whose object is gone.
package handle

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sync"
	"time"
	"unsafe"
)

// ID is the random part of a handle: what the registry keys its maps by.
type ID [16]byte

// MAC is the tag a handle carries: the truncated HMAC, under the server
// key, of its kind and of everything before it. A registry keeps it, with
// the ID, instead of the handle's string: the two give the string back
// (FormatMAC) without the key, and recognise it (Split).
type MAC [macLen]byte

// Kind is what a handle names. It is covered by the MAC, so an object
// handle can never pass for a lease id or the reverse.
type Kind uint8

const (
	// Object handles name stored objects: "obj_…".
	Object Kind = iota
	// Lease handles name leases: "lse_…".
	Lease
	// PageToken handles name a place in a listing, the ID listed last:
	// "pgt_…". Minted as handles, page tokens are bound to this key, node
	// and run, and cannot be forged or altered.
	PageToken
)

// Prefix returns the fixed string every handle of kind k starts with.
func (k Kind) Prefix() string {
	switch k {
	case Lease:
		return "lse_"
	case PageToken:
		return "pgt_"
	}
	return "obj_"
}

// Layout of the decoded bytes. The version byte lets a later format
// coexist with this one; the node tag leaves room for a cluster to route a
// handle to the node that owns it.
const (
	version    = 1
	offVersion = 0
	offNode    = 1
	offEpoch   = 3
	offID      = 9
	offMAC     = 25
	macLen     = 14 // 112 bits: forging one by guessing is out of reach
	rawLen     = offMAC + macLen
	// EncodedLen is the length of every handle after its prefix.
	EncodedLen = (rawLen*8 + 5) / 6
	// MinKeyLen is the shortest MAC key accepted, in bytes.
	MinKeyLen = 32
	maxEpoch  = 1<<48 - 1
)

var enc = base64.RawURLEncoding

// Sentinel errors from Parse. A caller maps them to its own status codes.
var (
	// ErrMalformed: the string is not a handle of this kind at all.
	ErrMalformed = errors.New("handle is malformed")
	// ErrUnknown: the string has a handle's shape but this registry's key
	// did not issue it (or it was altered).
	ErrUnknown = errors.New("handle was not issued by this registry")
)

// RestartedError is returned by Parse for a genuine handle issued by an
// earlier run of registryd (a different epoch): whatever it named is gone
// with that run.
type RestartedError struct {
	// Issued is the epoch carried by the handle.
	Issued uint64
	// Current is this run's epoch.
	Current uint64
}

func (e *RestartedError) Error() string {
	return fmt.Sprintf("handle was issued by an earlier run of the registry (epoch %d, now %d)", e.Issued, e.Current)
}

// ForeignNodeError is returned by Parse for a genuine handle issued by
// another node that shares this node's key.
type ForeignNodeError struct {
	// Node is the tag of the node that issued the handle.
	Node uint16
	// Epoch is the run of that node that issued it: in a cluster, a
	// node that knows its peer's current run can tell a handle of an
	// earlier one.
	Epoch uint64
}

func (e *ForeignNodeError) Error() string {
	return fmt.Sprintf("handle belongs to node %d", e.Node)
}

// Config configures a Codec.
type Config struct {
	// Key is the MAC key, at least MinKeyLen bytes. Nodes and runs that
	// share a key recognise each other's handles.
	Key []byte
	// Node is this node's tag, carried in every handle it issues.
	Node uint16
	// Epoch identifies this run; it must differ between runs. Zero means
	// the current time in milliseconds since the Unix epoch.
	Epoch uint64
	// Foreign, when set, is what Parse answers for a genuine handle of
	// another node instead of the *ForeignNodeError it is given: a node
	// of a cluster knows whether that node is live and where it is
	// (internal/server.ClusterAnswers). The error it returns should wrap
	// the one it is given. It runs only on that miss, never for a handle
	// of this node. nil: the *ForeignNodeError.
	Foreign func(*ForeignNodeError) error
}

// Codec mints and parses handles for one run of one node. It is safe for
// concurrent use.
type Codec struct {
	node    uint16
	epoch   uint64
	foreign func(*ForeignNodeError) error // Config.Foreign
	hdr     [offID]byte                   // the body of every handle of this run before its ID (header)
	macs    sync.Pool                     // of *macState: HMAC setup costs more than the MAC itself
}

// macState is a reusable HMAC with its input and output buffers, so that
// computing a MAC allocates nothing.
type macState struct {
	h   hash.Hash
	in  [1 + offMAC]byte // the kind, then the handle's body
	out [sha256.Size]byte

	// Random bytes for Mint's IDs: ids[used:] are still to be handed out.
	ids  [idBatch * len(ID{})]byte
	used int
}

// idBatch is how many IDs' worth of random bytes Mint reads at once.
const idBatch = 32

// NewCodec returns a Codec for cfg.
func NewCodec(cfg Config) (*Codec, error) {
	if len(cfg.Key) < MinKeyLen {
		return nil, fmt.Errorf("handle key is %d bytes, want at least %d", len(cfg.Key), MinKeyLen)
	}
	epoch := cfg.Epoch
	if epoch == 0 {
		epoch = uint64(time.Now().UnixMilli())
	}
	if epoch > maxEpoch {
		return nil, fmt.Errorf("epoch %d does not fit in 48 bits", epoch)
	}
	key := append([]byte(nil), cfg.Key...)
	c := &Codec{node: cfg.Node, epoch: epoch, foreign: cfg.Foreign}
	c.header(c.hdr[:], ID{})
	c.macs.New = func() any {
		m := &macState{h: hmac.New(sha256.New, key)}
		m.used = len(m.ids) // read on first use
		return m
	}
	return c, nil
}

// Epoch returns this run's epoch.
func (c *Codec) Epoch() uint64 { return c.epoch }

// Node returns this node's tag.
func (c *Codec) Node() uint16 { return c.node }

// New mints a fresh handle of kind k.
func (c *Codec) New(k Kind) (ID, string) {
	id, mac := c.Mint(k)
	return id, c.FormatMAC(k, id, mac)
}

// Mint mints a fresh handle of kind k and returns its parts: FormatMAC
// makes the string of them.
//
// The ID's bits come from crypto/rand as always, read for many IDs at
// once: a read of 16 bytes was a system call's worth of overhead, a
// twentieth of a Put. Each batch sits in a pooled HMAC state until its
// IDs are taken, each once.
func (c *Codec) Mint(k Kind) (ID, MAC) {
	m := c.macs.Get().(*macState)
	if m.used == len(m.ids) {
		rand.Read(m.ids[:]) // never fails (crypto/rand since Go 1.24)
		m.used = 0
	}
	id := ID(m.ids[m.used : m.used+len(ID{})])
	clear(m.ids[m.used : m.used+len(ID{})]) // handed out: kept nowhere else
	m.used += len(ID{})
	var raw [offMAC]byte
	c.header(raw[:], id)
	var mac MAC
	m.sum(k, raw[:], mac[:0])
	c.macs.Put(m)
	return id, mac
}

// Format returns the handle of kind k for id, as New returned it.
func (c *Codec) Format(k Kind, id ID) string {
	return c.FormatMAC(k, id, c.MAC(k, id))
}

// MAC returns the tag the handle of kind k for id carries.
func (c *Codec) MAC(k Kind, id ID) MAC {
	var raw [offMAC]byte
	c.header(raw[:], id)
	var mac MAC
	c.sum(k, raw[:], mac[:0])
	return mac
}

// FormatMAC returns the handle of kind k for id whose tag is mac, as
// MAC computed it. It computes no MAC: it only encodes.
func (c *Codec) FormatMAC(k Kind, id ID, mac MAC) string {
	var raw [rawLen]byte
	c.header(raw[:], id)
	copy(raw[offMAC:], mac[:])
	prefix := k.Prefix()
	out := make([]byte, len(prefix)+EncodedLen)
	copy(out, prefix)
	enc.Encode(out[len(prefix):], raw[:])
	// out is never written again: the string may be it, which saves a
	// copy and an allocation on every handle made.
	return unsafe.String(&out[0], len(out))
}

// header writes the body of a handle of this run for id into raw.
func (c *Codec) header(raw []byte, id ID) {
	raw[offVersion] = version
	binary.BigEndian.PutUint16(raw[offNode:], c.node)
	putUint48(raw[offEpoch:], c.epoch)
	copy(raw[offID:], id[:])
}

// Split reads s as a handle of kind k of this format, node and run, and
// returns its ID and the tag it carries, WITHOUT verifying the tag: ok is
// false when s is not shaped so, and then only Parse can say why.
//
// It is the first half of the fast way to recognise a handle the caller
// keeps the tag of (a registry's live object): a tag equal, in constant
// time, to the one kept for the ID proves s is the very handle issued for
// it (see the registry's Parse). Anything else goes to Parse, whose
// answer Split never changes.
func (c *Codec) Split(k Kind, s string) (id ID, mac MAC, ok bool) {
	prefix := k.Prefix()
	if len(s) != len(prefix)+EncodedLen || s[:len(prefix)] != prefix {
		return ID{}, MAC{}, false
	}
	var raw [rawLen]byte
	if !decodeRaw(&raw, s[len(prefix):]) || [offID]byte(raw[:offID]) != c.hdr {
		return ID{}, MAC{}, false
	}
	return ID(raw[offID:offMAC]), MAC(raw[offMAC:]), true
}

// TagsEqual reports whether a and b are the same tag, in constant time: it
// reads every byte of both and branches on none, as
// crypto/subtle.ConstantTimeCompare does, in three loads of each rather
// than a loop of fourteen.
func TagsEqual(a, b *MAC) bool {
	const _ = uint(macLen-14) + uint(14-macLen) // the loads below cover 14 bytes, all of a tag
	x := binary.LittleEndian.Uint64(a[0:8]) ^ binary.LittleEndian.Uint64(b[0:8])
	y := binary.LittleEndian.Uint32(a[8:12]) ^ binary.LittleEndian.Uint32(b[8:12])
	z := binary.LittleEndian.Uint16(a[12:14]) ^ binary.LittleEndian.Uint16(b[12:14])
	return x|uint64(y)|uint64(z) == 0
}

// decodeMap maps a byte of enc's alphabet to its six bits, and every other
// byte to 0xff.
var decodeMap = func() (m [256]byte) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range m {
		m[i] = 0xff
	}
	for i := range len(alphabet) {
		m[alphabet[i]] = byte(i)
	}
	return m
}()

// decodeRaw decodes src, EncodedLen bytes of enc, into raw, reporting
// whether every byte was of the alphabet. It is enc.Decode for the one
// length a handle has: rawLen is a whole number of 3-byte groups, so every
// 4 bytes of src are 3 of raw, with no padding and no spare bits to check,
// and a byte outside the alphabet only needs noticing, not locating. The
// general decoder was an eighth of a Resolve hit. Any src it refuses goes
// to Parse, which decides as it always did.
func decodeRaw(raw *[rawLen]byte, src string) bool {
	const _ = uint(-(rawLen % 3)) // whole groups, or this does not compile
	if len(src) != EncodedLen {
		return false
	}
	m := &decodeMap
	var bad byte
	// Eight bytes of src are six of raw, written as eight, the two extra
	// ones overwritten by the next eight; EncodedLen is six eights and
	// four.
	const _ = uint(EncodedLen-52) + uint(52-EncodedLen)
	for i := range 6 {
		s := src[8*i : 8*i+8]
		a, b, c, d := m[s[0]], m[s[1]], m[s[2]], m[s[3]]
		e, f, g, h := m[s[4]], m[s[5]], m[s[6]], m[s[7]]
		bad |= a | b | c | d | e | f | g | h
		v := uint64(a)<<58 | uint64(b)<<52 | uint64(c)<<46 | uint64(d)<<40 |
			uint64(e)<<34 | uint64(f)<<28 | uint64(g)<<22 | uint64(h)<<16
		binary.BigEndian.PutUint64(raw[6*i:], v)
	}
	s := src[48:52]
	a, b, c, d := m[s[0]], m[s[1]], m[s[2]], m[s[3]]
	bad |= a | b | c | d
	v := uint32(a)<<18 | uint32(b)<<12 | uint32(c)<<6 | uint32(d)
	raw[36], raw[37], raw[38] = byte(v>>16), byte(v>>8), byte(v)
	return bad&0xc0 == 0 // 0xff marks a byte outside the alphabet; the bits of one in it are below 0x40
}

// Parse verifies s as a handle of kind k issued by this node in this run
// and returns its ID. Errors: ErrMalformed, ErrUnknown, *RestartedError,
// *ForeignNodeError.
func (c *Codec) Parse(k Kind, s string) (ID, error) {
	prefix := k.Prefix()
	if len(s) != len(prefix)+EncodedLen || s[:len(prefix)] != prefix {
		return ID{}, ErrMalformed
	}
	var src [EncodedLen]byte // a copy on the stack: []byte(s) would allocate
	copy(src[:], s[len(prefix):])
	var raw [rawLen]byte
	n, err := enc.Decode(raw[:], src[:])
	if err != nil || n != rawLen || raw[offVersion] != version {
		return ID{}, ErrMalformed
	}
	var want [sha256.Size]byte
	if !hmac.Equal(c.sum(k, raw[:offMAC], want[:0]), raw[offMAC:]) {
		return ID{}, ErrUnknown
	}
	if node := binary.BigEndian.Uint16(raw[offNode:]); node != c.node {
		fe := &ForeignNodeError{Node: node, Epoch: uint48(raw[offEpoch:])}
		if c.foreign != nil {
			return ID{}, c.foreign(fe)
		}
		return ID{}, fe
	}
	if epoch := uint48(raw[offEpoch:]); epoch != c.epoch {
		return ID{}, &RestartedError{Issued: epoch, Current: c.epoch}
	}
	var id ID
	copy(id[:], raw[offID:offMAC])
	return id, nil
}

// sum appends the truncated MAC of kind and body to out.
func (c *Codec) sum(k Kind, body, out []byte) []byte {
	m := c.macs.Get().(*macState)
	out = m.sum(k, body, out)
	c.macs.Put(m)
	return out
}

func (m *macState) sum(k Kind, body, out []byte) []byte {
	m.h.Reset()
	m.in[0] = byte(k)
	copy(m.in[1:], body)
	m.h.Write(m.in[:])
	return append(out, m.h.Sum(m.out[:0])[:macLen]...)
}

func putUint48(b []byte, v uint64) {
	_ = b[5]
	b[0], b[1], b[2] = byte(v>>40), byte(v>>32), byte(v>>24)
	b[3], b[4], b[5] = byte(v>>16), byte(v>>8), byte(v)
}

func uint48(b []byte) uint64 {
	_ = b[5]
	return uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 |
		uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5])
}
