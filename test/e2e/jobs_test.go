package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func devicePodTemplate(node string, policy corev1.RestartPolicy, script string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		RestartPolicy:                 policy,
		NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
		Tolerations:                   []corev1.Toleration{deviceToleration},
		TerminationGracePeriodSeconds: int64p(1),
		Volumes:                       []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		Containers: []corev1.Container{{Name: "task", Image: cluster.Image, Command: []string{"sh", "-c", script},
			VolumeMounts: []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}}},
	}}
}

func jobCondition(j *batchv1.Job) string {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return string(c.Type) + "/" + c.Reason
		}
	}
	return ""
}

// Jobs and CronJobs on a device finish as on a kubelet: the Job controller
// sees Succeeded and Failed pods, OnFailure restarts the container on the
// device, backoffLimit ends a failing Job.
func TestJobsAndCronJobs(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ns := createNamespace(t, "jobs")
	jobs := cluster.Client.BatchV1().Jobs(ns)
	mk := func(name string, backoff int32, policy corev1.RestartPolicy, script string) {
		j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: batchv1.JobSpec{
			BackoffLimit: &backoff, Template: devicePodTemplate(devA, policy, script)}}
		if _, err := jobs.Create(t.Context(), j, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mk("succeeds", 0, corev1.RestartPolicyNever, "echo done")
	// Fails once, then succeeds: the container restarts on the device.
	mk("retries", 2, corev1.RestartPolicyOnFailure, "test -f /scratch/tried || { touch /scratch/tried; exit 1; }")
	mk("fails", 1, corev1.RestartPolicyNever, "exit 1")
	cron := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "every-minute"}, Spec: batchv1.CronJobSpec{
		Schedule: "* * * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: devicePodTemplate(devA, corev1.RestartPolicyNever, "echo tick")}}}}
	if _, err := cluster.Client.BatchV1().CronJobs(ns).Create(t.Context(), cron, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"succeeds": "Complete/", "retries": "Complete/", "fails": "Failed/BackoffLimitExceeded"}
	eventually(t, 3*time.Minute, "the Jobs finished as expected", func(ctx context.Context) (bool, string) {
		got := map[string]string{}
		list, err := jobs.List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		cronDone := false
		for _, j := range list.Items {
			got[j.Name] = jobCondition(&j)
			for _, o := range j.OwnerReferences {
				if o.Name == "every-minute" && got[j.Name] != "" && got[j.Name][:8] == "Complete" {
					cronDone = true
				}
			}
		}
		for name, cond := range want {
			if len(got[name]) < len(cond) || got[name][:len(cond)] != cond {
				return false, fmt.Sprint(got)
			}
		}
		return cronDone, fmt.Sprintf("%v (a CronJob run completed: %v)", got, cronDone)
	})
	// The retried Job's pod restarted its container once, on the device.
	pods, err := cluster.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "job-name=retries"})
	if err != nil || len(pods.Items) != 1 || pods.Items[0].Status.ContainerStatuses[0].RestartCount != 1 {
		t.Errorf("the retried Job's pods: %v, %v", podSummary(pods), err)
	}
}

func podSummary(pods *corev1.PodList) string {
	if pods == nil {
		return "none"
	}
	s := ""
	for _, p := range pods.Items {
		s += fmt.Sprintf("%s %s", p.Name, p.Status.Phase)
		for _, c := range p.Status.ContainerStatuses {
			s += fmt.Sprintf(" %s restarts=%d;", c.Name, c.RestartCount)
		}
	}
	return s
}
