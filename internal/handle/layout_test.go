package handle

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// rawHandle builds a handle of kind k by hand from its fields, with a MAC
// computed by c over whatever version byte it is given.
func rawHandle(c *Codec, k Kind, ver byte, node uint16, epoch uint64, id ID) string {
	var raw [rawLen]byte
	raw[offVersion] = ver
	binary.BigEndian.PutUint16(raw[offNode:], node)
	putUint48(raw[offEpoch:], epoch)
	copy(raw[offID:], id[:])
	c.sum(k, raw[:offMAC], raw[offMAC:offMAC])
	return k.Prefix() + enc.EncodeToString(raw[:])
}

func TestLayoutFillsWholeBase64Characters(t *testing.T) {
	// 39 raw bytes are exactly 52 characters: no padding bits, so no two
	// strings decode to the same bytes.
	if rawLen*8%6 != 0 {
		t.Fatalf("raw length %d bytes leaves %d padding bits", rawLen, 6-rawLen*8%6)
	}
	if EncodedLen != 52 {
		t.Fatalf("EncodedLen = %d, want 52", EncodedLen)
	}
	if offMAC-offID != len(ID{}) {
		t.Fatalf("ID field is %d bytes, ID is %d", offMAC-offID, len(ID{}))
	}
}

func TestHandBuiltHandleMatchesFormat(t *testing.T) {
	// Guards rawHandle itself, so that the version test below changes only
	// the version byte.
	c, err := NewCodec(Config{Key: bytes.Repeat([]byte{9}, MinKeyLen), Node: 4, Epoch: 77})
	if err != nil {
		t.Fatal(err)
	}
	id := ID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	for _, k := range []Kind{Object, Lease} {
		if got, want := rawHandle(c, k, version, 4, 77, id), c.Format(k, id); got != want {
			t.Fatalf("hand-built %q, Format %q", got, want)
		}
	}
}

func TestParseRejectsOtherVersionsAsMalformed(t *testing.T) {
	c, err := NewCodec(Config{Key: bytes.Repeat([]byte{9}, MinKeyLen), Node: 4, Epoch: 77})
	if err != nil {
		t.Fatal(err)
	}
	id := ID{0xde, 0xad, 0xbe, 0xef}
	for _, ver := range []byte{0, 2, 0x7f, 0xff} {
		for _, k := range []Kind{Object, Lease} {
			// The MAC is genuine: only the version makes it unreadable.
			h := rawHandle(c, k, ver, 4, 77, id)
			if got, err := c.Parse(k, h); !errors.Is(err, ErrMalformed) {
				t.Errorf("Parse(%v, version %d) = %x, %v; want ErrMalformed", k, ver, got, err)
			}
		}
	}
}
