package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Message is any type this package puts on the wire.
type Message interface {
	Heartbeat | Workload | PodStatus | DesiredIndex | EnrollRequest | EnrollResponse |
		SessionRequest | StreamFrame | SessionControl | StatsReport
}

// MaxMessageBytes bounds every message on the wire and every value in the
// buckets (the buckets' MaxValueSize): NATS's default maximum payload.
const MaxMessageBytes = 1 << 20

// ErrTooLarge is returned by Decode for data over MaxMessageBytes.
var ErrTooLarge = errors.New("message larger than bridge.MaxMessageBytes")

// Encode returns the wire form of m.
func Encode[M Message](m *M) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding %T: %w", m, err)
	}
	return b, nil
}

// Decode parses the wire form of a message. Unknown fields are ignored, so a
// newer peer's message decodes on an older one.
func Decode[M Message](data []byte) (*M, error) {
	m := new(M)
	if len(data) > MaxMessageBytes {
		return nil, fmt.Errorf("decoding %T: %w", m, ErrTooLarge)
	}
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("decoding %T: %w", m, err)
	}
	return m, nil
}
