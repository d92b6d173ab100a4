package enrollcmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
	"github.com/vk-fleet/vk-fleet/nodeagent/agentinstall"
	"github.com/vk-fleet/vk-fleet/zitadel/devicetoken"
)

// Paths on the device, below Options.Root.
const (
	configDir   = "etc/vk-fleet"
	defaultRoot = "/"
)

// enrollInboxPrefix is the inbox prefix the auth callout lets enrollment
// clients subscribe to (callout.EnrollInboxPrefix; not imported, to keep
// the callout's server code out of the device binary).
const enrollInboxPrefix = "_INBOX_enroll"

// Options of `fleetctl enroll`, run on the device.
type Options struct {
	Server      string
	Token       string
	TokenFile   string
	Name        string
	Labels      []string
	CA          string
	Root        string
	Install     bool
	Force       bool
	StateDir    string
	PodmanURL   string
	AgentBinary string
	Timeout     time.Duration

	ZitadelIssuer         string
	ZitadelKeyFile        string
	ZitadelAdminTokenFile string
	ZitadelOrgID          string
	ZitadelProjectID      string

	labels map[string]string
}

// DefaultOptions returns the options of a plain `fleetctl enroll`.
func DefaultOptions() *Options {
	return &Options{
		Root:      defaultRoot,
		StateDir:  "/var/lib/vk-fleet-agent",
		PodmanURL: "unix:///run/podman/podman.sock",
		Timeout:   30 * time.Second,
	}
}

// Bind registers the flags, with o's values as their defaults.
func (o *Options) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&o.Server, "server", o.Server, "vk-fleet's NATS URL, e.g. tls://fleet.example.com:4222")
	fs.StringVar(&o.Token, "token", o.Token, "enrollment token from `fleetctl token create` (or use --token-file)")
	fs.StringVar(&o.TokenFile, "token-file", o.TokenFile, "file holding the enrollment token")
	fs.StringVar(&o.Name, "name", o.Name, "device name, which becomes the Node name (default: the host name)")
	fs.StringArrayVar(&o.Labels, "label", o.Labels, "Node label for this device (key=value; repeatable)")
	fs.StringVar(&o.CA, "ca", o.CA, "CA certificate to trust for the server (from `fleetctl ca`); pinned in the agent configuration")
	fs.StringVar(&o.Root, "root", o.Root, "write files below this directory instead of /")
	fs.BoolVar(&o.Install, "install", o.Install, "write and enable a systemd unit for device-agent")
	fs.BoolVar(&o.Force, "force", o.Force, "overwrite an existing agent configuration and device key")
	fs.StringVar(&o.StateDir, "state-dir", o.StateDir, "agent state directory (on the device)")
	fs.StringVar(&o.PodmanURL, "podman-url", o.PodmanURL, "podman API socket the agent uses")
	fs.StringVar(&o.AgentBinary, "agent-binary", o.AgentBinary, "device-agent binary the systemd unit runs (default: the device-agent beside fleetctl, else on PATH, else "+agentinstall.DefaultBinary+"; with --root, "+agentinstall.DefaultBinary+" below it)")
	fs.DurationVar(&o.Timeout, "timeout", o.Timeout, "how long to try to reach the server")
	fs.StringVar(&o.ZitadelIssuer, "zitadel", o.ZitadelIssuer, "Zitadel URL: use a Zitadel machine user as the device identity instead of an nkey")
	fs.StringVar(&o.ZitadelKeyFile, "zitadel-key-file", o.ZitadelKeyFile, "JSON key of an existing machine user for this device")
	fs.StringVar(&o.ZitadelAdminTokenFile, "zitadel-admin-token-file", o.ZitadelAdminTokenFile, "file with an admin's access token: create the machine user and its key through Zitadel's API")
	fs.StringVar(&o.ZitadelOrgID, "zitadel-org-id", o.ZitadelOrgID, "Zitadel organisation for the new machine user")
	fs.StringVar(&o.ZitadelProjectID, "zitadel-project-id", o.ZitadelProjectID, "Zitadel project whose API vk-fleet introspects tokens with")
}

