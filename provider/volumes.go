package provider

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// defaultFileMode is the mode of a volume file when neither the volume's
// defaultMode nor the item's mode says otherwise (the API server's default).
const defaultFileMode = 0o644

// serviceAccountVolumePrefix names the projected volume the API server's
// ServiceAccount admission adds to every pod ("kube-api-access-xxxxx").
const serviceAccountVolumePrefix = "kube-api-access-"

// fileSet is the content of a Files volume being built.
type fileSet struct {
	files map[string][]byte
	modes map[string]int32
}

func newFileSet() *fileSet { return &fileSet{files: map[string][]byte{}} }

func (f *fileSet) add(name string, data []byte, mode int32) {
	f.files[name] = data
	if mode != defaultFileMode {
		if f.modes == nil {
			f.modes = map[string]int32{}
		}
		f.modes[name] = mode
	} else {
		delete(f.modes, name)
	}
}

// fileMode returns the mode of an item: its own, else the volume's
// default, else 0644.
func fileMode(item, volume *int32) int32 {
	switch {
	case item != nil:
		return *item & 0o777
	case volume != nil:
		return *volume & 0o777
	}
	return defaultFileMode
}

// translateVolume turns pod volume v into what the device provides. A nil
// volume with skip set means the volume and its mounts are left out on
// purpose; a nil volume without skip was refused (through refuse) or is
// pending (err, retried).
func (p *Provider) translateVolume(ctx context.Context, pod *corev1.Pod, v *corev1.Volume, refuse, ignore func(string, ...any)) (bv *bridge.Volume, skip bool, pending error) {
	out := &bridge.Volume{Name: v.Name}
	fs := newFileSet()
	wrap := func(err error) error {
		if errors.Is(err, errInvalidSpec) {
			refuse("volume %q: %v", v.Name, err)
			return nil
		}
		return fmt.Errorf("volume %q: %w", v.Name, err)
	}
	var err error
	switch {
	case v.EmptyDir != nil:
		out.EmptyDir = true
		switch v.EmptyDir.Medium {
		case corev1.StorageMediumDefault:
			if l := v.EmptyDir.SizeLimit; l != nil && !l.IsZero() {
				ignore("volume %q: emptyDir sizeLimit %s is not enforced on the device's disk (no eviction when exceeded; use medium: Memory for a hard limit)", v.Name, l.String())
			}
		case corev1.StorageMediumMemory:
			out.Medium = bridge.MediumMemory
			out.SizeLimitBytes = memoryVolumeSize(pod, v.EmptyDir.SizeLimit)
		default:
			refuse("volume %q: emptyDir medium %q is not supported on devices (only the default and Memory)", v.Name, v.EmptyDir.Medium)
			return nil, false, nil
		}
		return out, false, nil
	case v.HostPath != nil:
		out.HostPath = v.HostPath.Path
		return out, false, nil
	case v.Image != nil:
		if dv := p.deviceProtocol(pod.Spec.NodeName); dv > 0 && dv < imageVolumeProtocol {
			refuse("volume %q: the device's agent is too old for image volumes (protocol %d, needs %d): upgrade its device-agent", v.Name, dv, imageVolumeProtocol)
			return nil, false, nil
		}
		out.Image = &bridge.ImageVolume{Reference: v.Image.Reference, PullPolicy: string(v.Image.PullPolicy)}
		return out, false, nil
	case v.ConfigMap != nil:
		err = p.addConfigMap(ctx, pod.Namespace, fs, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.DefaultMode, v.ConfigMap.Optional)
	case v.Secret != nil:
		err = p.addSecret(ctx, pod.Namespace, fs, v.Secret.SecretName, v.Secret.Items, v.Secret.DefaultMode, v.Secret.Optional)
	case v.DownwardAPI != nil:
		err = p.addDownwardAPI(pod, fs, v.DownwardAPI.Items, v.DownwardAPI.DefaultMode)
	case v.Projected != nil:
		if isServiceAccountVolume(v.Projected) {
			if strings.HasPrefix(v.Name, serviceAccountVolumePrefix) {
				// The API server's own token volume: devices do not talk
				// to the API server, so it is left out on purpose.
				return nil, true, nil
			}
			refuse("volume %q: serviceAccountToken projections are not supported: devices do not reach the API server, and vk-fleet does not mint tokens for them", v.Name)
			return nil, false, nil
		}
		for i, src := range v.Projected.Sources {
			switch {
			case src.ConfigMap != nil:
				err = p.addConfigMap(ctx, pod.Namespace, fs, src.ConfigMap.Name, src.ConfigMap.Items, v.Projected.DefaultMode, src.ConfigMap.Optional)
			case src.Secret != nil:
				err = p.addSecret(ctx, pod.Namespace, fs, src.Secret.Name, src.Secret.Items, v.Projected.DefaultMode, src.Secret.Optional)
			case src.DownwardAPI != nil:
				err = p.addDownwardAPI(pod, fs, src.DownwardAPI.Items, v.Projected.DefaultMode)
			default:
				refuse("volume %q: projected source %d: only configMap, secret and downwardAPI sources are supported on devices", v.Name, i)
				return nil, false, nil
			}
			if err != nil {
				break
			}
		}
	default:
		refuse("volume %q: only emptyDir, hostPath, configMap, secret, downwardAPI, projected and image volumes are supported", v.Name)
		return nil, false, nil
	}
	if err != nil {
		return nil, false, wrap(err)
	}
	out.Files, out.FileModes = fs.files, fs.modes
	return out, false, nil
}

