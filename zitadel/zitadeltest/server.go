// Package zitadeltest runs a stand-in for Zitadel in a test process: a
// real OpenID provider (zitadel/oidc's op with its example storage,
// extended so machine users authenticate with the JWT-profile grant and
// their tokens introspect as active until the user is deactivated) and
// Zitadel's gRPC management API for machine users, both on one
// 127.0.0.1 port like Zitadel itself.
//
//	z := zitadeltest.New(t)
//	userID, keyJSON := z.AddMachineUser(t, "dev1") // or zitadel.CreateMachineUser with z.AdminToken
//	ts, _ := devicetoken.NewTokenSource(ctx, z.Issuer, keyJSON,
//		devicetoken.WithInsecure(), devicetoken.WithProjectID(z.ProjectID))
//	in, _ := zitadel.NewIntrospector(ctx, zitadel.IntrospectorConfig{
//		Issuer: z.Issuer, Insecure: true, KeyJSON: z.APIKeyJSON})
//	z.Deactivate(t, userID) // its tokens now introspect as inactive
package zitadeltest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/zitadel/oidc/v3/pkg/op"
	"github.com/zitadel/zitadel-go/v3/pkg/client/zitadel/management"
	"google.golang.org/grpc"
)

// Zitadel's endpoint paths.
const (
	TokenPath         = "/oauth/v2/token"
	IntrospectionPath = "/oauth/v2/introspect"
	KeysPath          = "/oauth/v2/keys"
	UserinfoPath      = "/oidc/v1/userinfo"
)

// Server is an in-process Zitadel stand-in. Create it with New; it stops
// at the end of the test.
type Server struct {
	// Issuer is the provider's URL, http://127.0.0.1:<port>.
	Issuer string
	// ProjectID is the project whose API application introspects device
	// tokens; request its audience scope to get introspectable tokens.
	ProjectID string
	// APIClientID and APIClientSecret are the API application's basic-auth
	// credentials; APIKeyJSON is its key file ("type":"application").
	APIClientID     string
	APIClientSecret string
	APIKeyJSON      []byte
	// AdminToken is a personal access token accepted by the management
	// API. AdminUserID and AdminKeyJSON are an admin machine user whose
	// JWT-profile tokens (with the Zitadel API audience) are accepted too.
	AdminToken   string
	AdminUserID  string
	AdminKeyJSON []byte

	store *machineStorage
	op    *op.Provider
	mgmt  *managementServer
	ids   atomic.Int64
}

// New starts a Server on 127.0.0.1 and stops it when t ends.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		ProjectID:       "300000000000000001",
		APIClientID:     "300000000000000002@vk-fleet",
		APIClientSecret: randomString(t, 32),
		AdminToken:      randomString(t, 40),
	}
	s.ids.Store(310000000000000000)
	s.store = newMachineStorage(s.ProjectID, s.APIClientID, s.APIClientSecret)

	// The API application's key, for JWT-profile client authentication.
	appKeyID := s.nextID()
	appPEM, appPub := newRSAKey(t)
	s.store.appKeys[appKeyID] = appPub
	s.APIKeyJSON = mustJSON(t, map[string]string{
		"type": "application", "keyId": appKeyID, "key": appPEM,
		"appId": s.nextID(), "clientId": s.APIClientID,
	})

	// The admin machine user.
	s.AdminUserID = s.nextID()
	if err := s.store.addUser(&machineUser{id: s.AdminUserID, username: "fleet-admin", active: true, keys: map[string]*rsa.PublicKey{}}); err != nil {
		t.Fatal(err)
	}
	s.AdminKeyJSON = s.newMachineKey(t, s.AdminUserID)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening: %v", err)
	}
	s.Issuer = "http://" + ln.Addr().String()

	var cryptoKey [32]byte
	if _, err := rand.Read(cryptoKey[:]); err != nil {
		t.Fatal(err)
	}
	s.op, err = op.NewProvider(&op.Config{
		CryptoKey:               cryptoKey,
		AuthMethodPost:          true,
		AuthMethodPrivateKeyJWT: true,
	}, s.store, op.StaticIssuer(s.Issuer),
		op.WithAllowInsecure(),
		op.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		op.WithCustomTokenEndpoint(op.NewEndpoint(TokenPath)),
		op.WithCustomIntrospectionEndpoint(op.NewEndpoint(IntrospectionPath)),
		op.WithCustomKeysEndpoint(op.NewEndpoint(KeysPath)),
		op.WithCustomUserinfoEndpoint(op.NewEndpoint(UserinfoPath)),
	)
	if err != nil {
		t.Fatalf("creating OpenID provider: %v", err)
	}

	gs := grpc.NewServer()
	s.mgmt = &managementServer{s: s}
	management.RegisterManagementServiceServer(gs, s.mgmt)

	// One port serves OAuth (HTTP/1.1) and gRPC (HTTP/2 without TLS).
	oauth := s.op.HttpHandler()
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			gs.ServeHTTP(w, r)
			return
		}
		oauth.ServeHTTP(w, r)
	}))
	hs.Listener.Close()
	hs.Listener = ln
	hs.Config.Protocols = new(http.Protocols)
	hs.Config.Protocols.SetHTTP1(true)
	hs.Config.Protocols.SetUnencryptedHTTP2(true)
	hs.Start()
	t.Cleanup(func() {
		hs.Close()
		gs.Stop()
	})
	return s
}

