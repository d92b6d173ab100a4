package provider

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
)

// KubeletAPIConfig configures the kubelet API that vk-fleet serves for its
// devices: the API server reaches it at a device Node's InternalIP and
// kubelet port, and vk-fleet routes each request to the device over NATS.
type KubeletAPIConfig struct {
	// Listen is host:port.
	Listen string
	// TLS holds the serving certificate and, in ClientCAs, the CAs whose
	// client certificates identify callers (the API server's
	// --kubelet-client-certificate).
	TLS *tls.Config
	// Client reviews bearer tokens (TokenReview) and authorizes every
	// caller (SubjectAccessReview).
	Client kubernetes.Interface
	Logger *slog.Logger
}

// ServeKubeletAPI serves the kubelet API until ctx ends. Callers must
// authenticate, with a client certificate from cfg.TLS.ClientCAs or a
// bearer token, and be allowed nodes/proxy on the pod's Node, as with a
// kubelet; anonymous callers get 401, others without the permission 403.
func (p *Provider) ServeKubeletAPI(ctx context.Context, cfg KubeletAPIConfig) error {
	log := cfg.Logger
	if log == nil {
		log = p.log
	}
	mux := http.NewServeMux()
	api.AttachPodRoutes(api.PodHandlerConfig{
		GetContainerLogs:      p.GetContainerLogs,
		RunInContainer:        p.RunInContainer,
		AttachToContainer:     p.AttachToContainer,
		PortForward:           p.PortForward,
		GetPodsFromKubernetes: p.nodePods,
		GetStatsSummary:       p.GetStatsSummary,
		GetMetricsResource:    p.GetMetricsResource,
		StreamIdleTimeout:     4 * time.Hour, // kubelet's default streaming-connection-idle-timeout
		StreamCreationTimeout: 30 * time.Second,
	}, mux, false)
	tlsCfg := cfg.TLS.Clone()
	if tlsCfg.ClientCAs != nil {
		tlsCfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	srv := &http.Server{
		Handler:           &kubeletAuth{p: p, client: cfg.Client, next: mux, log: log},
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*tls.Conn); ok {
				c = tc.NetConn()
			}
			if dc, ok := c.(*deviceConn); ok {
				return context.WithValue(ctx, deviceKey{}, dc.device)
			}
			return ctx
		},
	}
	var shared net.Listener
	if cfg.Listen != "" {
		var err error
		if shared, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("kubelet API: %w", err)
		}
	}
	ports := p.ports
	if ports == nil {
		ports = newKubeletPorts("", PortRange{}, log) // the shared port only
	}
	defer ports.close()
	ln := ports.listener(shared)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("serving the kubelet API", "listen", ln.Addr().String(), "nodePorts", fmt.Sprintf("%d-%d", ports.r.First, ports.r.Last))
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("kubelet API: %w", err)
	}
	return nil
}

// kubeletAuth authenticates and authorizes every request as a kubelet does.
type kubeletAuth struct {
	p      *Provider
	client kubernetes.Interface
	next   http.Handler
	log    *slog.Logger
}

func (a *kubeletAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, groups, ok := a.authenticate(r)
	if !ok {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	node, ok := a.nodeOf(r)
	if !ok {
		http.Error(w, "404 not found: this port serves another Node", http.StatusNotFound)
		return
	}
	verb := "get"
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		verb = "create"
	}
	sub := subresource(r.URL.Path)
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user, Groups: groups,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Group: "", Version: "v1", Resource: "nodes", Subresource: sub, Name: node},
	}}
	res, err := a.client.AuthorizationV1().SubjectAccessReviews().Create(r.Context(), sar, metav1.CreateOptions{})
	if err != nil {
		a.log.Warn("kubelet API: authorizing", "user", user, "err", err)
		http.Error(w, "authorization failed", http.StatusInternalServerError)
		return
	}
	if !res.Status.Allowed {
		a.log.Info("kubelet API: forbidden", "user", user, "node", node, "path", r.URL.Path)
		http.Error(w, fmt.Sprintf("Forbidden (user=%s, verb=%s, resource=nodes, subresource=%s)", user, verb, sub), http.StatusForbidden)
		return
	}
	a.next.ServeHTTP(w, r)
}

// authenticate returns the caller: the subject of a verified client
// certificate, or the user of a bearer token the API server vouches for.
func (a *kubeletAuth) authenticate(r *http.Request) (string, []string, bool) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		c := r.TLS.VerifiedChains[0][0]
		return c.Subject.CommonName, c.Subject.Organization, c.Subject.CommonName != ""
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return "", nil, false
	}
	tr, err := a.client.AuthenticationV1().TokenReviews().Create(r.Context(),
		&authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil || !tr.Status.Authenticated {
		return "", nil, false
	}
	return tr.Status.User.Username, tr.Status.User.Groups, true
}

// subresource is the nodes subresource a kubelet authorizes path with.
func subresource(path string) string {
	switch {
	case strings.HasPrefix(path, "/stats/"), path == "/stats":
		return "stats"
	case strings.HasPrefix(path, "/metrics"):
		return "metrics"
	case strings.HasPrefix(path, "/logs/"):
		return "log"
	}
	return "proxy"
}

// nodeOf returns the Node a request concerns: the device whose port it
// came in on, or, on the shared port, the Node of the pod in a
// /<route>/<namespace>/<pod>/… path ("" when it names none, which only a
// caller allowed on every Node passes). false: the pod runs on another
// Node than the port's.
func (a *kubeletAuth) nodeOf(r *http.Request) (string, bool) {
	dev := connDevice(r.Context())
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	podNode := ""
	if len(parts) >= 3 {
		switch parts[0] {
		case "containerLogs", "exec", "attach", "portForward", "run":
			a.p.mu.Lock()
			if ent := a.p.pods.byKey[podKey(parts[1], parts[2])]; ent != nil && ent.pod != nil {
				podNode = ent.pod.Spec.NodeName
			}
			a.p.mu.Unlock()
			if dev != "" && podNode != "" && podNode != dev {
				return "", false
			}
		}
	}
	if dev != "" {
		return dev, true
	}
	return podNode, true
}