// memoryVolumeSize is the tmpfs size of a Memory emptyDir, as kubelet
// sizes it: the smaller of its sizeLimit and the pod's memory limit (when
// every container has one); 0 leaves the kernel's default (half the RAM).
func memoryVolumeSize(pod *corev1.Pod, sizeLimit *resource.Quantity) int64 {
	var size int64
	if sizeLimit != nil && !sizeLimit.IsZero() {
		size = sizeLimit.Value()
	}
	var podLimit int64
	for _, c := range pod.Spec.Containers {
		q, ok := c.Resources.Limits[corev1.ResourceMemory]
		if !ok {
			return size
		}
		podLimit += q.Value()
	}
	if podLimit > 0 && (size == 0 || podLimit < size) {
		size = podLimit
	}
	return size
}

func optional(b *bool) bool { return b != nil && *b }

// addConfigMap adds the keys of ConfigMap ns/name to fs. A missing
// optional ConfigMap adds nothing, as does a missing key of an optional one.
func (p *Provider) addConfigMap(ctx context.Context, ns string, fs *fileSet, name string, items []corev1.KeyToPath, defaultMode *int32, opt *bool) error {
	var cm *corev1.ConfigMap
	var err error
	if p.cmLister != nil {
		cm, err = p.cmLister.ConfigMaps(ns).Get(name)
	} else {
		cm, err = p.cfg.Client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		// Only a ConfigMap that does not exist counts as absent: a failed
		// read must not empty an optional volume.
		if apierrors.IsNotFound(err) && optional(opt) {
			return nil
		}
		return fmt.Errorf("configmap %q: %w", name, err)
	}
	data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, s := range cm.Data {
		data[k] = []byte(s)
	}
	for k, b := range cm.BinaryData {
		data[k] = b
	}
	if err := addItems(fs, data, items, defaultMode, optional(opt)); err != nil {
		return fmt.Errorf("configmap %q: %w", name, err)
	}
	return nil
}

// addSecret adds the keys of Secret ns/name to fs, as addConfigMap does.
func (p *Provider) addSecret(ctx context.Context, ns string, fs *fileSet, name string, items []corev1.KeyToPath, defaultMode *int32, opt *bool) error {
	var s *corev1.Secret
	var err error
	if p.secretLister != nil {
		s, err = p.secretLister.Secrets(ns).Get(name)
	} else {
		s, err = p.cfg.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		if apierrors.IsNotFound(err) && optional(opt) {
			return nil
		}
		return fmt.Errorf("secret %q: %w", name, err)
	}
	if err := addItems(fs, s.Data, items, defaultMode, optional(opt)); err != nil {
		return fmt.Errorf("secret %q: %w", name, err)
	}
	return nil
}

// addItems applies a volume's items list: without items every key is a
// file; with items only those keys, at their paths and modes. A missing key
// is an error unless the source is optional.
func addItems(fs *fileSet, data map[string][]byte, items []corev1.KeyToPath, defaultMode *int32, optional bool) error {
	if len(items) == 0 {
		for k, b := range data {
			fs.add(k, b, fileMode(nil, defaultMode))
		}
		return nil
	}
	for _, it := range items {
		clean, err := cleanVolumePath(it.Path)
		if err != nil {
			return err
		}
		b, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return fmt.Errorf("key %q not found", it.Key)
		}
		fs.add(clean, b, fileMode(it.Mode, defaultMode))
	}
	return nil
}

