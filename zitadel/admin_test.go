package zitadel_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vk-fleet/vk-fleet/zitadel"
	"github.com/vk-fleet/vk-fleet/zitadel/keyfile"
	"github.com/vk-fleet/vk-fleet/zitadel/zitadeltest"
)

// adminConfig is an AdminConfig for z, authenticated with its PAT.
func adminConfig(z *zitadeltest.Server) zitadel.AdminConfig {
	return zitadel.AdminConfig{Issuer: z.Issuer, Insecure: true, Token: z.AdminToken}
}

func TestCreateMachineUserEnrollsAWorkingIdentity(t *testing.T) {
	z := zitadeltest.New(t)
	cfg := adminConfig(z)
	cfg.OrgID = "300000000000000042"
	cfg.KeyLifetime = 24 * time.Hour

	userID, keyJSON, err := zitadel.CreateMachineUser(testContext(t), cfg, "dev1")
	if err != nil {
		t.Fatalf("CreateMachineUser: %v", err)
	}
	u, ok := z.User(userID)
	if !ok {
		t.Fatalf("user %s was not created", userID)
	}
	if u.Username != "dev1" || u.Description != zitadel.DefaultUserDescription || u.OrgID != cfg.OrgID || !u.Active || u.Keys != 1 {
		t.Fatalf("created user = %+v", u)
	}
	key, err := keyfile.Parse(keyJSON)
	if err != nil {
		t.Fatalf("returned key: %v", err)
	}
	if key.Type != keyfile.TypeServiceAccount || key.UserID != userID {
		t.Fatalf("returned key = %v, want a machine-user key of %s", key, userID)
	}

	calls := z.Calls()
	if len(calls) != 2 || calls[0].Method != "AddMachineUser" || calls[1].Method != "AddMachineKey" {
		t.Fatalf("management calls = %+v, want AddMachineUser then AddMachineKey", calls)
	}
	for _, c := range calls {
		if c.Caller != "pat" || c.OrgID != cfg.OrgID {
			t.Errorf("%s: caller %q org %q; want the admin PAT in org %s", c.Method, c.Caller, c.OrgID, cfg.OrgID)
		}
	}
	if exp := calls[1].KeyExpiration; exp.Before(time.Now().Add(23*time.Hour)) || exp.After(time.Now().Add(25*time.Hour)) {
		t.Errorf("key expiration = %v, want about 24h from now", exp)
	}

	// The key works end to end: device token, then introspection.
	tok := deviceToken(t, z, keyJSON)
	in := newIntrospector(t, z, func(c *zitadel.IntrospectorConfig) { c.CacheTTL = -1 })
	if sub, err := in.Introspect(testContext(t), tok); err != nil || sub != userID {
		t.Fatalf("Introspect = %q, %v; want %q", sub, err, userID)
	}

	// Revocation through the API.
	if err := zitadel.DeactivateUser(testContext(t), cfg, userID); err != nil {
		t.Fatalf("DeactivateUser: %v", err)
	}
	if _, err := in.Introspect(testContext(t), tok); !errors.Is(err, zitadel.ErrTokenInactive) {
		t.Fatalf("Introspect after DeactivateUser: err = %v, want ErrTokenInactive", err)
	}
	if err := zitadel.RemoveUser(testContext(t), cfg, userID); err != nil {
		t.Fatalf("RemoveUser: %v", err)
	}
	if _, ok := z.User(userID); ok {
		t.Fatal("user still exists after RemoveUser")
	}
	if err := zitadel.DeactivateUser(testContext(t), cfg, userID); !errors.Is(err, zitadel.ErrNotFound) {
		t.Fatalf("DeactivateUser of a removed user: err = %v, want ErrNotFound", err)
	}
}

