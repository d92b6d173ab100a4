// Package redact keeps secrets (access tokens, assertions, keys) out of
// errors that come back from OAuth endpoints.
//
// Libraries sometimes quote a whole response body in an error; a token
// endpoint's body is a token. Error rewrites such errors so only their
// class and server-chosen error codes remain.
package redact

import (
	"errors"
	"regexp"
	"strings"

	"github.com/zitadel/oidc/v3/pkg/oidc"
)

// Placeholder replaces secrets found in error text.
const Placeholder = "[REDACTED]"

// maxServerMessage bounds how much of an error response body is kept.
const maxServerMessage = 200

// jwtShaped matches compact JWS and JWE serialisations (signed assertions,
// JWT access tokens), which are credentials wherever they appear. Their
// header is base64url of `{"`, so they start with "eyJ".
var jwtShaped = regexp.MustCompile(`eyJ[A-Za-z0-9_-]*(\.[A-Za-z0-9_-]*){2,4}`)

// Error returns err made safe to log: an OAuth error keeps its error code
// and description, a non-200 response keeps its status and a bounded part
// of the server's message, a malformed response is reported as such without
// its body, and every occurrence of any of secrets, and anything shaped
// like a JWT, is replaced by Placeholder. errors.Is still works on the result; errors.As does not
// reach the original error (whose text may hold a secret).
func Error(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	return &redacted{msg: String(describe(err), secrets...), cause: err}
}

// String replaces each of secrets, and anything shaped like a JWT, in s.
func String(s string, secrets ...string) string {
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, Placeholder)
		}
	}
	return jwtShaped.ReplaceAllString(s, Placeholder)
}

func describe(err error) string {
	var oerr *oidc.Error
	if errors.As(err, &oerr) {
		msg := "oauth error " + string(oerr.ErrorType)
		if oerr.Description != "" {
			msg += ": " + bounded(oerr.Description)
		}
		return msg
	}
	text := err.Error()
	switch {
	case strings.Contains(text, "http status not ok:"):
		// "http status not ok: <status> <body>": an error response.
		_, rest, _ := strings.Cut(text, "http status not ok:")
		return "unexpected http status:" + bounded(rest)
	case strings.Contains(text, "unmarshal"):
		// The body follows the JSON error; drop it.
		return "malformed response from the identity provider"
	}
	return text
}

func bounded(s string) string {
	if len(s) > maxServerMessage {
		return s[:maxServerMessage] + "…"
	}
	return s
}

type redacted struct {
	msg   string
	cause error
}

func (r *redacted) Error() string { return r.msg }

// Is lets errors.Is see the original chain (context.DeadlineExceeded,
// sentinels) without exposing the original text through Unwrap.
func (r *redacted) Is(target error) bool { return errors.Is(r.cause, target) }
