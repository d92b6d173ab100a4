package chart

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the chart")

// valueSets are the values the golden files and lint cover.
var valueSets = []string{"default", "external"}

func values(t *testing.T, set string) map[string]any {
	t.Helper()
	if set == "default" {
		return map[string]any{}
	}
	v, err := chartutil.ReadValuesFile(filepath.Join("testdata", set+".values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return v.AsMap()
}

// TestTemplateGolden compares `helm template` output (and NOTES.txt) with
// testdata/<set>.golden; -update rewrites them.
func TestTemplateGolden(t *testing.T) {
	for _, set := range valueSets {
		t.Run(set, func(t *testing.T) {
			rel, err := Render(values(t, set), "vk-fleet", "vk-fleet")
			if err != nil {
				t.Fatal(err)
			}
			got := rel.Manifest + "\n---\n# NOTES.txt\n" + rel.Info.Notes + "\n"
			golden := filepath.Join("testdata", set+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if d := cmp.Diff(string(want), got); d != "" {
				t.Errorf("rendered chart differs from %s (-want +got; run with -update if intended):\n%s", golden, d)
			}
		})
	}
}

// TestLint runs the SDK's `helm lint` (strict: warnings fail too).
func TestLint(t *testing.T) {
	dir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range valueSets {
		l := action.NewLint()
		l.Strict = true
		l.Namespace = "vk-fleet"
		l.KubeVersion, _ = chartutil.ParseKubeVersion(KubeVersion)
		res := l.Run([]string{dir}, values(t, set))
		for _, m := range res.Messages {
			if m.Severity >= support.WarningSev {
				t.Errorf("lint (%s values): %s", set, m)
			}
		}
		for _, err := range res.Errors {
			t.Errorf("lint (%s values): %v", set, err)
		}
	}
}

// TestBadValuesAreRejected: a wrong value fails the install with an error
// that names the value and what is wrong with it.
func TestBadValuesAreRejected(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want []string
	}{
		{"nats: {service: {type: Ingress}}", []string{"nats/service/type", "ClusterIP", "NodePort", "LoadBalancer"}},
		{"replicas: 0", []string{"replicas", "minimum"}},
		{"heartbeatTimeout: 20 seconds", []string{"heartbeatTimeout", "20 seconds"}},
		{"kubelet: {portRange: '10251'}", []string{"kubelet/portRange"}},
		{"logLevel: verbose", []string{"logLevel", "debug"}},
		{"nats: {tls: {certSecert: x}}", []string{"certSecert"}},
		{"replicas: 3", []string{"replicas > 1 needs nats.external.enabled=true"}},
		{"nats: {external: {enabled: true, url: 'tls://nats:4222'}}", []string{"needs nats.external.nkeySecret"}},
		{"zitadel: {issuer: 'https://zitadel.example.com'}", []string{"zitadel.issuer needs zitadel.clientID"}},
	} {
		var vals map[string]any
		if err := yaml.Unmarshal([]byte(tc.yaml), &vals); err != nil {
			t.Fatal(err)
		}
		_, err := Render(vals, "vk-fleet", "vk-fleet")
		if err == nil {
			t.Errorf("values %q accepted, want an error", tc.yaml)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("values %q: error %q does not mention %q", tc.yaml, err, w)
			}
		}
	}
}

// justified lists every RBAC rule of the chart, one verb per line as
// "<Kind> <namespace>: <group>/<resource> <verb>", with the code that needs
// it. A rule in the chart but not here (unjustified), or here but not in the
// chart (stale), fails TestRBACRulesAreJustified.
var justified = map[string]map[string]string{
	"default": {
		"ClusterRole: /nodes get":                                       "registry/registry.go Enroll (name taken?); provider/node.go renewLease: the owner of a missing Lease",
		"ClusterRole: /nodes list":                                      "registry/cache.go informer; registry/registry.go deviceByAnnotation",
		"ClusterRole: /nodes watch":                                     "registry/cache.go informer",
		"ClusterRole: /nodes create":                                    "registry/registry.go Enroll",
		"ClusterRole: /nodes/status update":                             "registry/registry.go Enroll: UpdateStatus NotReady",
		"ClusterRole: /nodes/status patch":                              "provider/node.go writeNodeStatus and markLinkDown: Patch(status)",
		"ClusterRole: /pods list":                                       "provider/provider.go runPodController: pod informer",
		"ClusterRole: /pods watch":                                      "provider/provider.go runPodController: pod informer",
		"ClusterRole: /pods delete":                                     "VK node/pod.go: deletes a pod its device reports gone",
		"ClusterRole: /pods/status update":                              "VK node/pod.go: UpdateStatus",
		"ClusterRole: /configmaps get":                                  "provider/volumes.go: a ConfigMap the informer has not seen yet",
		"ClusterRole: /configmaps list":                                 "provider/provider.go Run: ConfigMap informer",
		"ClusterRole: /configmaps watch":                                "provider/provider.go Run: ConfigMap informer",
		"ClusterRole: /secrets get":                                     "provider/volumes.go, provider/pullsecrets.go; registry/tokens.go LookupToken; app.go CA and store key",
		"ClusterRole: /secrets list":                                    "provider/provider.go Run: Secret informer",
		"ClusterRole: /secrets watch":                                   "provider/provider.go Run: Secret informer",
		"ClusterRole: /services list":                                   "provider/provider.go Run: Service informer (env links)",
		"ClusterRole: /services watch":                                  "provider/provider.go Run: Service informer (env links)",
		"ClusterRole: /events create":                                   "provider/provider.go Run: event broadcaster",
		"ClusterRole: /events patch":                                    "client-go record: repeated events are patched",
		"ClusterRole: authentication.k8s.io/tokenreviews create":        "provider/kubeletapi.go: bearer tokens of kubelet API callers",
		"ClusterRole: authorization.k8s.io/subjectaccessreviews create": "provider/kubeletapi.go: per-Node authorization of kubelet API callers",
		"Role kube-node-lease: coordination.k8s.io/leases create":       "provider/node.go renewLease: a missing Lease",
		"Role kube-node-lease: coordination.k8s.io/leases patch":        "provider/node.go renewLease",
		"Role kube-system: /secrets create":                             "app.go loadOrCreateCA, natsStoreKey on first start",
		"Role kube-system: /secrets update":                             "registry/tokens.go consumeToken",
		"Role kube-system: /configmaps create":                          "app.go publishCA",
		"Role kube-system: /configmaps update":                          "app.go publishCA",
	},
	"external": {
		// The ClusterRole and the node-lease Role are the default's.
		"Role kube-system: /secrets update":                   "registry/tokens.go consumeToken",
		"Role kube-system: coordination.k8s.io/leases get":    "sharding/sharding.go renewMembership",
		"Role kube-system: coordination.k8s.io/leases create": "sharding/sharding.go renewMembership",
		"Role kube-system: coordination.k8s.io/leases update": "sharding/sharding.go renewMembership",
		"Role kube-system: coordination.k8s.io/leases list":   "sharding/sharding.go liveMembers",
		"Role kube-system: coordination.k8s.io/leases delete": "sharding/sharding.go leave",
		"ClusterRole callout: /nodes list":                    "cmd/vk-fleet/callout.go: registry/cache.go informer",
		"ClusterRole callout: /nodes watch":                   "cmd/vk-fleet/callout.go: registry/cache.go informer",
		"Role callout kube-system: /secrets get":              "registry/tokens.go CheckEnrollmentToken → LookupToken",
	},
}

func init() {
	for k, v := range justified["default"] {
		if strings.HasPrefix(k, "ClusterRole:") || strings.HasPrefix(k, "Role kube-node-lease:") {
			justified["external"][k] = v
		}
	}
}

// Rules flattens the RBAC rules of a rendered manifest into one line per
// verb, as in justified. Objects named <fullname>-callout are marked
// "callout".
func Rules(manifest string) ([]string, error) {
	var out []string
	for _, doc := range releaseutil.SplitManifests(manifest) {
		var head struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			return nil, fmt.Errorf("parsing manifest: %w", err)
		}
		if head.Kind != "ClusterRole" && head.Kind != "Role" {
			continue
		}
		var r rbacv1.Role // a ClusterRole's fields are a superset we do not use
		if err := yaml.Unmarshal([]byte(doc), &r); err != nil {
			return nil, fmt.Errorf("parsing %s: %w", head.Kind, err)
		}
		who := head.Kind
		if strings.HasSuffix(r.Name, "-callout") {
			who += " callout"
		}
		if r.Namespace != "" {
			who += " " + r.Namespace
		}
		for _, rule := range r.Rules {
			if len(rule.ResourceNames) > 0 || len(rule.NonResourceURLs) > 0 {
				return nil, fmt.Errorf("%s %s: resourceNames and nonResourceURLs are not expected", head.Kind, r.Name)
			}
			for _, g := range rule.APIGroups {
				for _, res := range rule.Resources {
					for _, v := range rule.Verbs {
						out = append(out, fmt.Sprintf("%s: %s/%s %s", who, g, res, v))
					}
				}
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// TestRBACRulesAreJustified: the chart grants exactly the rules listed in
// justified, each with the code that needs it. The e2e test
// TestChartInstallsAndItsRBACSuffices proves they are enough.
func TestRBACRulesAreJustified(t *testing.T) {
	for _, set := range valueSets {
		rel, err := Render(values(t, set), "vk-fleet", "vk-fleet")
		if err != nil {
			t.Fatal(err)
		}
		got, err := Rules(rel.Manifest)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range got {
			if justified[set][r] == "" {
				t.Errorf("%s values: rule %q has no justification: name the code that needs it in justified, or drop it", set, r)
			}
		}
		for r := range justified[set] {
			if !slices.Contains(got, r) {
				t.Errorf("%s values: justified rule %q is not in the chart", set, r)
			}
		}
		for i := 1; i < len(got); i++ {
			if got[i] == got[i-1] {
				t.Errorf("%s values: rule %q granted twice", set, got[i])
			}
		}
	}
}

// TestFlowSchemaCoversNodeAndLeaseWrites: every write the chart lets
// vk-fleet make on device Nodes and their Leases is matched by the chart's
// FlowSchema. A verb missing there (the node loop patches Leases) sends
// those requests to workload-low with every controller, where at scale
// Leases starve and Nodes flap NotReady.
func TestFlowSchemaCoversNodeAndLeaseWrites(t *testing.T) {
	rel, err := Render(map[string]any{}, "vk-fleet", "vk-fleet")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := Rules(rel.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	var fs flowcontrolv1.FlowSchema
	for _, doc := range releaseutil.SplitManifests(rel.Manifest) {
		if strings.Contains(doc, "kind: FlowSchema") {
			if err := yaml.Unmarshal([]byte(doc), &fs); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(fs.Spec.Rules) == 0 {
		t.Fatal("the default values render no FlowSchema rules")
	}
	covered := func(group, resource, namespace, verb string) bool {
		for _, pr := range fs.Spec.Rules {
			for _, rr := range pr.ResourceRules {
				if slices.Contains(rr.APIGroups, group) && slices.Contains(rr.Resources, resource) && slices.Contains(rr.Verbs, verb) &&
					(namespace == "" && rr.ClusterScope || namespace != "" && slices.Contains(rr.Namespaces, namespace)) {
					return true
				}
			}
		}
		return false
	}
	checked := 0
	for _, r := range rules {
		var who, gr, verb string
		if n, _ := fmt.Sscanf(r, "Role kube-node-lease: %s %s", &gr, &verb); n == 2 {
			who = "kube-node-lease"
		} else if n, _ := fmt.Sscanf(r, "ClusterRole: %s %s", &gr, &verb); n != 2 || (gr != "/nodes" && gr != "/nodes/status") {
			continue
		}
		if verb != "create" && verb != "update" && verb != "patch" {
			continue
		}
		group, resource, _ := strings.Cut(gr, "/")
		checked++
		if !covered(group, resource, who, verb) {
			t.Errorf("the RBAC rule %q is a device Node or Lease write the FlowSchema %s does not match", r, fs.Name)
		}
	}
	if checked < 4 {
		t.Errorf("checked %d Node and Lease write rules; the parsing above no longer matches Rules()", checked)
	}
}