// cleanVolumePath checks an item path: relative, inside the volume, not
// starting with "..".
func cleanVolumePath(p string) (string, error) {
	clean := path.Clean(p)
	if p == "" || path.IsAbs(clean) || clean == "." || strings.HasPrefix(clean, "..") {
		return "", fmt.Errorf("%w: item path %q must be relative, stay inside the volume and not start with \"..\"", errInvalidSpec, p)
	}
	return clean, nil
}

// addDownwardAPI adds the downward API items of pod to fs.
func (p *Provider) addDownwardAPI(pod *corev1.Pod, fs *fileSet, items []corev1.DownwardAPIVolumeFile, defaultMode *int32) error {
	for _, it := range items {
		clean, err := cleanVolumePath(it.Path)
		if err != nil {
			return err
		}
		var val string
		switch {
		case it.FieldRef != nil:
			val, err = podFieldValue(pod, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			val, err = p.resourceFieldValue(pod, it.ResourceFieldRef, "")
		default:
			err = fmt.Errorf("%w: downwardAPI item %q has neither fieldRef nor resourceFieldRef", errInvalidSpec, it.Path)
		}
		if err != nil {
			return err
		}
		fs.add(clean, []byte(val), fileMode(it.Mode, defaultMode))
	}
	return nil
}

// podFieldValue resolves a downward API fieldRef of a volume: the fields a
// kubelet allows there (metadata only).
func podFieldValue(pod *corev1.Pod, fieldPath string) (string, error) {
	if name, key, ok := subscripted(fieldPath); ok {
		switch name {
		case "metadata.labels":
			return pod.Labels[key], nil
		case "metadata.annotations":
			return pod.Annotations[key], nil
		}
	}
	switch fieldPath {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	}
	return "", fmt.Errorf("%w: downward API field %q is not supported in a volume", errInvalidSpec, fieldPath)
}

// subscripted splits "metadata.labels['key']".
func subscripted(fieldPath string) (name, key string, ok bool) {
	i := strings.Index(fieldPath, "['")
	if i < 0 || !strings.HasSuffix(fieldPath, "']") {
		return "", "", false
	}
	return fieldPath[:i], fieldPath[i+2 : len(fieldPath)-2], true
}

// formatMap spells labels or annotations as kubelet writes them: sorted
// key="quoted value" lines.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b []byte
	for _, k := range keys {
		if len(b) > 0 {
			b = append(b, '\n')
		}
		b = append(b, k...)
		b = append(b, '=')
		b = strconv.AppendQuote(b, m[k])
	}
	return string(b)
}

// resourceFieldValue resolves a resourceFieldRef as kubelet does: the
// container's limit, or the Node's allocatable when it has none (here: the
// device's capacity); requests as set. The value is divided by the divisor
// (default 1) and rounded up.
func (p *Provider) resourceFieldValue(pod *corev1.Pod, ref *corev1.ResourceFieldSelector, defaultContainer string) (string, error) {
	name := ref.ContainerName
	if name == "" {
		name = defaultContainer
	}
	var c *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			c = &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			c = &pod.Spec.InitContainers[i]
		}
	}
	if c == nil {
		return "", fmt.Errorf("%w: resourceFieldRef: no container %q", errInvalidSpec, name)
	}
	kind, res, ok := strings.Cut(ref.Resource, ".")
	if !ok || kind != "limits" && kind != "requests" {
		return "", fmt.Errorf("%w: resourceFieldRef: resource %q is not supported", errInvalidSpec, ref.Resource)
	}
	rn := corev1.ResourceName(res)
	var q resource.Quantity
	var set bool
	if kind == "limits" {
		q, set = c.Resources.Limits[rn]
	} else {
		q, set = c.Resources.Requests[rn]
		if !set {
			// The API server defaults requests to limits.
			q, set = c.Resources.Limits[rn]
		}
	}
	if !set && kind == "limits" {
		q, set = p.deviceCapacity(pod.Spec.NodeName, rn)
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	switch rn {
	case corev1.ResourceCPU:
		if !set {
			return "0", nil
		}
		v := int64(math.Ceil(float64(q.MilliValue()) / float64(divisor.MilliValue())))
		return strconv.FormatInt(v, 10), nil
	case corev1.ResourceMemory, corev1.ResourceEphemeralStorage:
		if !set {
			return "0", nil
		}
		v := int64(math.Ceil(float64(q.Value()) / float64(divisor.Value())))
		return strconv.FormatInt(v, 10), nil
	}
	return "", fmt.Errorf("%w: resourceFieldRef: resource %q is not supported on devices", errInvalidSpec, ref.Resource)
}