// Complete reads the token file and fills the name, the agent binary and
// the labels.
func (o *Options) Complete() error {
	if o.TokenFile != "" {
		b, err := os.ReadFile(o.TokenFile)
		if err != nil {
			return fmt.Errorf("reading --token-file: %w", err)
		}
		o.Token = strings.TrimSpace(string(b))
	}
	if o.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("reading host name for --name: %w", err)
		}
		o.Name = strings.ToLower(h)
	}
	if o.AgentBinary == "" {
		o.AgentBinary = findAgent(filepath.Clean(o.Root) != "/")
	}
	var err error
	o.labels, err = ParseLabels(strings.Join(o.Labels, ","))
	return err
}

// findAgent returns the device-agent a unit should run: the one installed
// beside this fleetctl (both come in one package; on a device fleetctl is
// a link to it), else the one on PATH, else where the package installs it.
// Below another --root, only the latter means anything.
func findAgent(otherRoot bool) string {
	if otherRoot {
		return agentinstall.DefaultBinary
	}
	if self, err := os.Executable(); err == nil {
		if self, err = filepath.EvalSymlinks(self); err == nil {
			p := filepath.Join(filepath.Dir(self), "device-agent")
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
				return p
			}
		}
	}
	if p, err := exec.LookPath("device-agent"); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
	}
	return agentinstall.DefaultBinary
}

// Validate checks the options without touching the device.
func (o *Options) Validate() error {
	if o.Server == "" {
		return errors.New("--server is required")
	}
	if o.Token == "" {
		return errors.New("--token or --token-file is required")
	}
	if err := bridge.ValidateDeviceName(o.Name); err != nil {
		return fmt.Errorf("--name: %w", err)
	}
	if o.CA != "" {
		if _, err := os.Stat(o.CA); err != nil {
			return fmt.Errorf("--ca: %w", err)
		}
	}
	if o.ZitadelIssuer != "" && (o.ZitadelKeyFile == "") == (o.ZitadelAdminTokenFile == "") {
		return errors.New("--zitadel needs exactly one of --zitadel-key-file (an existing machine user) and --zitadel-admin-token-file (create one)")
	}
	if o.Install {
		if _, err := agentinstall.Unit(o.AgentBinary, o.path(filepath.Join(configDir, "agent.json"))); err != nil {
			return fmt.Errorf("--agent-binary or --root: %w", err)
		}
	}
	return nil
}

// checkAgent refuses, before the device is enrolled, to install a unit for
// an agent that could not run pods: missing, for another architecture, or
// built without the podman build tags.
func (o *Options) checkAgent(ctx context.Context) error {
	info, err := agentinstall.Check(ctx, o.path(o.AgentBinary))
	if err != nil {
		return fmt.Errorf("--install: refusing to install a unit for this agent: %w", err)
	}
	if info.OS != runtime.GOOS || info.Arch != runtime.GOARCH {
		return fmt.Errorf("--install: device-agent %s is built for %s/%s, this is %s/%s", o.AgentBinary, info.OS, info.Arch, runtime.GOOS, runtime.GOARCH)
	}
	return nil
}

func (o *Options) path(rel string) string { return filepath.Join(o.Root, rel) }

