package cache

import (
	"encoding/binary"
	"encoding/json"
	"errors"
)

// Codec turns values into bytes and back. Unmarshal must neither modify nor
// keep data: on the hit path it is a view of the Redis reply.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSONCodec is the default Codec, encoding/json.
type JSONCodec struct{}

// Marshal encodes v as JSON.
func (JSONCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes JSON data into v.
func (JSONCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// Every stored entry is a header followed by a payload:
//
//	magic    1 byte  0xCA
//	version  1 byte  1
//	kind     1 byte  value, not-found, lease, tombstone, refresh lease;
//	                 the high bit (0x80) says a row version follows
//	rowVer   8 bytes big-endian row version, only with the high bit:
//	                 the floor of a versioned tombstone or of a lease taken
//	                 over one, the CacheVersion of a value
//	nsGen    uvarint namespace generation known to the writer
//	allGen   uvarint global generation known to the writer
//	filled   uvarint fill time, Unix milliseconds; a versioned tombstone
//	                 filled in the future holds fills off until then
//	ttl      uvarint logical expiry minus fill time, milliseconds (XFetch)
//	load     uvarint load duration, milliseconds (XFetch delta)
//	payload  value: the codec's bytes; lease: a 16-byte token;
//	         refresh lease: the token, then the previous value's codec bytes
//
// Varints must be minimal, so that a decoded header encodes to the same bytes.
// The row version is fixed-width so that versioned_tombstone.lua can compare
// two of them byte by byte (Lua numbers lose integers above 2^53). Entries
// without it are the ones written before versioned mode existed, so the
// format version stays 1.
const (
	magic         = 0xCA
	formatVersion = 1
	tokenLen      = 16
	versionFlag   = 0x80 // in the kind byte: a row version follows
	versionLen    = 8
)

// kind is what an entry holds.
type kind uint8

const (
	kindValue     kind = 1 // a cached value
	kindNotFound  kind = 2 // the row does not exist
	kindLease     kind = 3 // a process is loading the key
	kindTombstone kind = 4 // recently invalidated: load, but do not fill
	kindRefresh   kind = 5 // a process is refreshing the key; the old value is still served
)

// header is the decoded prefix of an entry.
type header struct {
	kind    kind
	nsGen   uint64
	allGen  uint64
	filled  uint64 // Unix ms
	ttl     uint64 // ms from filled to logical expiry
	loadDur uint64 // ms
	// versioned says the entry carries rowVer (see InvalidateVersions).
	versioned bool
	rowVer    uint64
}

// expires returns the logical expiry in Unix ms.
func (h *header) expires() uint64 { return h.filled + h.ttl }

var errCorrupt = errors.New("cache: corrupt entry")

// appendHeader appends the encoding of h to dst.
func appendHeader(dst []byte, h header) []byte {
	if h.versioned {
		dst = append(dst, magic, formatVersion, byte(h.kind)|versionFlag)
		dst = binary.BigEndian.AppendUint64(dst, h.rowVer)
	} else {
		dst = append(dst, magic, formatVersion, byte(h.kind))
	}
	dst = binary.AppendUvarint(dst, h.nsGen)
	dst = binary.AppendUvarint(dst, h.allGen)
	dst = binary.AppendUvarint(dst, h.filled)
	dst = binary.AppendUvarint(dst, h.ttl)
	return binary.AppendUvarint(dst, h.loadDur)
}

// encodeEntry returns header h followed by payload.
func encodeEntry(h header, payload ...[]byte) []byte {
	n := 3 + versionLen + 5*binary.MaxVarintLen64
	for _, p := range payload {
		n += len(p)
	}
	b := appendHeader(make([]byte, 0, n), h)
	for _, p := range payload {
		b = append(b, p...)
	}
	return b
}

// decodeHeader splits an entry into its header and payload. It does not
// allocate; any malformed input returns errCorrupt.
func decodeHeader(b []byte) (header, []byte, error) {
	var h header
	if len(b) < 3 || b[0] != magic || b[1] != formatVersion {
		return h, nil, errCorrupt
	}
	h.kind, h.versioned = kind(b[2]&^versionFlag), b[2]&versionFlag != 0
	if h.kind < kindValue || h.kind > kindRefresh {
		return h, nil, errCorrupt
	}
	b = b[3:]
	if h.versioned {
		if len(b) < versionLen {
			return h, nil, errCorrupt
		}
		h.rowVer, b = binary.BigEndian.Uint64(b), b[versionLen:]
	}
	for _, f := range [...]*uint64{&h.nsGen, &h.allGen, &h.filled, &h.ttl, &h.loadDur} {
		v, n := binary.Uvarint(b)
		if n <= 0 || (n > 1 && b[n-1] == 0) {
			return h, nil, errCorrupt
		}
		*f, b = v, b[n:]
	}
	if h.filled+h.ttl < h.filled {
		return h, nil, errCorrupt
	}
	switch h.kind {
	case kindLease:
		if len(b) != tokenLen {
			return h, nil, errCorrupt
		}
	case kindRefresh:
		if len(b) < tokenLen {
			return h, nil, errCorrupt
		}
	case kindNotFound, kindTombstone:
		if len(b) != 0 {
			return h, nil, errCorrupt
		}
	}
	return h, b, nil
}