// deviceCapacity returns the CPU or memory device reported, the stand-in
// for the Node's allocatable of a kubelet.
func (p *Provider) deviceCapacity(device string, rn corev1.ResourceName) (resource.Quantity, bool) {
	p.mu.Lock()
	d := p.devices[device]
	p.mu.Unlock()
	if d == nil {
		return resource.Quantity{}, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.hb == nil {
		return resource.Quantity{}, false
	}
	inv := d.hb.Inventory
	switch {
	case rn == corev1.ResourceCPU && inv.CPUs > 0:
		return *resource.NewQuantity(int64(inv.CPUs), resource.DecimalSI), true
	case rn == corev1.ResourceMemory && inv.MemoryBytes > 0:
		return *resource.NewQuantity(inv.MemoryBytes, resource.BinarySI), true
	}
	return resource.Quantity{}, false
}

// translateMount turns volume mount m of container c into the device's
// mount, expanding subPathExpr from env (the container's resolved env).
func translateMount(m corev1.VolumeMount, env map[string]string) (bridge.Mount, error) {
	bm := bridge.Mount{Volume: m.Name, Path: m.MountPath, ReadOnly: m.ReadOnly}
	sub := m.SubPath
	if m.SubPathExpr != "" {
		if m.SubPath != "" {
			return bm, fmt.Errorf("volume mount %q: subPath and subPathExpr are mutually exclusive", m.Name)
		}
		sub = expandEnv(m.SubPathExpr, env)
	}
	if m.MountPropagation != nil && *m.MountPropagation != corev1.MountPropagationNone {
		return bm, fmt.Errorf("volume mount %q: mountPropagation %s is not supported on devices", m.Name, *m.MountPropagation)
	}
	if m.RecursiveReadOnly != nil && *m.RecursiveReadOnly == corev1.RecursiveReadOnlyEnabled {
		return bm, fmt.Errorf("volume mount %q: recursiveReadOnly Enabled is not supported on devices", m.Name)
	}
	if sub == "" {
		return bm, nil
	}
	if err := checkSubPath(sub); err != nil {
		if m.SubPathExpr != "" {
			// As a kubelet: an expansion that leaves the volume fails
			// the container (CreateContainerConfigError), not the pod.
			// The device checks every subPath as it creates the
			// container and reports that, as it does runAsNonRoot.
			bm.SubPath = sub
			return bm, nil
		}
		return bm, fmt.Errorf("volume mount %q: %w", m.Name, err)
	}
	bm.SubPath = path.Clean(sub)
	return bm, nil
}

// checkSubPath reports whether sub is a relative path inside its volume.
func checkSubPath(sub string) error {
	clean := path.Clean(sub)
	if path.IsAbs(sub) || clean == ".." || strings.HasPrefix(clean, "../") {
		return fmt.Errorf("subPath %q must be a relative path inside the volume", sub)
	}
	for _, seg := range strings.Split(sub, "/") {
		if seg == ".." {
			return fmt.Errorf("subPath %q must not contain '..'", sub)
		}
	}
	return nil
}

// expandEnv expands $(VAR) references as kubelet does for subPathExpr:
// an unknown variable stays as written, $$ is a literal $.
func expandEnv(s string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := env[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// usesVolumes6 names the v6 volume features w uses, or "".
func usesVolumes6(w *bridge.Workload) string {
	var used []string
	for _, v := range w.Volumes {
		if len(v.FileModes) > 0 {
			used = append(used, "volume file modes")
		}
		if v.Medium != "" {
			used = append(used, "emptyDir medium Memory")
		}
	}
	for _, c := range append(append([]bridge.Container(nil), w.InitContainers...), w.Containers...) {
		for _, m := range c.Mounts {
			if m.SubPath != "" {
				used = append(used, "subPath")
			}
		}
	}
	if len(used) == 0 {
		return ""
	}
	return strings.Join(dedupe(used), ", ")
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
