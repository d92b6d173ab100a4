package provider

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// Deleting an optional ConfigMap or Secret that a running pod mounts
// re-publishes its workload with the volumes still there and empty (the
// device empties them in place, as kubelet does); the deleted object is
// not read back from the informer's cache.
func TestDeletedOptionalSourceEmptiesTheVolume(t *testing.T) {
	cs := fake.NewClientset(
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cm"}, Data: map[string]string{"data-1": "value-1"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "sec"}, Data: map[string][]byte{"data-1": []byte("value-1")}},
	)
	p, err := New(Config{Client: cs, NATS: startNATS(t), Registry: everyDevice{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := p.openBuckets(ctx); err != nil {
		t.Fatal(err)
	}
	factory := kubeinformers.NewSharedInformerFactory(cs, 0)
	cmInformer, secretInformer := factory.Core().V1().ConfigMaps(), factory.Core().V1().Secrets()
	cmInformer.Informer().AddEventHandler(p.configHandler(ctx, "configmap"))
	secretInformer.Informer().AddEventHandler(p.configHandler(ctx, "secret"))
	p.cmLister, p.secretLister = cmInformer.Lister(), secretInformer.Lister()
	factory.Start(ctx.Done())
	t.Cleanup(factory.Shutdown)
	factory.WaitForCacheSync(ctx.Done())

	opt := ptrTo(true)
	cmRef := corev1.LocalObjectReference{Name: "cm"}
	pod := volumePod([]corev1.Volume{
		{Name: "cm", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: cmRef, Optional: opt}}},
		{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec", Optional: opt}}},
		{Name: "projected", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: cmRef, Optional: opt}},
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Optional: opt,
				Items: []corev1.KeyToPath{{Key: "data-1", Path: "secret/data-1"}}}},
		}}}},
	}, []corev1.VolumeMount{{Name: "cm", MountPath: "/cm"}, {Name: "sec", MountPath: "/sec"}, {Name: "projected", MountPath: "/p"}})
	if err := p.syncPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	key := bridge.PodKey(pod.Spec.NodeName, string(pod.UID))
	published := func() []bridge.Volume {
		t.Helper()
		e, err := p.workloads.Get(ctx, key)
		if err != nil {
			t.Fatalf("reading the workload: %v", err)
		}
		w, err := bridge.Decode[bridge.Workload](e.Value())
		if err != nil {
			t.Fatal(err)
		}
		return w.Volumes
	}
	if v := published(); len(v) != 3 || len(v[0].Files) != 1 || len(v[1].Files) != 1 || len(v[2].Files) != 2 {
		t.Fatalf("before the deletion: %+v", v)
	}

	if err := cs.CoreV1().ConfigMaps("ns").Delete(ctx, "cm", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().Secrets("ns").Delete(ctx, "sec", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "the workload's three volumes published empty after the deletions", func() bool {
		vols := published()
		empty := len(vols) == 3
		for _, v := range vols {
			empty = empty && v.IsFiles() && len(v.Files) == 0
		}
		return empty
	})
}
