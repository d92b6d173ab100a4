package zitadel

import "errors"

// Errors of this package, for callers to tell apart.
var (
	// ErrTokenInactive: Zitadel says the token is not active (expired,
	// revoked, its user deactivated or deleted, or not meant for this API).
	ErrTokenInactive = errors.New("token is not active")
	// ErrTokenMalformed: the token was refused without asking Zitadel.
	ErrTokenMalformed = errors.New("token is malformed")
	// ErrAudience: the token is active but not issued for the configured
	// audience.
	ErrAudience = errors.New("token is not issued for this audience")
	// ErrAlreadyExists: a user with that name exists in the organisation.
	ErrAlreadyExists = errors.New("zitadel user already exists")
	// ErrNotFound: no such user.
	ErrNotFound = errors.New("zitadel user not found")
	// ErrAdminRefused: Zitadel refused the admin credential or its
	// permissions.
	ErrAdminRefused = errors.New("zitadel refused the admin credential")
)
