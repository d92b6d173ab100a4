package podmantest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vk-fleet/vk-fleet/test/framework/childproc"
)

// Service is a running `podman system service` listening on a unix socket.
type Service struct {
	// Socket is the path of the service's unix socket.
	Socket string
	// URI is the connection URI for the podman bindings: "unix://" + Socket.
	URI string
	// Conf is the containers.conf the service reads (CONTAINERS_CONF).
	Conf string
	// Log is the file that receives the service's output.
	Log string

	cmd      *exec.Cmd
	done     chan struct{} // closed when the process has exited
	waitErr  error         // set before done closes
	stopOnce sync.Once
	stopErr  error
}

// startTimeout bounds how long StartService waits for the socket to answer.
const startTimeout = 30 * time.Second

// StartService writes a containers.conf into dir and starts
// `podman system service --time=0 unix://<dir>/podman.sock` with it, on
// storage of its own in dir/storage. It returns once the service answers
// /_ping. Keep dir short: a unix socket path must stay below 108 bytes.
func StartService(ctx context.Context, dir string) (*Service, error) {
	return StartServiceWithStorage(ctx, dir, filepath.Join(dir, "storage"))
}

// StartServiceWithStorage is StartService with podman storage in the
// directory storage, which several services may share.
func StartServiceWithStorage(ctx context.Context, dir, storage string) (*Service, error) {
	conf, err := ContainersConf(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(storage, 0o700); err != nil {
		return nil, fmt.Errorf("creating podman storage: %w", err)
	}
	sc, err := StorageConf(storage)
	if err != nil {
		return nil, err
	}
	// Beside containers.conf, where Env finds it.
	if err := copyFile(sc, filepath.Join(dir, "storage.conf")); err != nil {
		return nil, err
	}
	socket := filepath.Join(dir, "podman.sock")
	if len(socket) >= 108 {
		return nil, fmt.Errorf("socket path %s is too long for a unix socket", socket)
	}
	logPath := filepath.Join(dir, "podman-service.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating service log: %w", err)
	}
	defer logFile.Close()

	// Not CommandContext: the service outlives ctx, which only bounds the start.
	cmd := exec.Command("podman", "system", "service", "--time=0", "unix://"+socket)
	cmd.Env = Env(conf)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// A test binary that dies (e.g. on -timeout) takes the service along.
		Pdeathsig: syscall.SIGTERM,
	}
	s := &Service{
		Socket: socket,
		URI:    "unix://" + socket,
		Conf:   conf,
		Log:    logPath,
		cmd:    cmd,
		done:   make(chan struct{}),
	}
	if err := childproc.Start(cmd, func(err error) {
		s.waitErr = err
		close(s.done)
	}); err != nil {
		return nil, fmt.Errorf("starting podman system service: %w", err)
	}

	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		out, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("waiting for podman service: %w; log:\n%s", err, out)
	}
	return s, nil
}

// waitReady polls the service's /_ping until it answers OK, the process
// exits, ctx ends or startTimeout passes.
func (s *Service) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	client := s.HTTPClient()
	defer client.CloseIdleConnections()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		if lastErr = s.ping(ctx, client); lastErr == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("service exited: %v", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("%w (last ping: %v)", ctx.Err(), lastErr)
		case <-tick.C:
		}
	}
}

func (s *Service) ping(ctx context.Context, client *http.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://d/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ping answered %s", resp.Status)
	}
	return nil
}

// HTTPClient returns an HTTP client that talks to the service's socket;
// the host part of request URLs is ignored ("http://d/_ping").
func (s *Service) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", s.Socket)
		},
	}}
}

// stopGrace is how long Stop lets the service shut down before killing it.
const stopGrace = 10 * time.Second

// Stop terminates the service (its process group, by PID) and waits for it
// to exit. Containers the service started keep running. Stop is safe to
// call more than once.
func (s *Service) Stop() error {
	s.stopOnce.Do(func() {
		pgid := s.cmd.Process.Pid
		if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			s.stopErr = fmt.Errorf("signalling podman service: %w", err)
		}
		timer := time.NewTimer(stopGrace)
		defer timer.Stop()
		select {
		case <-s.done:
		case <-timer.C:
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-s.done
		}
		os.Remove(s.Socket)
	})
	return s.stopErr
}

func copyFile(from, to string) error {
	if from == to {
		return nil
	}
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}

// Reset removes every pod, container and image of the storage that the
// containers.conf conf (with its storage.conf) names, and unmounts it, so
// that its directory can be deleted. Containers that podman's reset leaves
// running (seen with podman 4.3) are deleted through runc, found by their
// bundle under the storage's graph root — never anyone else's.
func Reset(ctx context.Context, conf string) error {
	_, err := runPodman(ctx, conf, "system", "reset", "--force")
	graph := graphRoot(filepath.Join(filepath.Dir(conf), "storage.conf"))
	if graph == "" {
		return err
	}
	if out, lerr := exec.CommandContext(ctx, "runc", "list", "-f", "json").Output(); lerr == nil {
		var list []struct {
			ID     string `json:"id"`
			Bundle string `json:"bundle"`
		}
		_ = json.Unmarshal(out, &list)
		for _, c := range list {
			if strings.HasPrefix(c.Bundle, graph+string(filepath.Separator)) {
				_ = exec.CommandContext(ctx, "runc", "delete", "-f", c.ID).Run()
			}
		}
	}
	// The overlay driver mounts its directory onto itself, once per podman
	// process that opened the storage.
	for range 16 {
		if syscall.Unmount(filepath.Join(graph, "overlay"), syscall.MNT_DETACH) != nil {
			break
		}
	}
	return err
}

// graphRoot reads the graphroot of a storage.conf written by StorageConf.
func graphRoot(storageConf string) string {
	b, err := os.ReadFile(storageConf)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "graphroot = "); ok {
			if g, err := strconv.Unquote(v); err == nil && filepath.IsAbs(g) {
				return g
			}
		}
	}
	return ""
}