// AddMachineUser creates an active machine user with one JSON key, as an
// admin would in Zitadel's console, and returns its ID and key file.
func (s *Server) AddMachineUser(t testing.TB, username string) (userID string, keyJSON []byte) {
	t.Helper()
	userID = s.nextID()
	if err := s.store.addUser(&machineUser{id: userID, username: username, active: true, keys: map[string]*rsa.PublicKey{}}); err != nil {
		t.Fatalf("adding machine user %s: %v", username, err)
	}
	return userID, s.newMachineKey(t, userID)
}

// Deactivate deactivates a user: no new tokens, and its tokens introspect
// as inactive.
func (s *Server) Deactivate(t testing.TB, userID string) {
	t.Helper()
	if err := s.store.setActive(userID, false); err != nil {
		t.Fatalf("deactivating %s: %v", userID, err)
	}
}

// Reactivate undoes Deactivate.
func (s *Server) Reactivate(t testing.TB, userID string) {
	t.Helper()
	if err := s.store.setActive(userID, true); err != nil {
		t.Fatalf("reactivating %s: %v", userID, err)
	}
}

// User describes a machine user.
type User struct {
	ID, Username, Description, OrgID string
	Active                           bool
	Keys                             int
}

// User returns the machine user with that ID.
func (s *Server) User(id string) (User, bool) {
	u, ok := s.store.user(id)
	if !ok {
		return User{}, false
	}
	return User{ID: u.id, Username: u.username, Description: u.description, OrgID: u.org, Active: u.active, Keys: s.store.keyCount(id)}, true
}

// Introspections counts introspection requests that reached token lookup.
func (s *Server) Introspections() int64 { return s.store.introspections.Load() }

// TokensIssued counts access tokens issued.
func (s *Server) TokensIssued() int64 { return s.store.tokensIssued.Load() }

// Calls returns the management API calls made so far.
func (s *Server) Calls() []Call { return s.mgmt.calls() }

// FailNextAddKey makes the next AddMachineKey call fail.
func (s *Server) FailNextAddKey() { s.mgmt.failNextKey.Store(true) }

func (s *Server) nextID() string { return fmt.Sprint(s.ids.Add(1)) }

// newMachineKey registers a new key for userID and returns its key file.
func (s *Server) newMachineKey(t testing.TB, userID string) []byte {
	t.Helper()
	_, keyJSON, err := s.machineKey(userID)
	if err != nil {
		t.Fatalf("creating key for %s: %v", userID, err)
	}
	return keyJSON
}

func (s *Server) machineKey(userID string) (keyID string, keyJSON []byte, err error) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", nil, err
	}
	keyID = s.nextID()
	if err := s.store.addKey(userID, keyID, &priv.PublicKey); err != nil {
		return "", nil, err
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)})
	keyJSON, err = json.Marshal(map[string]string{
		"type": "serviceaccount", "keyId": keyID, "key": string(pemKey), "userId": userID,
	})
	return keyID, keyJSON, err
}

func newRSAKey(t testing.TB) (string, *rsa.PublicKey) {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)})), &priv.PublicKey
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func randomString(t testing.TB, n int) string {
	t.Helper()
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(rand.Text())
	}
	return b.String()[:n]
}
