package handle

import (
	"strings"
	"testing"
)

// FuzzDecodeRawAgreesWithBase64 checks the handle-length decoder against
// encoding/base64: it accepts exactly the strings enc.Decode accepts at
// that length, and decodes them to the same bytes.
func FuzzDecodeRawAgreesWithBase64(f *testing.F) {
	var raw [rawLen]byte
	for i := range raw {
		raw[i] = byte(i * 37)
	}
	good := enc.EncodeToString(raw[:])
	f.Add(good)
	f.Add(strings.Repeat("A", EncodedLen))
	f.Add(strings.Repeat("_", EncodedLen))
	f.Add(good[:EncodedLen-1] + "=")
	f.Add(good[:EncodedLen-1] + "+")
	f.Add(good[:EncodedLen-1] + "/")
	f.Add("\x00" + good[1:])
	f.Add("\xff" + good[1:])
	f.Add(good[:EncodedLen-1] + "\n")
	f.Add(good[:20] + "\r" + good[21:])
	f.Fuzz(func(t *testing.T, s string) {
		var got [rawLen]byte
		ok := decodeRaw(&got, s)
		want := make([]byte, max(rawLen, enc.DecodedLen(len(s))))
		n, err := enc.Decode(want, []byte(s))
		wantOK := err == nil && n == rawLen && len(s) == EncodedLen
		if ok != wantOK {
			t.Fatalf("decodeRaw(%q) ok=%v, base64 says %v (n=%d, err=%v)", s, ok, wantOK, n, err)
		}
		if ok && string(got[:]) != string(want[:rawLen]) {
			t.Fatalf("decodeRaw(%q) = %x, base64 %x", s, got, want[:rawLen])
		}
	})
}
