package enrollcmd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/vk-fleet/vk-fleet/zitadel/keyfile"
)

// machineUserDescription describes the machine users enroll creates
// (zitadel.DefaultUserDescription).
const machineUserDescription = "vk-fleet device"

// The management API calls enroll makes (zitadel.management.v1).
const (
	mgmtService        = "/zitadel.management.v1.ManagementService/"
	mgmtAddMachineUser = mgmtService + "AddMachineUser"
	mgmtAddMachineKey  = mgmtService + "AddMachineKey"
	mgmtRemoveUser     = mgmtService + "RemoveUser"
)

// Field numbers and enum values of the messages, from Zitadel's
// management.proto (zitadel-go/v3 pkg/client/zitadel/management).
// AddMachineUserRequest.access_token_type (4) is left at its default,
// ACCESS_TOKEN_TYPE_BEARER: opaque tokens, which vk-fleet introspects.
const (
	addMachineUserReqUserName    = 1 // AddMachineUserRequest.user_name
	addMachineUserReqName        = 2 // AddMachineUserRequest.name
	addMachineUserReqDescription = 3 // AddMachineUserRequest.description
	addMachineUserRespUserID     = 1 // AddMachineUserResponse.user_id
	addMachineKeyReqUserID       = 1 // AddMachineKeyRequest.user_id
	addMachineKeyReqType         = 2 // AddMachineKeyRequest.type
	keyTypeJSON                  = 1 // zitadel.authn.v1.KeyType KEY_TYPE_JSON
	addMachineKeyRespDetails     = 2 // AddMachineKeyResponse.key_details
	removeUserReqID              = 1 // RemoveUserRequest.id
)

const (
	// zitadelOrgHeader scopes a call to an organisation.
	zitadelOrgHeader = "x-zitadel-orgid"
	// zitadelCallTimeout bounds each call.
	zitadelCallTimeout = 30 * time.Second
	// zitadelMaxMessage bounds an answer (a key file is a few KiB).
	zitadelMaxMessage = 1 << 20
)

// gRPC status codes that enroll explains.
const (
	grpcOK               = 0
	grpcNotFound         = 5
	grpcAlreadyExists    = 6
	grpcPermissionDenied = 7
	grpcUnauthenticated  = 16
)

// Errors of the Zitadel management calls (as the zitadel package's).
var (
	// ErrZitadelUserExists: a user with that name exists in the
	// organisation.
	ErrZitadelUserExists = errors.New("zitadel user already exists")
	// ErrZitadelAdminRefused: Zitadel refused the admin token or its
	// permissions.
	ErrZitadelAdminRefused = errors.New("zitadel refused the admin credential")
)

// zitadelAdmin says how to reach Zitadel's management API and as whom.
type zitadelAdmin struct {
	// Issuer is Zitadel's URL; its gRPC API is served on the same host
	// and port. Plain http (h2c) is for tests and local development.
	Issuer string
	// Token is an admin's access token (e.g. a personal access token),
	// with a role that may manage the organisation's users.
	Token string
	// OrgID is the organisation to create the user in; default the
	// admin's.
	OrgID string
	// Client is the HTTP client; nil means one for Issuer's scheme.
	Client *http.Client
}

