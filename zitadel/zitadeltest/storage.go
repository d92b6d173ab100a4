package zitadeltest

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// zitadelAPIProject is the project ID Zitadel's own API is addressed by in
// the audience scope (urn:zitadel:iam:org:project:id:zitadel:aud).
const zitadelAPIProject = "zitadel"

const (
	projectScopePrefix = "urn:zitadel:iam:org:project:id:"
	projectScopeSuffix = ":aud"
)

// machineUser is a Zitadel machine user as far as the provider cares.
type machineUser struct {
	id, username, description, org string
	active                         bool
	keys                           map[string]*rsa.PublicKey // keyID → public key
}

// issued records an access token the provider handed out.
type issued struct {
	subject  string
	audience []string
	expires  time.Time
}

// machineStorage is zitadel/oidc's example storage taught what Zitadel
// does for machine users: they authenticate with the JWT-profile grant
// using their keys, get tokens whose audience is the projects they asked
// for (plus the project's API application), and their tokens introspect
// as active only while the user exists and is active. The embedded example
// storage does the rest (opaque tokens, basic auth of the API app).
type machineStorage struct {
	*storage.Storage

	projectID   string
	apiClientID string

	mu      sync.Mutex
	users   map[string]*machineUser   // by ID
	appKeys map[string]*rsa.PublicKey // API application keyID → key
	tokens  map[string]issued         // tokenID → token

	introspections atomic.Int64
	tokensIssued   atomic.Int64
}

var _ op.Storage = (*machineStorage)(nil)

func newMachineStorage(projectID, apiClientID, apiSecret string) *machineStorage {
	m := &machineStorage{
		projectID:   projectID,
		apiClientID: apiClientID,
		users:       map[string]*machineUser{},
		appKeys:     map[string]*rsa.PublicKey{},
		tokens:      map[string]issued{},
	}
	clients := map[string]*storage.Client{
		apiClientID: storage.WebClient(apiClientID, apiSecret, "http://127.0.0.1/unused"),
	}
	m.Storage = storage.NewStorageWithClients(userStore{m}, clients)
	return m
}

func (m *machineStorage) addUser(u *machineUser) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, other := range m.users {
		if other.username == u.username && other.org == u.org {
			return errAlreadyExists
		}
	}
	m.users[u.id] = u
	return nil
}

var (
	errAlreadyExists = errors.New("user already exists")
	errNotFound      = errors.New("user not found")
)

// user returns a copy of the user's state.
func (m *machineStorage) user(id string) (machineUser, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.users[id]
	if !ok {
		return machineUser{}, false
	}
	c := *u
	c.keys = nil
	return c, true
}

func (m *machineStorage) keyCount(id string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if u, ok := m.users[id]; ok {
		return len(u.keys)
	}
	return 0
}

func (m *machineStorage) addKey(userID, keyID string, pub *rsa.PublicKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.users[userID]
	if !ok {
		return errNotFound
	}
	u.keys[keyID] = pub
	return nil
}

func (m *machineStorage) setActive(userID string, active bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.users[userID]
	if !ok {
		return errNotFound
	}
	u.active = active
	return nil
}

func (m *machineStorage) remove(userID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.users[userID]; !ok {
		return errNotFound
	}
	delete(m.users, userID)
	return nil
}

// activeUser reports whether id is an existing, active machine user.
func (m *machineStorage) activeUser(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.users[id]
	return ok && u.active
}

// token looks up an issued token by ID.
func (m *machineStorage) token(id string) (issued, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tokens[id]
	return t, ok
}

