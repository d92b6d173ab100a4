package enrollcmd

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vk-fleet/vk-fleet/zitadel"
	"github.com/vk-fleet/vk-fleet/zitadel/devicetoken"
	"github.com/vk-fleet/vk-fleet/zitadel/keyfile"
	"github.com/vk-fleet/vk-fleet/zitadel/zitadeltest"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// The machine user createMachineUser makes is the one zitadel-go's client
// made (zitadel.CreateMachineUser): same calls, name, description and org,
// and its key gets the device tokens.
func TestCreateMachineUserEnrollsAWorkingIdentity(t *testing.T) {
	z := zitadeltest.New(t)
	const org = "300000000000000042"
	userID, keyJSON, err := createMachineUser(testContext(t), zitadelAdmin{Issuer: z.Issuer, Token: z.AdminToken, OrgID: org}, "dev1")
	if err != nil {
		t.Fatalf("createMachineUser: %v", err)
	}
	u, ok := z.User(userID)
	if !ok {
		t.Fatalf("user %s was not created", userID)
	}
	if u.Username != "dev1" || u.Description != zitadel.DefaultUserDescription || u.OrgID != org || !u.Active || u.Keys != 1 {
		t.Fatalf("created user = %+v", u)
	}
	key, err := keyfile.Parse(keyJSON)
	if err != nil || key.Type != keyfile.TypeServiceAccount || key.UserID != userID {
		t.Fatalf("returned key %v: %v", key, err)
	}
	calls := z.Calls()
	if len(calls) != 2 || calls[0].Method != "AddMachineUser" || calls[1].Method != "AddMachineKey" {
		t.Fatalf("calls = %+v, want AddMachineUser, AddMachineKey", calls)
	}
	for _, c := range calls {
		if c.Caller != "pat" || c.OrgID != org {
			t.Errorf("%s: caller %q, org %q; want the PAT and org %s", c.Method, c.Caller, c.OrgID, org)
		}
	}
	ts, err := devicetoken.NewTokenSource(testContext(t), z.Issuer, keyJSON, devicetoken.WithInsecure(), devicetoken.WithProjectID(z.ProjectID))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Token(testContext(t)); err != nil {
		t.Fatalf("token with the created key: %v", err)
	}
}

func TestCreateMachineUserRefusals(t *testing.T) {
	z := zitadeltest.New(t)
	admin := zitadelAdmin{Issuer: z.Issuer, Token: z.AdminToken}

	t.Run("wrong credential", func(t *testing.T) {
		const wrongToken = "not-the-admin-pat-0815"
		_, _, err := createMachineUser(testContext(t), zitadelAdmin{Issuer: z.Issuer, Token: wrongToken}, "dev1")
		if !errors.Is(err, ErrZitadelAdminRefused) {
			t.Fatalf("err = %v, want ErrZitadelAdminRefused", err)
		}
		if strings.Contains(err.Error(), wrongToken) {
			t.Fatalf("error contains the token: %v", err)
		}
	})
	t.Run("name taken", func(t *testing.T) {
		if _, _, err := createMachineUser(testContext(t), admin, "taken"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := createMachineUser(testContext(t), admin, "taken"); !errors.Is(err, ErrZitadelUserExists) {
			t.Fatalf("err = %v, want ErrZitadelUserExists", err)
		}
	})
	t.Run("key creation fails", func(t *testing.T) {
		before := len(z.Calls())
		z.FailNextAddKey()
		if _, _, err := createMachineUser(testContext(t), admin, "half"); err == nil {
			t.Fatal("createMachineUser succeeded without a key")
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
		for name, a := range map[string]zitadelAdmin{
			"no token":     {Issuer: z.Issuer},
			"no issuer":    {Token: z.AdminToken},
			"other scheme": {Issuer: "grpc://" + strings.TrimPrefix(z.Issuer, "http://"), Token: z.AdminToken},
		} {
			if _, _, err := createMachineUser(testContext(t), a, "x"); err == nil {
				t.Errorf("%s: accepted", name)
			}
		}
		if _, _, err := createMachineUser(testContext(t), admin, ""); err == nil {
			t.Error("empty user name accepted")
		}
	})
	t.Run("nothing listens", func(t *testing.T) {
		_, _, err := createMachineUser(testContext(t), zitadelAdmin{Issuer: "http://" + strings.TrimPrefix(closedAddr(t), "nats://"), Token: z.AdminToken}, "x")
		if err == nil || strings.Contains(err.Error(), z.AdminToken) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"https://zitadel.example.com":         "https://zitadel.example.com:443",
		"https://zitadel.example.com:8443/x/": "https://zitadel.example.com:8443",
		"http://127.0.0.1":                    "http://127.0.0.1:80",
		"http://[::1]:8080":                   "http://[::1]:8080",
	} {
		if got, err := (zitadelAdmin{Issuer: in}).origin(); err != nil || got != want {
			t.Errorf("origin(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := (zitadelAdmin{Issuer: "https://user:pw@zitadel.example.com"}).origin(); err == nil || strings.Contains(err.Error(), "pw") {
		t.Errorf("issuer with credentials: %v", err)
	}
}