// createMachineUser creates a Zitadel machine user named username with
// opaque bearer access tokens and a JSON key for it, and returns the user's
// ID and the key file, the device's credential. If the key cannot be
// created the user is removed again.
//
// It is the management API's AddMachineUser, AddMachineKey and, on
// failure, RemoveUser, spoken as gRPC over net/http's HTTP/2: the three
// calls do not justify zitadel-go's API client, which would add ~11 MB to
// device-agent. zitadel.CreateMachineUser does the same with that client.
func createMachineUser(ctx context.Context, z zitadelAdmin, username string) (userID string, keyJSON []byte, err error) {
	if username == "" {
		return "", nil, errors.New("machine user name is required")
	}
	if z.Token == "" {
		return "", nil, errors.New("a zitadel admin token is required")
	}
	base, err := z.origin()
	if err != nil {
		return "", nil, err
	}
	if z.Client == nil {
		z.Client = grpcClient(strings.HasPrefix(base, "http://"))
		defer z.Client.CloseIdleConnections()
	}

	var req []byte
	req = protowire.AppendTag(req, addMachineUserReqUserName, protowire.BytesType)
	req = protowire.AppendString(req, username)
	req = protowire.AppendTag(req, addMachineUserReqName, protowire.BytesType)
	req = protowire.AppendString(req, username)
	req = protowire.AppendTag(req, addMachineUserReqDescription, protowire.BytesType)
	req = protowire.AppendString(req, machineUserDescription)
	resp, err := z.call(ctx, base, mgmtAddMachineUser, req)
	if err != nil {
		return "", nil, fmt.Errorf("creating zitadel machine user %s: %w", username, err)
	}
	id, err := protoBytesField(resp, addMachineUserRespUserID)
	if err != nil || len(id) == 0 {
		return "", nil, fmt.Errorf("creating zitadel machine user %s: response has no user ID", username)
	}
	userID = string(id)

	req = protowire.AppendTag(nil, addMachineKeyReqUserID, protowire.BytesType)
	req = protowire.AppendString(req, userID)
	req = protowire.AppendTag(req, addMachineKeyReqType, protowire.VarintType)
	req = protowire.AppendVarint(req, keyTypeJSON)
	resp, err = z.call(ctx, base, mgmtAddMachineKey, req)
	if err == nil {
		keyJSON, err = protoBytesField(resp, addMachineKeyRespDetails)
		if err == nil {
			err = checkMachineKey(keyJSON, userID)
		}
	} else {
		err = fmt.Errorf("creating key for zitadel user %s: %w", userID, err)
	}
	if err != nil {
		return "", nil, errors.Join(err, z.removeAfterFailure(ctx, base, userID))
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
func (z zitadelAdmin) removeAfterFailure(ctx context.Context, base, userID string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	req := protowire.AppendTag(nil, removeUserReqID, protowire.BytesType)
	req = protowire.AppendString(req, userID)
	if _, err := z.call(ctx, base, mgmtRemoveUser, req); err != nil {
		return fmt.Errorf("removing half-created zitadel user %s: %w", userID, err)
	}
	return nil
}

// origin returns the scheme, host and port of the API, which zitadel-go
// also dials whatever path the issuer has.
func (z zitadelAdmin) origin() (string, error) {
	u, err := url.Parse(z.Issuer)
	if err != nil || u.Host == "" {
		return "", errors.New("zitadel issuer is not an absolute URL")
	}
	if u.User != nil {
		return "", fmt.Errorf("zitadel issuer %q must not carry credentials", u.Redacted())
	}
	port := u.Port()
	switch u.Scheme {
	case "https":
		if port == "" {
			port = "443"
		}
	case "http":
		if port == "" {
			port = "80"
		}
	default:
		return "", fmt.Errorf("zitadel issuer %q must use https", z.Issuer)
	}
	return u.Scheme + "://" + net.JoinHostPort(u.Hostname(), port), nil
}

// grpcClient returns an HTTP client that speaks HTTP/2 only: over TLS, or
// in clear text (h2c with prior knowledge, as gRPC does) for plain http.
func grpcClient(cleartext bool) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Protocols = new(http.Protocols)
	if cleartext {
		t.Protocols.SetUnencryptedHTTP2(true)
	} else {
		t.Protocols.SetHTTP2(true)
	}
	return &http.Client{Transport: t, Timeout: zitadelCallTimeout}
}

// call makes one unary gRPC call: msg is the encoded request message, the
// result the encoded response message.
func (z zitadelAdmin) call(ctx context.Context, base, method string, msg []byte) ([]byte, error) {
	body := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(body[1:], uint32(len(msg)))
	body = append(body, msg...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+method, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("zitadel %s: %w", method, err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	req.Header.Set("Authorization", "Bearer "+z.Token)
	if z.OrgID != "" {
		req.Header.Set(zitadelOrgHeader, z.OrgID)
	}
	resp, err := z.Client.Do(req)
	if err != nil {
		return nil, z.redact(fmt.Errorf("calling zitadel: %w", err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return nil, z.redact(fmt.Errorf("zitadel answered HTTP %s: %s", resp.Status, bytes.TrimSpace(b)))
	}
	// A "trailers-only" answer carries its status in the headers.
	if s := resp.Header.Get("Grpc-Status"); s != "" {
		return nil, z.status(s, resp.Header.Get("Grpc-Message"))
	}
	var out []byte
	var head [5]byte
	if _, err := io.ReadFull(resp.Body, head[:]); err == nil {
		n := binary.BigEndian.Uint32(head[1:])
		if head[0] != 0 {
			return nil, errors.New("zitadel answered with a compressed message")
		}
		if n > zitadelMaxMessage {
			return nil, fmt.Errorf("zitadel answered with a %d-byte message", n)
		}
		out = make([]byte, n)
		if _, err := io.ReadFull(resp.Body, out); err != nil {
			return nil, fmt.Errorf("reading zitadel's answer: %w", err)
		}
	} else if !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading zitadel's answer: %w", err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return nil, fmt.Errorf("reading zitadel's answer: %w", err)
	}
	if err := z.status(resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")); err != nil {
		return nil, err
	}
	return out, nil
}

// status turns a gRPC status into nil or an error; the message is the
// server's, without the admin token.
func (z zitadelAdmin) status(code, message string) error {
	c, err := strconv.Atoi(code)
	if err != nil {
		return fmt.Errorf("zitadel answered without a gRPC status (%q)", code)
	}
	if c == grpcOK {
		return nil
	}
	if m, err := url.PathUnescape(message); err == nil {
		message = m
	}
	err = z.redact(fmt.Errorf("zitadel answered gRPC code %d: %s", c, message))
	switch c {
	case grpcAlreadyExists:
		return fmt.Errorf("%w: %w", ErrZitadelUserExists, err)
	case grpcUnauthenticated, grpcPermissionDenied:
		return fmt.Errorf("%w: %w", ErrZitadelAdminRefused, err)
	case grpcNotFound:
		return fmt.Errorf("not found: %w", err)
	}
	return err
}

// redact keeps the admin token out of an error.
func (z zitadelAdmin) redact(err error) error {
	if z.Token == "" || !strings.Contains(err.Error(), z.Token) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), z.Token, "[REDACTED]"))
}

// protoBytesField returns the last value of the length-delimited field num
// of a protobuf message (nil if absent).
func protoBytesField(msg []byte, num protowire.Number) ([]byte, error) {
	var v []byte
	for len(msg) > 0 {
		n, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return nil, fmt.Errorf("decoding zitadel's answer: %w", protowire.ParseError(l))
		}
		msg = msg[l:]
		if n == num && typ == protowire.BytesType {
			b, l := protowire.ConsumeBytes(msg)
			if l < 0 {
				return nil, fmt.Errorf("decoding zitadel's answer: %w", protowire.ParseError(l))
			}
			v, msg = b, msg[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(n, typ, msg)
		if l < 0 {
			return nil, fmt.Errorf("decoding zitadel's answer: %w", protowire.ParseError(l))
		}
		msg = msg[l:]
	}
	return v, nil
}