// GetKeyByIDAndClientID serves machine-user keys (JWT-profile grant) and
// the API application's keys (JWT client assertion at introspection).
func (m *machineStorage) GetKeyByIDAndClientID(ctx context.Context, keyID, clientID string) (*jose.JSONWebKey, error) {
	m.mu.Lock()
	var pub *rsa.PublicKey
	if clientID == m.apiClientID {
		pub = m.appKeys[keyID]
	} else if u, ok := m.users[clientID]; ok {
		if !u.active {
			m.mu.Unlock()
			return nil, fmt.Errorf("user %s is deactivated", clientID)
		}
		pub = u.keys[keyID]
	}
	m.mu.Unlock()
	if pub == nil {
		return m.Storage.GetKeyByIDAndClientID(ctx, keyID, clientID)
	}
	return &jose.JSONWebKey{KeyID: keyID, Use: "sig", Key: pub}, nil
}

// ValidateJWTProfileScopes refuses users that do not exist or are
// deactivated and keeps the scopes Zitadel would honour.
func (m *machineStorage) ValidateJWTProfileScopes(ctx context.Context, userID string, scopes []string) ([]string, error) {
	if !m.activeUser(userID) {
		return nil, oidc.ErrInvalidGrant().WithDescription("user is not active")
	}
	var allowed []string
	for _, s := range scopes {
		switch {
		case s == oidc.ScopeOpenID || s == oidc.ScopeProfile:
			allowed = append(allowed, s)
		case strings.HasPrefix(s, projectScopePrefix) && strings.HasSuffix(s, projectScopeSuffix):
			if p := projectOf(s); p == m.projectID || p == zitadelAPIProject {
				allowed = append(allowed, s)
			}
		}
	}
	return allowed, nil
}

func projectOf(scope string) string {
	return strings.TrimSuffix(strings.TrimPrefix(scope, projectScopePrefix), projectScopeSuffix)
}

// CreateAccessToken sets a JWT-profile token's audience the way Zitadel
// does (the requested projects, and the API application of ours), then
// lets the example storage store it.
func (m *machineStorage) CreateAccessToken(ctx context.Context, req op.TokenRequest) (string, time.Time, error) {
	if jr, ok := req.(*oidc.JWTTokenRequest); ok {
		var aud []string
		for _, s := range jr.Scopes {
			if strings.HasPrefix(s, projectScopePrefix) {
				p := projectOf(s)
				aud = append(aud, p)
				if p == m.projectID {
					aud = append(aud, m.apiClientID)
				}
			}
		}
		jr.Audience = aud
	}
	id, exp, err := m.Storage.CreateAccessToken(ctx, req)
	if err != nil {
		return "", time.Time{}, err
	}
	m.mu.Lock()
	m.tokens[id] = issued{subject: req.GetSubject(), audience: slices.Clone(req.GetAudience()), expires: exp}
	m.mu.Unlock()
	m.tokensIssued.Add(1)
	return id, exp, nil
}

// SetIntrospectionFromToken answers inactive for tokens of deactivated or
// removed users, and adds the audience to active answers.
func (m *machineStorage) SetIntrospectionFromToken(ctx context.Context, resp *oidc.IntrospectionResponse, tokenID, subject, clientID string) error {
	m.introspections.Add(1)
	t, ok := m.token(tokenID)
	if !ok || t.subject != subject {
		return errors.New("token unknown")
	}
	if !m.activeUser(subject) {
		return errors.New("user is not active")
	}
	if err := m.Storage.SetIntrospectionFromToken(ctx, resp, tokenID, subject, clientID); err != nil {
		return err
	}
	resp.Audience = t.audience
	resp.TokenType = oidc.BearerToken
	return nil
}

// userStore lets the example storage find machine users (for userinfo
// and introspection answers).
type userStore struct{ m *machineStorage }

func (s userStore) GetUserByID(id string) *storage.User {
	u, ok := s.m.user(id)
	if !ok {
		return nil
	}
	return &storage.User{ID: u.id, Username: u.username, FirstName: u.username}
}

func (s userStore) GetUserByUsername(name string) *storage.User {
	s.m.mu.Lock()
	var id string
	for _, u := range s.m.users {
		if u.username == name {
			id = u.id
		}
	}
	s.m.mu.Unlock()
	if id == "" {
		return nil
	}
	return s.GetUserByID(id)
}

func (userStore) ExampleClientID() string { return storage.ServiceUserID }