// Run enrolls the device: it creates the device's key (or Zitadel
// identity), registers it with the server, writes the agent's
// configuration and, with Install, its systemd unit.
func (o *Options) Run(ctx context.Context, out io.Writer) error {
	cfgPath := o.path(filepath.Join(configDir, "agent.json"))
	keyPath := o.path(filepath.Join(configDir, "device.nk"))
	if !o.Force {
		for _, p := range []string{cfgPath, keyPath} {
			if _, err := os.Stat(p); err == nil {
				return fmt.Errorf("%s exists: this device is already enrolled (use --force to enroll again)", p)
			}
		}
	}
	if o.Install {
		if err := o.checkAgent(ctx); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(keyPath), err)
	}
	req := &bridge.EnrollRequest{Token: o.Token, Name: o.Name, Labels: o.labels}
	var keyData []byte
	if o.ZitadelIssuer != "" {
		keyPath = o.path(filepath.Join(configDir, "zitadel-key.json"))
		var err error
		if keyData, req.ZitadelToken, err = o.zitadelIdentity(ctx); err != nil {
			return err
		}
	} else {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return fmt.Errorf("generating device key: %w", err)
		}
		keyData, _ = kp.Seed()
		keyData = append(keyData, '\n')
		req.NKey, _ = kp.PublicKey()
	}
	// The key is written before the request, so that a registered key is
	// never lost, and removed again if enrollment fails.
	tmpKey := keyPath + ".new"
	if err := os.WriteFile(tmpKey, keyData, 0o600); err != nil {
		return fmt.Errorf("writing device key: %w", err)
	}
	enrolled := false
	defer func() {
		if !enrolled {
			os.Remove(tmpKey)
		}
	}()

	opts := []nats.Option{
		nats.Token(o.Token),
		nats.Name("fleetctl enroll"),
		nats.CustomInboxPrefix(enrollInboxPrefix),
		nats.Timeout(10 * time.Second),
		nats.NoReconnect(),
	}
	if o.CA != "" {
		opts = append(opts, nats.RootCAs(o.CA))
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	nc, err := nats.Connect(o.Server, opts...)
	if err != nil {
		if errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization") {
			return fmt.Errorf("the server refused the enrollment token: it is unknown or mistyped (%w)", bridge.ErrTokenInvalid)
		}
		return fmt.Errorf("connecting to %s: %w", o.Server, err)
	}
	defer nc.Close()
	name, err := nodeagent.Enroll(ctx, nc, req)
	if err != nil {
		return explainEnrollError(err, o.Name)
	}
	if err := os.Rename(tmpKey, keyPath); err != nil {
		return fmt.Errorf("device %s enrolled, but saving its key failed: %w", name, err)
	}
	enrolled = true

	fc := nodeagent.FileConfig{
		Name: name, NATSURL: o.Server, StateDir: o.StateDir, PodmanURL: o.PodmanURL,
	}
	if o.ZitadelIssuer != "" {
		fc.ZitadelIssuer, fc.ZitadelKeyFile, fc.ZitadelProjectID = o.ZitadelIssuer, keyPath, o.ZitadelProjectID
	} else {
		fc.NKeyFile = keyPath
	}
	if o.CA != "" {
		caPath := o.path(filepath.Join(configDir, "ca.crt"))
		b, err := os.ReadFile(o.CA)
		if err != nil {
			return fmt.Errorf("reading --ca: %w", err)
		}
		if filepath.Clean(o.CA) != caPath {
			if err := os.WriteFile(caPath, b, 0o644); err != nil {
				return fmt.Errorf("pinning the CA: %w", err)
			}
		}
		fc.CAFile = caPath
	}
	if err := fc.Save(cfgPath); err != nil {
		return err
	}
	fmt.Fprintf(out, "device %s enrolled; agent configuration written to %s (key %s, mode 0600)\n", name, cfgPath, keyPath)
	if o.Install {
		return o.installUnit(ctx, out, cfgPath)
	}
	fmt.Fprintf(out, "start the agent with: %s --config %s\n", o.AgentBinary, cfgPath)
	return nil
}

