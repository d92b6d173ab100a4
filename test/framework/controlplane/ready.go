package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"k8s.io/client-go/rest"
)

// probeTimeout bounds a single health request.
const probeTimeout = 2 * time.Second

// waitFor polls check until it returns nil, timeout passes or ctx ends. It
// fails early, quoting the log, if any process of the control plane exits.
func (c *ControlPlane) waitFor(ctx context.Context, what string, timeout time.Duration, check func(context.Context) error) error {
	begin := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		for _, p := range c.processes() {
			if err := p.exitErr(); err != nil {
				return fmt.Errorf("waiting for %s: %w", what, err)
			}
		}
		err := check(ctx)
		if err == nil {
			c.log.Debug("ready", "what", what, "took", time.Since(begin).Round(time.Millisecond))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last check: %v)", what, ctx.Err(), err)
		case <-ticker.C:
		}
	}
}

// etcdHealthy checks etcd's /health endpoint.
func (c *ControlPlane) etcdHealthy(ctx context.Context) error {
	body, err := get(ctx, http.DefaultClient, c.EtcdURL+"/health")
	if err != nil {
		return err
	}
	var h struct {
		Health string `json:"health"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(body, &h); err != nil {
		return fmt.Errorf("decoding etcd health: %w", err)
	}
	if h.Health != "true" {
		return fmt.Errorf("etcd unhealthy: %s", h.Reason)
	}
	return nil
}

// apiserverReady checks the API server's /readyz as cluster admin.
func (c *ControlPlane) apiserverReady(ctx context.Context) error {
	client, err := rest.HTTPClientFor(c.RESTConfig)
	if err != nil {
		return fmt.Errorf("building api server client: %w", err)
	}
	defer client.CloseIdleConnections()
	_, err = get(ctx, client, c.APIServerURL+"/readyz")
	return err
}

// healthz returns a check of /healthz on a controller's secure port,
// which allows anonymous requests; the serving certificate is verified
// against the cluster CA.
func (c *ControlPlane) healthz(port int) func(context.Context) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.ca.CertPEM)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: true,
	}}
	url := "https://127.0.0.1:" + strconv.Itoa(port) + "/healthz"
	return func(ctx context.Context) error {
		_, err := get(ctx, client, url)
		return err
	}
}

// defaultServiceAccountExists checks for ServiceAccount default/default,
// which the service-account controller creates; until it exists the
// ServiceAccount admission plugin rejects pods in "default".
func (c *ControlPlane) defaultServiceAccountExists(ctx context.Context) error {
	client, err := rest.HTTPClientFor(c.RESTConfig)
	if err != nil {
		return fmt.Errorf("building api server client: %w", err)
	}
	defer client.CloseIdleConnections()
	_, err = get(ctx, client, c.APIServerURL+"/api/v1/namespaces/default/serviceaccounts/default")
	return err
}

// get fetches url and returns the body of a 200 response.
func get(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s: %s: %s", url, resp.Status, truncate(body, 300))
	}
	return body, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// pickPorts picks the ports of an attempt; tests replace it.
var pickPorts = freePorts

// freePorts returns n distinct loopback ports that were free a moment
// ago. Another program may take one before the control plane binds it;
// Start retries once when that happens.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("picking a free port: %w", err)
		}
		listeners = append(listeners, l)
		addr, ok := l.Addr().(*net.TCPAddr)
		if !ok {
			return nil, errors.New("picking a free port: listener has no tcp address")
		}
		ports = append(ports, addr.Port)
	}
	return ports, nil
}
