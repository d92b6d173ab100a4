package metricsserver

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/vk-fleet/vk-fleet/test/framework/controlplane"
)

// fieldManager owns the objects Start applies (server-side apply, so a
// second Start in the same cluster takes them over).
const fieldManager = "vk-fleet-test-metricsserver"

var (
	applyOptions = metav1.ApplyOptions{FieldManager: fieldManager, Force: true}
	apiServices  = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
)

// tokenLifetime is the validity of the ServiceAccountToken credential; it
// outlives any test run.
const tokenLifetime = 24 * 60 * 60

// grantRBAC applies the roles and bindings of metrics-server's
// manifests/base/rbac.yaml (v0.8.0), bound to the identity of cred:
// reading nodes, pods and nodes/metrics (the kubelet's /metrics/resource),
// delegating authentication and authorization (system:auth-delegator),
// reading the extension-apiserver-authentication ConfigMap, and
// system:aggregated-metrics-reader, which aggregates metrics.k8s.io into
// the view, edit and admin roles.
func grantRBAC(ctx context.Context, client kubernetes.Interface, cred Credential) error {
	subject := rbacv1ac.Subject().WithKind("User").WithName(ClientCertUser)
	if cred == ServiceAccountToken {
		sa := corev1ac.ServiceAccount(ServiceName, Namespace)
		if _, err := client.CoreV1().ServiceAccounts(Namespace).Apply(ctx, sa, applyOptions); err != nil {
			return fmt.Errorf("applying service account: %w", err)
		}
		subject = rbacv1ac.Subject().WithKind("ServiceAccount").WithName(ServiceName).WithNamespace(Namespace)
	}
	rbac := client.RbacV1()
	roles := []*rbacv1ac.ClusterRoleApplyConfiguration{
		rbacv1ac.ClusterRole("system:aggregated-metrics-reader").
			WithLabels(map[string]string{
				"rbac.authorization.k8s.io/aggregate-to-view":  "true",
				"rbac.authorization.k8s.io/aggregate-to-edit":  "true",
				"rbac.authorization.k8s.io/aggregate-to-admin": "true",
			}).
			WithRules(rbacv1ac.PolicyRule().
				WithAPIGroups("metrics.k8s.io").WithResources("pods", "nodes").WithVerbs("get", "list", "watch")),
		rbacv1ac.ClusterRole("system:metrics-server").
			WithRules(
				rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("nodes/metrics").WithVerbs("get"),
				rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("pods", "nodes").WithVerbs("get", "list", "watch"),
			),
	}
	for _, r := range roles {
		if _, err := rbac.ClusterRoles().Apply(ctx, r, applyOptions); err != nil {
			return fmt.Errorf("applying cluster role %s: %w", *r.Name, err)
		}
	}
	bindings := []*rbacv1ac.ClusterRoleBindingApplyConfiguration{
		rbacv1ac.ClusterRoleBinding("system:metrics-server").
			WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("ClusterRole").WithName("system:metrics-server")).
			WithSubjects(subject),
		rbacv1ac.ClusterRoleBinding("metrics-server:system:auth-delegator").
			WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("ClusterRole").WithName("system:auth-delegator")).
			WithSubjects(subject),
	}
	for _, b := range bindings {
		if _, err := rbac.ClusterRoleBindings().Apply(ctx, b, applyOptions); err != nil {
			return fmt.Errorf("applying cluster role binding %s: %w", *b.Name, err)
		}
	}
	authReader := rbacv1ac.RoleBinding("metrics-server-auth-reader", Namespace).
		WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("Role").WithName("extension-apiserver-authentication-reader")).
		WithSubjects(subject)
	if _, err := rbac.RoleBindings(Namespace).Apply(ctx, authReader, applyOptions); err != nil {
		return fmt.Errorf("applying role binding %s: %w", *authReader.Name, err)
	}
	return nil
}

// writeIdentity writes the kubeconfig metrics-server runs with and
// returns its path and user name.
func writeIdentity(ctx context.Context, cp *controlplane.ControlPlane, client kubernetes.Interface, dir string, cred Credential) (path, user string, err error) {
	switch cred {
	case ClientCert:
		path, err := cp.ClientKubeconfig(ClientCertUser)
		if err != nil {
			return "", "", fmt.Errorf("writing metrics-server kubeconfig: %w", err)
		}
		return path, ClientCertUser, nil
	case ServiceAccountToken:
		lifetime := int64(tokenLifetime)
		tr, err := client.CoreV1().ServiceAccounts(Namespace).CreateToken(ctx, ServiceName, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &lifetime},
		}, metav1.CreateOptions{})
		if err != nil {
			return "", "", fmt.Errorf("requesting service account token: %w", err)
		}
		const name = "metrics-server"
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters[name] = &clientcmdapi.Cluster{Server: cp.APIServerURL, CertificateAuthorityData: cp.CACertPEM}
		cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
		cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
		cfg.CurrentContext = name
		path := filepath.Join(dir, "metrics-server.kubeconfig")
		if err := clientcmd.WriteToFile(*cfg, path); err != nil {
			return "", "", fmt.Errorf("writing metrics-server kubeconfig: %w", err)
		}
		return path, ServiceAccountUser, nil
	default:
		return "", "", fmt.Errorf("writing metrics-server kubeconfig: unknown credential %d", cred)
	}
}

