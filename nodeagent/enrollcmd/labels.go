package enrollcmd

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// ErrInvalidLabel is returned for a --label the server would refuse.
var ErrInvalidLabel = errors.New("invalid label")

// Kubernetes' label syntax (k8s.io/apimachinery/pkg/util/validation:
// IsQualifiedName and IsValidLabelValue), restated so that the device
// binary does without apimachinery. The server checks labels again with
// apimachinery itself (registry.ValidateLabels); TestParseLabelsAgreesWithRegistry
// keeps the two in step.
var (
	labelNameRE   = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
	dns1123Domain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

const (
	labelNameMax   = 63
	labelPrefixMax = 253
)

// ParseLabels parses k=v,k=v and checks the result as the server does:
// Kubernetes label syntax, and none of vk-fleet's or Kubernetes' own
// prefixes.
func ParseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return nil, fmt.Errorf("%w: label %q is not key=value", ErrInvalidLabel, kv)
		}
		out[k] = v
	}
	for k, v := range out {
		if err := checkLabel(k, v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func checkLabel(k, v string) error {
	name := k
	if prefix, n, ok := strings.Cut(k, "/"); ok {
		name = n
		if prefix == "" || len(prefix) > labelPrefixMax || !dns1123Domain.MatchString(prefix) {
			return fmt.Errorf("%w: label key %q: the prefix must be a lower-case DNS subdomain of at most %d characters", ErrInvalidLabel, k, labelPrefixMax)
		}
		if reservedPrefix(prefix) {
			return fmt.Errorf("%w: label %q is reserved", ErrInvalidLabel, k)
		}
	} else if k == "type" {
		return fmt.Errorf("%w: label %q is reserved", ErrInvalidLabel, k)
	}
	if len(name) > labelNameMax || !labelNameRE.MatchString(name) {
		return fmt.Errorf("%w: label key %q: the name must be at most %d alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric one", ErrInvalidLabel, k, labelNameMax)
	}
	if v != "" && (len(v) > labelNameMax || !labelNameRE.MatchString(v)) {
		return fmt.Errorf("%w: label %s value %q: it must be empty or at most %d alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric one", ErrInvalidLabel, k, v, labelNameMax)
	}
	return nil
}

// reservedPrefix reports whether a label prefix belongs to vk-fleet or
// Kubernetes.
func reservedPrefix(prefix string) bool {
	return prefix == "vk-fleet.io" || prefix == "kubernetes.io" || prefix == "k8s.io" ||
		strings.HasSuffix(prefix, ".kubernetes.io") || strings.HasSuffix(prefix, ".k8s.io")
}