func TestCreateMachineUserWithAdminKey(t *testing.T) {
	z := zitadeltest.New(t)
	cfg := zitadel.AdminConfig{Issuer: z.Issuer, Insecure: true, KeyJSON: z.AdminKeyJSON}
	userID, _, err := zitadel.CreateMachineUser(testContext(t), cfg, "dev1")
	if err != nil {
		t.Fatalf("CreateMachineUser: %v", err)
	}
	for _, c := range z.Calls() {
		if c.Caller != z.AdminUserID {
			t.Errorf("%s called by %q, want the admin machine user %s", c.Method, c.Caller, z.AdminUserID)
		}
	}
	if _, ok := z.User(userID); !ok {
		t.Fatal("user not created")
	}
	// One JWT-profile exchange serves both calls.
	if n := z.TokensIssued(); n != 1 {
		t.Errorf("admin tokens issued = %d, want 1 (reused)", n)
	}
}

func TestCreateMachineUserRefusals(t *testing.T) {
	z := zitadeltest.New(t)
	const wrongToken = "not-the-admin-pat-0815"

	t.Run("wrong credential", func(t *testing.T) {
		cfg := adminConfig(z)
		cfg.Token = wrongToken
		_, _, err := zitadel.CreateMachineUser(testContext(t), cfg, "dev1")
		if !errors.Is(err, zitadel.ErrAdminRefused) {
			t.Fatalf("err = %v, want ErrAdminRefused", err)
		}
		assertNoSecret(t, "error", err.Error(), wrongToken)
	})

	t.Run("non-admin machine user", func(t *testing.T) {
		_, devKey := z.AddMachineUser(t, "not-an-admin")
		cfg := zitadel.AdminConfig{Issuer: z.Issuer, Insecure: true, KeyJSON: devKey}
		_, _, err := zitadel.CreateMachineUser(testContext(t), cfg, "dev1")
		if !errors.Is(err, zitadel.ErrAdminRefused) {
			t.Fatalf("err = %v, want ErrAdminRefused", err)
		}
		key, _ := keyfile.Parse(devKey)
		assertNoSecret(t, "error", err.Error(), key.Key, "eyJ")
	})

	t.Run("name taken", func(t *testing.T) {
		if _, _, err := zitadel.CreateMachineUser(testContext(t), adminConfig(z), "taken"); err != nil {
			t.Fatal(err)
		}
		_, _, err := zitadel.CreateMachineUser(testContext(t), adminConfig(z), "taken")
		if !errors.Is(err, zitadel.ErrAlreadyExists) {
			t.Fatalf("err = %v, want ErrAlreadyExists", err)
		}
	})

	t.Run("key creation fails", func(t *testing.T) {
		before := len(z.Calls())
		z.FailNextAddKey()
		_, _, err := zitadel.CreateMachineUser(testContext(t), adminConfig(z), "half")
		if err == nil {
			t.Fatal("CreateMachineUser succeeded without a key")
		}
		calls := z.Calls()[before:]
		if len(calls) != 2 || calls[0].Method != "AddMachineUser" || calls[1].Method != "RemoveUser" || calls[1].UserID != calls[0].UserID {
			t.Fatalf("calls = %+v, want AddMachineUser then RemoveUser of the same user", calls)
		}
		if _, ok := z.User(calls[0].UserID); ok {
			t.Fatal("half-created user was left behind")
		}
	})

	t.Run("config", func(t *testing.T) {
		for name, cfg := range map[string]zitadel.AdminConfig{
			"no credential":      {Issuer: z.Issuer, Insecure: true},
			"two credentials":    {Issuer: z.Issuer, Insecure: true, Token: "a", KeyJSON: z.AdminKeyJSON},
			"http, not insecure": {Issuer: z.Issuer, Token: z.AdminToken},
			"application key":    {Issuer: z.Issuer, Insecure: true, KeyJSON: z.APIKeyJSON},
		} {
			if _, _, err := zitadel.CreateMachineUser(testContext(t), cfg, "x"); err == nil {
				t.Errorf("%s: accepted", name)
			} else if strings.Contains(err.Error(), z.AdminToken) {
				t.Errorf("%s: error contains the admin token", name)
			}
		}
		if _, _, err := zitadel.CreateMachineUser(testContext(t), adminConfig(z), ""); err == nil {
			t.Error("empty user name accepted")
		}
	})
}