// writeServingCert issues metrics-server's serving certificate from the
// cluster CA, valid for 127.0.0.1, localhost and the name the aggregator
// verifies (<service>.<namespace>.svc), and returns the files' paths.
func writeServingCert(cp *controlplane.ControlPlane, dir string) (certFile, keyFile string, err error) {
	certPEM, keyPEM, err := cp.ServingCert(ServiceName+"."+Namespace+".svc", "localhost", "127.0.0.1")
	if err != nil {
		return "", "", fmt.Errorf("issuing metrics-server serving certificate: %w", err)
	}
	certFile = filepath.Join(dir, "certs", "serving.crt")
	keyFile = filepath.Join(dir, "certs", "serving.key")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return "", "", fmt.Errorf("writing serving certificate: %w", err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("writing serving key: %w", err)
	}
	return certFile, keyFile, nil
}

// register points the aggregator at metrics-server on 127.0.0.1:port.
//
// There is no kube-proxy, and EndpointSlices refuse loopback addresses.
// But without --enable-aggregator-routing the aggregator resolves a
// Service to its cluster IP, or, for an ExternalName Service, to
// <externalName>:<APIService port> — so an ExternalName Service naming
// 127.0.0.1 sends the traffic there. The aggregator verifies the serving
// certificate against caBundle for the name
// <service>.<namespace>.svc.
func register(ctx context.Context, client kubernetes.Interface, dyn dynamic.Interface, port int, caPEM []byte) error {
	svc := corev1ac.Service(ServiceName, Namespace).
		WithLabels(map[string]string{"app.kubernetes.io/managed-by": fieldManager}).
		WithSpec(corev1ac.ServiceSpec().
			WithType(corev1.ServiceTypeExternalName).
			WithExternalName("127.0.0.1"))
	if _, err := client.CoreV1().Services(Namespace).Apply(ctx, svc, applyOptions); err != nil {
		return fmt.Errorf("applying service %s/%s: %w", Namespace, ServiceName, err)
	}
	apiService := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1",
		"kind":       "APIService",
		"metadata":   map[string]any{"name": APIServiceName},
		"spec": map[string]any{
			"group":                "metrics.k8s.io",
			"version":              "v1beta1",
			"groupPriorityMinimum": int64(100),
			"versionPriority":      int64(100),
			"caBundle":             base64.StdEncoding.EncodeToString(caPEM),
			"service": map[string]any{
				"name":      ServiceName,
				"namespace": Namespace,
				"port":      int64(port),
			},
		},
	}}
	if _, err := dyn.Resource(apiServices).Apply(ctx, APIServiceName, apiService, applyOptions); err != nil {
		return fmt.Errorf("applying apiservice %s: %w", APIServiceName, err)
	}
	return nil
}

// unregister deletes the APIService and the Service.
func unregister(ctx context.Context, dyn dynamic.Interface) error {
	if err := dyn.Resource(apiServices).Delete(ctx, APIServiceName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting apiservice %s: %w", APIServiceName, err)
	}
	svcs := dyn.Resource(corev1.SchemeGroupVersion.WithResource("services")).Namespace(Namespace)
	if err := svcs.Delete(ctx, ServiceName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting service %s/%s: %w", Namespace, ServiceName, err)
	}
	return nil
}

// apiServiceAvailable checks the APIService's Available condition, which
// the aggregator sets once metrics-server's discovery document answered.
// It also checks that the APIService points at this server's port: after
// a restart the old condition may linger until the aggregator re-checks.
func (s *Server) apiServiceAvailable(ctx context.Context) error {
	obj, err := s.dynamic.Resource(apiServices).Get(ctx, APIServiceName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	port, _, _ := unstructured.NestedInt64(obj.Object, "spec", "service", "port")
	if port != int64(s.Port) {
		return fmt.Errorf("apiservice points at port %d, not %d", port, s.Port)
	}
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != "Available" {
			continue
		}
		if m["status"] == "True" {
			return nil
		}
		return fmt.Errorf("apiservice not available: %v: %v", m["reason"], m["message"])
	}
	return fmt.Errorf("apiservice has no Available condition yet")
}
