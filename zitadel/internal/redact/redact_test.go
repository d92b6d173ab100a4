package redact

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/zitadel/oidc/v3/pkg/oidc"
)

func TestError(t *testing.T) {
	const secret = "s3cr3t-token-value"
	const jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
	for _, tc := range []struct {
		name string
		in   error
		want string
	}{
		{"oauth error", fmt.Errorf("x: %w", oidc.ErrInvalidGrant().WithDescription("user inactive").WithParent(errors.New("parent "+secret))),
			"oauth error invalid_grant: user inactive"},
		{"error status", errors.New("http status not ok: 500 Internal Server Error oops"),
			"unexpected http status: 500 Internal Server Error oops"},
		{"malformed body", fmt.Errorf(`failed to unmarshal response: unexpected end of JSON input {"access_token":"%s"`, secret),
			"malformed response from the identity provider"},
		{"secret in text", fmt.Errorf("Post url: sent token=%s", secret), "Post url: sent token=" + Placeholder},
		{"jwt in text", fmt.Errorf("sent client_assertion=%s&x=1", jwt), "sent client_assertion=" + Placeholder + "&x=1"},
		{"host names survive", errors.New(`Post "https://zitadel.example.com/oauth/v2/token": EOF`),
			`Post "https://zitadel.example.com/oauth/v2/token": EOF`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Error(tc.in, secret).Error()
			if got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
			if strings.Contains(got, secret) {
				t.Errorf("secret survived: %q", got)
			}
		})
	}
	long := errors.New("http status not ok: 400 " + strings.Repeat("x", 1000))
	if got := Error(long).Error(); len(got) > maxServerMessage+64 {
		t.Errorf("server message not bounded: %d bytes", len(got))
	}
	if Error(nil) != nil {
		t.Error("Error(nil) != nil")
	}
	wrapped := fmt.Errorf("calling: %w", context.DeadlineExceeded)
	if !errors.Is(Error(wrapped, secret), context.DeadlineExceeded) {
		t.Error("errors.Is lost the cause")
	}
}
