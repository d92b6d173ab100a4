package bridge

// EnrollSubject receives EnrollRequests (request/reply). A connection
// authenticated with an enrollment token may publish here and nothing else.
const EnrollSubject = "vkf.enroll"

// EnrollRequest asks to register a device. It travels over TLS: Token is a
// secret and must never be logged.
type EnrollRequest struct {
	Token string `json:"token"`
	Name  string `json:"name"`
	// NKey is the device's public user nkey (its seed stays on the device).
	NKey string `json:"nkey,omitempty"`
	// ZitadelToken, instead of NKey, is an access token of the device's
	// Zitadel machine user: proof that the device holds that user's key.
	// The server introspects it and registers the token's subject.
	ZitadelToken string            `json:"zitadelToken,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	// ProtocolVersion of the enrolling client.
	ProtocolVersion int `json:"protocolVersion,omitempty"`
}

// EnrollResponse answers an EnrollRequest.
type EnrollResponse struct {
	Device string `json:"device,omitempty"`
	Error  *Error `json:"error,omitempty"`
}

// Error codes that cross the wire.
const (
	CodeInvalid      = "invalid"       // the request is malformed
	CodeTokenInvalid = "token-invalid" // unknown token, or wrong secret
	CodeTokenExpired = "token-expired"
	CodeTokenUsedUp  = "token-used-up"
	CodeNameTaken    = "name-taken"
	CodeInternal     = "internal"
)

// Error is an error that crosses the wire: a code the other side maps back
// to its own error, and a message for people.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Is makes errors.Is match two Errors by code, so that callers can test a
// received error against the sentinels below.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is on errors that crossed the wire.
var (
	ErrInvalid      = &Error{Code: CodeInvalid, Message: "invalid request"}
	ErrTokenInvalid = &Error{Code: CodeTokenInvalid, Message: "enrollment token is not valid"}
	ErrTokenExpired = &Error{Code: CodeTokenExpired, Message: "enrollment token has expired"}
	ErrTokenUsedUp  = &Error{Code: CodeTokenUsedUp, Message: "enrollment token has no uses left"}
	ErrNameTaken    = &Error{Code: CodeNameTaken, Message: "device name is already taken"}
)
