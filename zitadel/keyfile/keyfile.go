// Package keyfile reads the JSON key files Zitadel issues for machine users
// ("type":"serviceaccount") and API applications ("type":"application").
//
// A Key never prints its private key: String, GoString and LogValue redact
// it, so a Key can be logged or wrapped in an error safely.
package keyfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
)

// Key types as Zitadel writes them in the "type" field.
const (
	TypeServiceAccount = "serviceaccount"
	TypeApplication    = "application"
)

// Key is a Zitadel key file.
type Key struct {
	// Type is TypeServiceAccount or TypeApplication.
	Type string `json:"type"`
	// KeyID is the key's ID, sent as "kid" of every signed assertion.
	KeyID string `json:"keyId"`
	// Key is the PEM-encoded RSA private key.
	Key string `json:"key"`
	// UserID is set on machine-user keys.
	UserID string `json:"userId,omitempty"`
	// ClientID and AppID are set on application keys.
	ClientID string `json:"clientId,omitempty"`
	AppID    string `json:"appId,omitempty"`
}

// ErrInvalid is returned for data that is not a usable Zitadel key file.
var ErrInvalid = errors.New("invalid zitadel key file")

// Parse decodes and checks a key file. Its errors never contain key
// material.
func Parse(data []byte) (*Key, error) {
	var k Key
	if err := json.Unmarshal(data, &k); err != nil {
		// json errors name offsets and types, not values; still, keep
		// only the class of problem.
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return nil, fmt.Errorf("%w: malformed JSON at offset %d", ErrInvalid, syn.Offset)
		}
		return nil, fmt.Errorf("%w: unexpected JSON structure", ErrInvalid)
	}
	if k.KeyID == "" || k.Key == "" {
		return nil, fmt.Errorf("%w: keyId and key are required", ErrInvalid)
	}
	switch k.Type {
	case TypeServiceAccount:
		if k.UserID == "" {
			return nil, fmt.Errorf("%w: machine-user key without userId", ErrInvalid)
		}
	case TypeApplication:
		if k.ClientID == "" {
			return nil, fmt.Errorf("%w: application key without clientId", ErrInvalid)
		}
	default:
		return nil, fmt.Errorf("%w: unknown type %q", ErrInvalid, k.Type)
	}
	return &k, nil
}

// Subject is the identity the key signs as: the user ID of a machine-user
// key, the client ID of an application key.
func (k Key) Subject() string {
	if k.Type == TypeApplication {
		return k.ClientID
	}
	return k.UserID
}

// String describes the key without its private part.
func (k Key) String() string {
	return fmt.Sprintf("zitadel %s key %s of %s", k.Type, k.KeyID, k.Subject())
}

// GoString is String, so %#v does not print the private key either.
func (k Key) GoString() string { return k.String() }

// LogValue implements slog.LogValuer without the private key.
func (k Key) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("type", k.Type),
		slog.String("keyId", k.KeyID),
		slog.String("subject", k.Subject()),
	)
}