// zitadelIdentity returns the machine user's key (created through the API
// with an admin token, or read from --zitadel-key-file) and a fresh access
// token proving the device holds it.
func (o *Options) zitadelIdentity(ctx context.Context) (key []byte, token string, err error) {
	insecure := strings.HasPrefix(o.ZitadelIssuer, "http://")
	if o.ZitadelAdminTokenFile != "" {
		admin, err := os.ReadFile(o.ZitadelAdminTokenFile)
		if err != nil {
			return nil, "", fmt.Errorf("reading --zitadel-admin-token-file: %w", err)
		}
		_, key, err = createMachineUser(ctx, zitadelAdmin{
			Issuer: o.ZitadelIssuer, Token: strings.TrimSpace(string(admin)), OrgID: o.ZitadelOrgID,
		}, o.Name)
		if err != nil {
			return nil, "", fmt.Errorf("creating the Zitadel machine user: %w", err)
		}
	} else if key, err = os.ReadFile(o.ZitadelKeyFile); err != nil {
		return nil, "", fmt.Errorf("reading --zitadel-key-file: %w", err)
	}
	opts := []devicetoken.Option{}
	if insecure {
		opts = append(opts, devicetoken.WithInsecure())
	}
	if o.ZitadelProjectID != "" {
		opts = append(opts, devicetoken.WithProjectID(o.ZitadelProjectID))
	}
	ts, err := devicetoken.NewTokenSource(ctx, o.ZitadelIssuer, key, opts...)
	if err != nil {
		return nil, "", fmt.Errorf("loading the Zitadel key: %w", err)
	}
	if token, err = ts.Token(ctx); err != nil {
		return nil, "", fmt.Errorf("getting a Zitadel access token: %w", err)
	}
	return key, token, nil
}

// explainEnrollError turns the server's refusal into advice.
func explainEnrollError(err error, name string) error {
	switch {
	case errors.Is(err, bridge.ErrTokenExpired):
		return fmt.Errorf("%w: ask your admin for a new one (fleetctl token create)", err)
	case errors.Is(err, bridge.ErrTokenUsedUp):
		return fmt.Errorf("%w: it was already used for as many devices as it allows; ask for a new one", err)
	case errors.Is(err, bridge.ErrNameTaken):
		return fmt.Errorf("%w: pick another --name, or have an admin run `fleetctl revoke %s` first", err, name)
	}
	return err
}

// installUnit writes the agent's systemd unit (unless the package's is the
// same), then enables and starts it.
func (o *Options) installUnit(ctx context.Context, out io.Writer, cfgPath string) error {
	unit, err := agentinstall.Unit(o.AgentBinary, cfgPath)
	if err != nil {
		return err
	}
	local := o.path(agentinstall.LocalUnitPath)
	if packaged, err := os.ReadFile(o.path(agentinstall.PackageUnitPath)); err == nil && bytes.Equal(packaged, unit) {
		// The package's unit runs this agent with this configuration: a
		// copy in /etc would only hide the package's future versions.
		if err := os.Remove(local); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing the local unit that hides the packaged one: %w", err)
		}
		fmt.Fprintf(out, "using the packaged systemd unit %s\n", agentinstall.PackageUnitPath)
	} else {
		if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
			return fmt.Errorf("creating unit directory: %w", err)
		}
		if err := os.WriteFile(local, unit, 0o644); err != nil {
			return fmt.Errorf("writing systemd unit: %w", err)
		}
	}
	if filepath.Clean(o.Root) != "/" {
		fmt.Fprintf(out, "systemd unit written to %s (not enabled: --root is not /)\n", local)
		return nil
	}
	for _, args := range [][]string{{"daemon-reload"}, {"enable", "--now", agentinstall.UnitName}} {
		if b, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, b)
		}
	}
	fmt.Fprintf(out, "device-agent enabled and started (%s)\n", agentinstall.UnitName)
	return nil
}

// NewCommand returns the `enroll` command.
func NewCommand() *cobra.Command {
	o := DefaultOptions()
	cmd := &cobra.Command{
		Use:   "enroll",
		Short: "Enroll this device: generate its key, register it, write the agent configuration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context(), cmd.OutOrStdout())
		},
	}
	o.Bind(cmd.Flags())
	return cmd
}

// OperatorCommands are the top-level commands of the operator's fleetctl
// that talk to the cluster. The fleetctl on a device (device-agent under
// that name) answers them by pointing to the operator's fleetctl.
var OperatorCommands = []string{"token", "devices", "revoke", "ca"}
