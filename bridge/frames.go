package bridge

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// Session messages that carry data (StreamFrame, SessionControl) travel in
// a binary form from v5 on: JSON costs a base64 round trip per byte, which
// bounded a port-forward to tens of MB/s. The binary form is
//
//	0x01 | uvarint(len(header)) | header | data
//
// where header is the message's JSON without its data. JSON messages begin
// with '{', so a receiver tells the two apart by the first byte; senders
// use the binary form only with peers of v5 or later.
const binaryFrameMark = 0x01

// EncodeStreamFrame encodes f, in the binary form if binaryForm is set and
// f carries data.
func EncodeStreamFrame(f *StreamFrame, binaryForm bool) ([]byte, error) {
	if !binaryForm || len(f.Data) == 0 {
		return Encode(f)
	}
	h := *f
	h.Data = nil
	return encodeBinary(&h, f.Data)
}

// DecodeStreamFrame decodes either form of a StreamFrame.
func DecodeStreamFrame(b []byte) (*StreamFrame, error) {
	if len(b) > 0 && b[0] == binaryFrameMark {
		f := new(StreamFrame)
		data, err := decodeBinary(b, f)
		if err != nil {
			return nil, err
		}
		f.Data = data
		return f, nil
	}
	return Decode[StreamFrame](b)
}

// EncodeSessionControl encodes c, in the binary form if binaryForm is set
// and c carries data.
func EncodeSessionControl(c *SessionControl, binaryForm bool) ([]byte, error) {
	if !binaryForm || len(c.Data) == 0 {
		return Encode(c)
	}
	h := *c
	h.Data = nil
	return encodeBinary(&h, c.Data)
}

// DecodeSessionControl decodes either form of a SessionControl.
func DecodeSessionControl(b []byte) (*SessionControl, error) {
	if len(b) > 0 && b[0] == binaryFrameMark {
		c := new(SessionControl)
		data, err := decodeBinary(b, c)
		if err != nil {
			return nil, err
		}
		c.Data = data
		return c, nil
	}
	return Decode[SessionControl](b)
}

func encodeBinary(header any, data []byte) ([]byte, error) {
	h, err := json.Marshal(header)
	if err != nil {
		return nil, fmt.Errorf("encoding %T: %w", header, err)
	}
	out := make([]byte, 0, 1+binary.MaxVarintLen64+len(h)+len(data))
	out = append(out, binaryFrameMark)
	out = binary.AppendUvarint(out, uint64(len(h)))
	out = append(out, h...)
	out = append(out, data...)
	if len(out) > MaxMessageBytes {
		return nil, fmt.Errorf("encoding %T: %w", header, ErrTooLarge)
	}
	return out, nil
}

var errBadBinaryFrame = errors.New("malformed binary frame")

func decodeBinary(b []byte, header any) ([]byte, error) {
	if len(b) > MaxMessageBytes {
		return nil, fmt.Errorf("decoding %T: %w", header, ErrTooLarge)
	}
	n, k := binary.Uvarint(b[1:])
	if k <= 0 || n > uint64(len(b)-1-k) {
		return nil, fmt.Errorf("decoding %T: %w", header, errBadBinaryFrame)
	}
	start := 1 + k
	end := start + int(n)
	if err := json.Unmarshal(b[start:end], header); err != nil {
		return nil, fmt.Errorf("decoding %T: %w", header, err)
	}
	var data []byte
	if end < len(b) {
		data = b[end:]
	}
	return data, nil
}
