package bridge

import "time"

// Kubelet API sessions (kubectl logs, …) between the provider and a device.
//
// The provider opens a session by publishing a request on
// SessionSubject(device) — inside the device's own inbox prefix, the only
// subjects a device may subscribe to. The device answers with StreamFrames
// on SessionDataSubject(device, id) — inside its own publish prefix — and
// never sends more frames than the provider has granted: the request grants
// InitialCredit, every SessionControl on SessionControlSubject(device, id)
// grants more or cancels. So a device can open, read or answer sessions
// addressed to it only, and never buffers without bound for a slow reader.

// InitialCredit is the number of frames a session may send before the
// provider grants more.
const InitialCredit = 16

// MaxFrameBytes bounds the data of one StreamFrame.
const MaxFrameBytes = 32 << 10

// SessionSubject is where the provider opens sessions with device.
func SessionSubject(device string) string { return "_INBOX_" + device + ".kubelet" }

// SessionControlSubject carries the provider's SessionControl messages of
// one session.
func SessionControlSubject(device, id string) string { return SessionSubject(device) + "." + id }

// SessionDataSubject carries the device's StreamFrames of one session.
func SessionDataSubject(device, id string) string {
	return SubjectPrefix + "." + device + ".session." + id
}

// LogRequest asks a device for the log of one container, with kubelet's
// options (kubectl logs -c, -f, --tail, --since, --since-time,
// --timestamps, --previous, --limit-bytes).
type LogRequest struct {
	Session   string `json:"session"`
	PodUID    string `json:"podUID"`
	Container string `json:"container"`
	Follow    bool   `json:"follow,omitempty"`
	// TailLines, when set, starts that many lines before the end.
	TailLines  *int64     `json:"tailLines,omitempty"`
	SinceTime  *time.Time `json:"sinceTime,omitempty"`
	Timestamps bool       `json:"timestamps,omitempty"`
	Previous   bool       `json:"previous,omitempty"`
	LimitBytes int64      `json:"limitBytes,omitempty"`
}

// StreamFrame is one piece of a session's output, numbered from 0. The last
// frame has EOF set; Error, with an error Code, says why a session failed.
type StreamFrame struct {
	Seq   uint64 `json:"seq"`
	Data  []byte `json:"data,omitempty"`
	EOF   bool   `json:"eof,omitempty"`
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`
}

// SessionControl grants a session Credit more frames, or cancels it (the
// client went away). The provider sends one at least every
// SessionKeepalive; a device ends a session that hears nothing for
// SessionTimeout while it waits for credit.
type SessionControl struct {
	Credit int  `json:"credit,omitempty"`
	Cancel bool `json:"cancel,omitempty"`
}

// Session liveness.
const (
	SessionKeepalive = 10 * time.Second
	SessionTimeout   = 45 * time.Second
)
