package registry

import (
	"bytes"
	"errors"
	"testing"
)

func TestPayloadSizeAndBytes(t *testing.T) {
	tests := []struct {
		name string
		p    Payload
		want string
	}{
		{"zero", Payload{}, ""},
		{"data only", Payload{Data: []byte("abc")}, "abc"},
		{"data and more", Payload{Data: []byte("ab"), More: [][]byte{[]byte("cd"), []byte("e")}}, "abcde"},
		{"more only", Payload{More: [][]byte{[]byte("ab"), []byte("cd")}}, "abcd"},
		{"empty pieces", Payload{Data: []byte{}, More: [][]byte{nil, []byte("x"), {}, []byte("yz")}}, "xyz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Size(); got != int64(len(tt.want)) {
				t.Fatalf("Size = %d, want %d", got, len(tt.want))
			}
			if got := tt.p.Bytes(); string(got) != tt.want {
				t.Fatalf("Bytes = %q, want %q", got, tt.want)
			}
		})
	}
	// Bytes of one piece is that piece, not a copy.
	data := []byte("shared")
	if got := (Payload{Data: data}).Bytes(); &got[0] != &data[0] {
		t.Fatal("Bytes of a payload in one piece copied it")
	}
}

// TestPutPayloadKeepsThePiecesItWasGiven: a payload put in pieces
// resolves to the same bytes, in the same pieces (never copied), with
// its size the sum of theirs.
func TestPutPayloadKeepsThePiecesItWasGiven(t *testing.T) {
	a, b, c := newPayload(300, 1), newPayload(1, 2), newPayload(4000, 3)
	tests := []struct {
		name     string
		p        Payload
		wantData []byte
		wantMore [][]byte
	}{
		{"one piece", Payload{Data: a}, a, nil},
		{"data and more", Payload{Data: a, More: [][]byte{b, c}}, a, [][]byte{b, c}},
		// An upload's pieces all come in More: the first becomes Data.
		{"no data", Payload{More: [][]byte{a, b, c}}, a, [][]byte{b, c}},
		{"empty data", Payload{Data: []byte{}, More: [][]byte{c}}, c, [][]byte{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRegistry(t, Config{})
			by := newHolder(r) // pinned: no GC may take it
			want := tt.p.Bytes()
			info, err := r.PutPayload(tt.p, Meta{}, &by)
			if err != nil {
				t.Fatal(err)
			}
			if info.Size != int64(len(want)) {
				t.Fatalf("Size = %d, want %d", info.Size, len(want))
			}
			obj, err := r.Resolve(info.Handle)
			if err != nil {
				t.Fatal(err)
			}
			if !samePiece(obj.Data, tt.wantData) || len(obj.More) != len(tt.wantMore) {
				t.Fatalf("resolved %d+%d pieces, want %d+%d, the same slices", len(obj.Data), len(obj.More), len(tt.wantData), len(tt.wantMore))
			}
			for i := range obj.More {
				if !samePiece(obj.More[i], tt.wantMore[i]) {
					t.Fatalf("piece %d is not the one put", i)
				}
			}
			pl := obj.Payload()
			if pl.Size() != info.Size || obj.Info.Size != info.Size || !bytes.Equal(pl.Bytes(), want) {
				t.Fatalf("resolved %d bytes (info says %d) that differ from the %d put", pl.Size(), obj.Info.Size, len(want))
			}
		})
	}
}

// samePiece: the same bytes in the same memory.
func samePiece(got, want []byte) bool {
	return len(got) == len(want) && (len(got) == 0 || &got[0] == &want[0])
}

func TestPutPayloadRefusesEmptyAndOversizedPayloads(t *testing.T) {
	r := newRegistry(t, Config{MaxObjectBytes: 100})
	by := newHolder(r)
	before := statsSnapshot(r)
	for _, p := range []Payload{
		{},
		{Data: []byte{}},
		{More: [][]byte{{}}},
		{More: [][]byte{nil, {}, nil}},
		{Data: []byte{}, More: [][]byte{{}}},
	} {
		for _, holder := range []*Holder{nil, &by} {
			if _, err := r.PutPayload(p, Meta{}, holder); !errors.Is(err, ErrPayloadEmpty) {
				t.Fatalf("PutPayload(%d+%d empty pieces): %v, want ErrPayloadEmpty", len(p.Data), len(p.More), err)
			}
			wantUnchanged(t, r, before)
		}
	}
	// The limit is on the sum of the pieces.
	_, err := r.PutPayload(Payload{Data: newPayload(60, 1), More: [][]byte{newPayload(41, 2)}}, Meta{}, &by)
	wantLimit(t, err, LimitObjectSize, 100, 101)
	wantUnchanged(t, r, before)
	if _, err := r.PutPayload(Payload{More: [][]byte{newPayload(60, 1), newPayload(40, 2)}}, Meta{}, &by); err != nil {
		t.Fatalf("PutPayload of exactly the limit: %v", err)
	}
}
