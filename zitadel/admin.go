package zitadel

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/zitadel-go/v3/pkg/client"
	"github.com/zitadel/zitadel-go/v3/pkg/client/zitadel/authn"
	"github.com/zitadel/zitadel-go/v3/pkg/client/zitadel/management"
	"github.com/zitadel/zitadel-go/v3/pkg/client/zitadel/user"
	zitadelapi "github.com/zitadel/zitadel-go/v3/pkg/zitadel"
	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/vk-fleet/vk-fleet/zitadel/internal/issuer"
	"github.com/vk-fleet/vk-fleet/zitadel/internal/redact"
	"github.com/vk-fleet/vk-fleet/zitadel/keyfile"
)

// DefaultUserDescription describes the machine users vk-fleet creates.
const DefaultUserDescription = "vk-fleet device"

// AdminConfig says how to reach Zitadel's management API and as whom.
// Give exactly one credential: Token or KeyJSON. The admin needs a role
// that may manage users of the organisation (e.g. ORG_USER_MANAGER).
type AdminConfig struct {
	// Issuer is Zitadel's URL, e.g. https://zitadel.example.com; its gRPC
	// API is served on the same host and port.
	Issuer string
	// Insecure allows a plain-http issuer (gRPC without TLS). Tests only.
	Insecure bool
	// Token is a personal access token (or another access token) of the
	// admin.
	Token string
	// KeyJSON is the key file of an admin machine user; tokens are
	// obtained with the JWT-profile grant.
	KeyJSON []byte
	// OrgID is the organisation to create users in; default the admin's.
	OrgID string
	// KeyLifetime bounds the validity of created keys; zero means no
	// expiry.
	KeyLifetime time.Duration
	// Description of created users; default DefaultUserDescription.
	Description string
	// DialOptions are added to the gRPC connection's options.
	DialOptions []grpc.DialOption
}

// secrets lists what must never appear in an error.
func (cfg AdminConfig) secrets() []string {
	s := []string{cfg.Token}
	if k, err := keyfile.Parse(cfg.KeyJSON); err == nil {
		s = append(s, k.Key)
	}
	return s
}

// connect opens a management API client.
func (cfg AdminConfig) connect(ctx context.Context) (*client.Client, error) {
	_, u, err := issuer.Parse(cfg.Issuer, cfg.Insecure)
	if err != nil {
		return nil, err
	}
	var opts []zitadelapi.Option
	port := u.Port()
	if u.Scheme == "http" {
		if port == "" {
			port = "80"
		}
		opts = append(opts, zitadelapi.WithInsecure(port))
	} else if port != "" {
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("issuer port %q: %w", port, err)
		}
		opts = append(opts, zitadelapi.WithPort(uint16(p)))
	}
	var auth client.TokenSourceInitializer
	switch {
	case cfg.Token != "" && len(cfg.KeyJSON) > 0:
		return nil, errors.New("give an admin token or an admin key file, not both")
	case cfg.Token != "":
		auth = client.PAT(cfg.Token)
	case len(cfg.KeyJSON) > 0:
		k, err := keyfile.Parse(cfg.KeyJSON)
		if err != nil {
			return nil, err
		}
		if k.Type != keyfile.TypeServiceAccount {
			return nil, fmt.Errorf("%w: the admin key must be a machine-user key, got an %s key", keyfile.ErrInvalid, k.Type)
		}
		jwtProfile := client.AuthenticationJWTProfile(&client.KeyFile{
			Type: client.ServiceAccountKey, KeyID: k.KeyID, Key: []byte(k.Key), UserID: k.UserID,
		}, oidc.ScopeOpenID, client.ScopeZitadelAPI())
		auth = func(ctx context.Context, iss string) (oauth2.TokenSource, error) {
			ts, err := jwtProfile(ctx, iss)
			if err != nil {
				return nil, fmt.Errorf("setting up admin authentication: %w", redact.Error(err, k.Key))
			}
			// zitadel-go asks the source on every call; reuse tokens.
			return oauth2.ReuseTokenSource(nil, ts), nil
		}
	default:
		return nil, errors.New("zitadel admin credentials are required: a token or a machine-user key file")
	}
	c, err := client.New(ctx, zitadelapi.New(u.Hostname(), opts...), client.WithAuth(auth), client.WithGRPCDialOptions(cfg.DialOptions...))
	if err != nil {
		return nil, fmt.Errorf("connecting to zitadel: %w", redact.Error(err, cfg.secrets()...))
	}
	return c, nil
}

// orgContext scopes calls to cfg.OrgID, if set.
func (cfg AdminConfig) orgContext(ctx context.Context) context.Context {
	if cfg.OrgID == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, client.OrgHeader, cfg.OrgID)
}

