package zitadeltest

import (
	"context"
	"crypto/rsa"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zitadel/zitadel-go/v3/pkg/client/zitadel/authn"
	"github.com/zitadel/zitadel-go/v3/pkg/client/zitadel/management"
	"github.com/zitadel/zitadel-go/v3/pkg/client/zitadel/object"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Call is one management API call the server accepted.
type Call struct {
	// Method is the RPC name, e.g. "AddMachineUser".
	Method string
	// Caller is "pat" for AdminToken, else the admin machine user's ID.
	Caller string
	// OrgID is the x-zitadel-orgid header, if sent.
	OrgID string
	// UserID is the user the call created or acted on.
	UserID string
	// KeyExpiration is the requested expiry of an AddMachineKey call.
	KeyExpiration time.Time
}

// managementServer implements the part of
// zitadel.management.v1.ManagementService that vk-fleet uses; every other
// method answers Unimplemented.
type managementServer struct {
	management.UnimplementedManagementServiceServer
	s *Server

	failNextKey atomic.Bool

	mu  sync.Mutex
	log []Call
}

func (m *managementServer) calls() []Call {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Call(nil), m.log...)
}

func (m *managementServer) record(c Call) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log = append(m.log, c)
}

// authenticate checks the bearer credential the way Zitadel would: the
// admin PAT, or an unexpired access token of the admin machine user whose
// audience includes Zitadel's API.
func (m *managementServer) authenticate(ctx context.Context, method string) (Call, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	c := Call{Method: method}
	if v := md.Get("x-zitadel-orgid"); len(v) > 0 {
		c.OrgID = v[0]
	}
	auth := md.Get("authorization")
	if len(auth) != 1 {
		return c, status.Error(codes.Unauthenticated, "auth header missing")
	}
	token, ok := strings.CutPrefix(auth[0], "Bearer ")
	if !ok || token == "" {
		return c, status.Error(codes.Unauthenticated, "auth header malformed")
	}
	if token == m.s.AdminToken {
		c.Caller = "pat"
		return c, nil
	}
	plain, err := m.s.op.Crypto().Decrypt(token)
	if err != nil {
		return c, status.Error(codes.Unauthenticated, "token invalid")
	}
	tokenID, subject, _ := strings.Cut(plain, ":")
	t, ok := m.s.store.token(tokenID)
	switch {
	case !ok || t.subject != subject || !time.Now().Before(t.expires):
		return c, status.Error(codes.Unauthenticated, "token invalid")
	case subject != m.s.AdminUserID || !m.s.store.activeUser(subject):
		return c, status.Error(codes.PermissionDenied, "no permission")
	}
	for _, aud := range t.audience {
		if aud == zitadelAPIProject {
			c.Caller = subject
			return c, nil
		}
	}
	return c, status.Error(codes.Unauthenticated, "token not valid for the zitadel API")
}

func details() *object.ObjectDetails {
	return &object.ObjectDetails{Sequence: 1, ChangeDate: timestamppb.Now(), ResourceOwner: "300000000000000000"}
}

func (m *managementServer) AddMachineUser(ctx context.Context, req *management.AddMachineUserRequest) (*management.AddMachineUserResponse, error) {
	c, err := m.authenticate(ctx, "AddMachineUser")
	if err != nil {
		return nil, err
	}
	if req.GetUserName() == "" || req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "user_name and name are required")
	}
	id := m.s.nextID()
	u := &machineUser{id: id, username: req.GetUserName(), description: req.GetDescription(), org: c.OrgID, active: true, keys: map[string]*rsa.PublicKey{}}
	if err := m.s.store.addUser(u); errors.Is(err, errAlreadyExists) {
		return nil, status.Error(codes.AlreadyExists, "User already exists (COMMAND-k2unb)")
	} else if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	c.UserID = id
	m.record(c)
	return &management.AddMachineUserResponse{UserId: id, Details: details()}, nil
}

func (m *managementServer) AddMachineKey(ctx context.Context, req *management.AddMachineKeyRequest) (*management.AddMachineKeyResponse, error) {
	c, err := m.authenticate(ctx, "AddMachineKey")
	if err != nil {
		return nil, err
	}
	if req.GetType() != authn.KeyType_KEY_TYPE_JSON {
		return nil, status.Error(codes.InvalidArgument, "only JSON keys are supported")
	}
	if _, ok := m.s.store.user(req.GetUserId()); !ok {
		return nil, status.Error(codes.NotFound, "User not found (COMMAND-p0k2s)")
	}
	if m.failNextKey.CompareAndSwap(true, false) {
		return nil, status.Error(codes.Internal, "key generation failed (injected)")
	}
	keyID, keyJSON, err := m.s.machineKey(req.GetUserId())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	c.UserID = req.GetUserId()
	if req.GetExpirationDate() != nil {
		c.KeyExpiration = req.GetExpirationDate().AsTime()
	}
	m.record(c)
	return &management.AddMachineKeyResponse{KeyId: keyID, KeyDetails: keyJSON, Details: details()}, nil
}

func (m *managementServer) DeactivateUser(ctx context.Context, req *management.DeactivateUserRequest) (*management.DeactivateUserResponse, error) {
	c, err := m.authenticate(ctx, "DeactivateUser")
	if err != nil {
		return nil, err
	}
	u, ok := m.s.store.user(req.GetId())
	if !ok {
		return nil, status.Error(codes.NotFound, "User not found (COMMAND-m8vds)")
	}
	if !u.active {
		return nil, status.Error(codes.FailedPrecondition, "User already inactive (COMMAND-5M0sf)")
	}
	if err := m.s.store.setActive(req.GetId(), false); err != nil {
		return nil, status.Error(codes.NotFound, err.Error())
	}
	c.UserID = req.GetId()
	m.record(c)
	return &management.DeactivateUserResponse{Details: details()}, nil
}

func (m *managementServer) RemoveUser(ctx context.Context, req *management.RemoveUserRequest) (*management.RemoveUserResponse, error) {
	c, err := m.authenticate(ctx, "RemoveUser")
	if err != nil {
		return nil, err
	}
	if err := m.s.store.remove(req.GetId()); err != nil {
		return nil, status.Error(codes.NotFound, "User not found (COMMAND-m9od3)")
	}
	c.UserID = req.GetId()
	m.record(c)
	return &management.RemoveUserResponse{Details: details()}, nil
}
