package bridge

import "time"

// Kubelet API sessions (kubectl logs, exec, attach, port-forward, top)
// between the provider and a device.
//
// The provider opens a session by publishing a request on
// SessionSubject(device) — inside the device's own inbox prefix, the only
// subjects a device may subscribe to. The device answers with StreamFrames
// on SessionDataSubject(device, id) — inside its own publish prefix — and
// never sends more frames than the provider has granted: the request grants
// InitialCredit, every SessionControl on SessionControlSubject(device, id)
// grants more or cancels. So a device can open, read or answer sessions
// addressed to it only, and never buffers without bound for a slow reader.
//
// Sessions with input (exec and attach with stdin, port-forward) carry the
// provider's data in SessionControl messages, numbered like the frames; the
// device grants the provider credit for them with unnumbered StreamFrames
// that carry only Credit. A provider sends no input before its first grant,
// which is also how it knows the device has set the session up.

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

// Kinds of session (SessionRequest.Kind).
const (
	SessionLogs        = "" // v4 peers send no kind: every v4 session is a log
	SessionExec        = "exec"
	SessionAttach      = "attach"
	SessionPortForward = "portforward"
	SessionStats       = "stats"
)

// SessionRequest opens a session. A log (Kind empty) reads one container's
// log with kubelet's options (kubectl logs -c, -f, --tail, --since,
// --since-time, --timestamps, --previous, --limit-bytes). Exec runs Command
// in the container, attach joins its main process, both with the standard
// streams asked for. Port-forward connects to Port in the pod's network
// namespace. Stats asks for a StatsReport (one JSON document in the data).
// Named LogRequest in v4, with the same fields on the wire.
type SessionRequest struct {
	Session string `json:"session"`
	// Version is the provider's ProtocolVersion (v5 on; 0 before).
	Version   int    `json:"version,omitempty"`
	Kind      string `json:"kind,omitempty"`
	PodUID    string `json:"podUID,omitempty"`
	Container string `json:"container,omitempty"`

	Command []string `json:"command,omitempty"`
	Stdin   bool     `json:"stdin,omitempty"`
	Stdout  bool     `json:"stdout,omitempty"`
	Stderr  bool     `json:"stderr,omitempty"`
	TTY     bool     `json:"tty,omitempty"`

	Port int32 `json:"port,omitempty"`

	Follow bool `json:"follow,omitempty"`
	// TailLines, when set, starts that many lines before the end.
	TailLines  *int64     `json:"tailLines,omitempty"`
	SinceTime  *time.Time `json:"sinceTime,omitempty"`
	Timestamps bool       `json:"timestamps,omitempty"`
	Previous   bool       `json:"previous,omitempty"`
	LimitBytes int64      `json:"limitBytes,omitempty"`
}

// Output streams of a StreamFrame.
const (
	StreamStdout = 0 // also a log's and a port-forward's data
	StreamStderr = 2
)

// StreamFrame is one piece of a session's output, numbered from 0. The last
// frame has EOF set, and for exec the command's Exit code; Error, with an
// error Code, says why a session failed. A frame with only Credit set is
// not numbered: it grants the provider that many more input messages.
type StreamFrame struct {
	Seq    uint64 `json:"seq"`
	Stream int    `json:"stream,omitempty"`
	Data   []byte `json:"data,omitempty"`
	EOF    bool   `json:"eof,omitempty"`
	Exit   *int   `json:"exit,omitempty"`
	Error  string `json:"error,omitempty"`
	Code   string `json:"code,omitempty"`
	Credit int    `json:"credit,omitempty"`
}

// Numbered reports whether f takes a sequence number and credit.
func (f *StreamFrame) Numbered() bool {
	return len(f.Data) > 0 || f.EOF || (f.Error != "" && f.Code != CodeSessionGone)
}

// Error codes of a StreamFrame.
const (
	CodeSessionNotFound     = "NotFound"
	CodeSessionInvalidInput = "InvalidInput"
	CodeSessionUnavailable  = "Unavailable"
	CodeSessionInternal     = "Internal"
	// CodeSessionGone answers a message for a session the device does not know
	// (it restarted, or the session ended); not numbered.
	CodeSessionGone = "Gone"
)

// SessionControl grants a session Credit more frames, or cancels it (the
// client went away). The provider sends one at least every
// SessionKeepalive; a device ends a session that hears nothing for
// SessionTimeout. From v5 it also carries the provider's input: Data
// (stdin, or port-forward bytes) and EOF (no more input), numbered by Seq
// from 0 like frames, and Resize for a TTY. Messages with only Credit,
// Cancel or Resize are not numbered.
type SessionControl struct {
	Credit int       `json:"credit,omitempty"`
	Cancel bool      `json:"cancel,omitempty"`
	Seq    uint64    `json:"seq,omitempty"`
	Data   []byte    `json:"data,omitempty"`
	EOF    bool      `json:"eof,omitempty"`
	Resize *TermSize `json:"resize,omitempty"`
}

// Numbered reports whether c takes a sequence number and credit.
func (c *SessionControl) Numbered() bool { return len(c.Data) > 0 || c.EOF }

// TermSize is a terminal's size in characters.
type TermSize struct {
	Width  uint16 `json:"width"`
	Height uint16 `json:"height"`
}

// StatsReport is a device's resource usage (kubectl top): the device as a
// whole and each of its pods' containers. CPU figures are cumulative
// nanoseconds of CPU time; memory figures are bytes.
type StatsReport struct {
	Time time.Time  `json:"time"`
	Node NodeStats  `json:"node"`
	Pods []PodStats `json:"pods,omitempty"`
}

// NodeStats is the usage of the whole device.
type NodeStats struct {
	StartTime             time.Time `json:"startTime"`
	CPUNanos              uint64    `json:"cpuNanos"`
	MemoryWorkingSetBytes uint64    `json:"memoryWorkingSetBytes"`
	MemoryUsageBytes      uint64    `json:"memoryUsageBytes"`
	MemoryAvailableBytes  uint64    `json:"memoryAvailableBytes"`
}

// PodStats is the usage of one pod's containers.
type PodStats struct {
	UID        string           `json:"uid"`
	Namespace  string           `json:"namespace"`
	Name       string           `json:"name"`
	Containers []ContainerStats `json:"containers,omitempty"`
}

// ContainerStats is the usage of one container, sampled at Time.
type ContainerStats struct {
	Name                  string    `json:"name"`
	StartTime             time.Time `json:"startTime"`
	Time                  time.Time `json:"time"`
	CPUNanos              uint64    `json:"cpuNanos"`
	MemoryWorkingSetBytes uint64    `json:"memoryWorkingSetBytes"`
	MemoryUsageBytes      uint64    `json:"memoryUsageBytes"`
}

// Session liveness.
const (
	SessionKeepalive = 10 * time.Second
	SessionTimeout   = 45 * time.Second
)