// apiError maps a gRPC error to this package's errors, keeping the
// server's message but never a credential.
func (cfg AdminConfig) apiError(what string, err error) error {
	safe := redact.Error(err, cfg.secrets()...)
	switch status.Code(err) {
	case codes.AlreadyExists:
		return fmt.Errorf("%s: %w: %w", what, ErrAlreadyExists, safe)
	case codes.NotFound:
		return fmt.Errorf("%s: %w: %w", what, ErrNotFound, safe)
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Errorf("%s: %w: %w", what, ErrAdminRefused, safe)
	}
	return fmt.Errorf("%s: %w", what, safe)
}

// CreateMachineUser creates a Zitadel machine user named username (with
// opaque bearer access tokens) and a JSON key for it, and returns the
// user's ID and the key file content
// ({"type":"serviceaccount","keyId",...,"key",...,"userId",...}), which
// is the device's credential: hand it to devicetoken.NewTokenSource on the
// device. If the key cannot be created the user is removed again.
//
// It uses the management API (zitadel.management.v1.ManagementService:
// AddMachineUser, AddMachineKey, and RemoveUser on failure).
func CreateMachineUser(ctx context.Context, cfg AdminConfig, username string) (userID string, keyJSON []byte, err error) {
	if username == "" {
		return "", nil, errors.New("machine user name is required")
	}
	c, err := cfg.connect(ctx)
	if err != nil {
		return "", nil, err
	}
	defer c.Close()
	mgmt := c.ManagementService()
	ctx = cfg.orgContext(ctx)

	desc := cfg.Description
	if desc == "" {
		desc = DefaultUserDescription
	}
	created, err := mgmt.AddMachineUser(ctx, &management.AddMachineUserRequest{
		UserName:        username,
		Name:            username,
		Description:     desc,
		AccessTokenType: user.AccessTokenType_ACCESS_TOKEN_TYPE_BEARER,
	})
	if err != nil {
		return "", nil, cfg.apiError("creating zitadel machine user "+username, err)
	}
	userID = created.GetUserId()
	if userID == "" {
		return "", nil, fmt.Errorf("creating zitadel machine user %s: response has no user ID", username)
	}

	keyReq := &management.AddMachineKeyRequest{UserId: userID, Type: authn.KeyType_KEY_TYPE_JSON}
	if cfg.KeyLifetime > 0 {
		keyReq.ExpirationDate = timestamppb.New(time.Now().Add(cfg.KeyLifetime))
	}
	key, err := mgmt.AddMachineKey(ctx, keyReq)
	if err == nil {
		keyJSON = key.GetKeyDetails()
		err = checkMachineKey(keyJSON, userID)
	} else {
		err = cfg.apiError("creating key for zitadel user "+userID, err)
	}
	if err != nil {
		return "", nil, errors.Join(err, cfg.removeAfterFailure(ctx, mgmt, userID))
	}
	return userID, keyJSON, nil
}

func checkMachineKey(keyJSON []byte, userID string) error {
	k, err := keyfile.Parse(keyJSON)
	if err != nil {
		return fmt.Errorf("reading key of zitadel user %s: %w", userID, err)
	}
	if k.Type != keyfile.TypeServiceAccount || k.UserID != userID {
		return fmt.Errorf("reading key of zitadel user %s: %w: key is for %s", userID, keyfile.ErrInvalid, k.Subject())
	}
	return nil
}

// removeAfterFailure deletes a half-created user, even if ctx has ended.
func (cfg AdminConfig) removeAfterFailure(ctx context.Context, mgmt management.ManagementServiceClient, userID string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := mgmt.RemoveUser(ctx, &management.RemoveUserRequest{Id: userID}); err != nil {
		return cfg.apiError("removing half-created zitadel user "+userID, err)
	}
	return nil
}

// DeactivateUser deactivates a machine user: Zitadel issues it no new
// tokens and its existing tokens stop introspecting as active. Reactivating
// it in Zitadel restores access.
func DeactivateUser(ctx context.Context, cfg AdminConfig, userID string) error {
	if userID == "" {
		return errors.New("zitadel user ID is required")
	}
	c, err := cfg.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.ManagementService().DeactivateUser(cfg.orgContext(ctx), &management.DeactivateUserRequest{Id: userID}); err != nil {
		return cfg.apiError("deactivating zitadel user "+userID, err)
	}
	return nil
}

// RemoveUser deletes a machine user and its keys.
func RemoveUser(ctx context.Context, cfg AdminConfig, userID string) error {
	if userID == "" {
		return errors.New("zitadel user ID is required")
	}
	c, err := cfg.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.ManagementService().RemoveUser(cfg.orgContext(ctx), &management.RemoveUserRequest{Id: userID}); err != nil {
		return cfg.apiError("removing zitadel user "+userID, err)
	}
	return nil
}
