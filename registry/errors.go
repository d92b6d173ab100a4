package registry

import "errors"

// Errors of enrollment, for callers to tell apart.
var (
	ErrTokenInvalid = errors.New("enrollment token is not valid")
	ErrTokenExpired = errors.New("enrollment token has expired")
	ErrTokenUsedUp  = errors.New("enrollment token has no uses left")
	ErrNameTaken    = errors.New("device name is already taken")
	ErrNotFound     = errors.New("device not found")
	ErrInvalidInput = errors.New("invalid enrollment request")
)
