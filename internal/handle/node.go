package handle

import "encoding/binary"

// NodeOf reads the node tag from s, a string shaped like a handle of kind
// k, without the key: it says where to ask, not whether the handle is
// genuine (only the node that issued it can tell). A cluster's client
// routes by it. ok is false when s is not shaped like a handle of k of
// this format.
func NodeOf(k Kind, s string) (node uint16, ok bool) {
	prefix := k.Prefix()
	if len(s) != len(prefix)+EncodedLen || s[:len(prefix)] != prefix {
		return 0, false
	}
	// The version byte and the node tag are the first 3 bytes: the first
	// 4 characters of the encoding.
	var raw [3]byte
	if n, err := enc.Decode(raw[:], []byte(s[len(prefix):len(prefix)+4])); err != nil || n != 3 || raw[offVersion] != version {
		return 0, false
	}
	return binary.BigEndian.Uint16(raw[offNode:]), true
}
