// Package smoke proves that the local test cluster (tests/cluster/cluster.sh) is a real
// Kubernetes control plane: the scheduler binds GPU pods, KWOK runs them with loopback pod IPs,
// the garbage collector deletes owned pods, CRDs and Leases work.
//
// Run against a running cluster:  tests/cluster/cluster.sh smoke
// or in one go:                   tests/cluster/cluster.sh run -- tests/cluster/cluster.sh smoke
// The tests skip when KUBECONFIG is unset.
package smoke

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	gpuResource = corev1.ResourceName("nvidia.com/gpu")
	// An image reference nobody pulls: KWOK only pretends to run containers.
	fakeImage = "smoke.invalid/workstation:none"
	// Per-pod start delay annotation understood by tests/cluster/stages.yaml.
	startDelayAnnotation = "test.cadbroker.io/start-delay"
	poll                 = 100 * time.Millisecond
)

var loopback = &net.IPNet{IP: net.IPv4(127, 0, 0, 0), Mask: net.CIDRMask(8, 32)}

type env struct {
	cfg *rest.Config
	cs  *kubernetes.Clientset
	ns  string
}

func setup(t *testing.T) *env {
	t.Helper()
	path := os.Getenv("KUBECONFIG")
	if path == "" {
		t.Skip("KUBECONFIG not set: start the cluster with tests/cluster/cluster.sh up")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("kubeconfig %s: %v", path, err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	host := cfg.Host
	if !strings.Contains(host, "://127.") {
		t.Fatalf("refusing to run against a non-loopback API server %q", host)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx := t.Context()

	ns := fmt.Sprintf("smoke-%s-%04x", strings.ToLower(strings.TrimPrefix(t.Name(), "Test")), rand.IntN(1<<16))
	if len(ns) > 63 {
		ns = ns[len(ns)-63:]
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { deleteNamespace(t, cs, ns) })
	// Pods are refused until the service account controller has created "default".
	waitFor(t, 30*time.Second, "default service account in "+ns, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, ignoreNotFound(err)
	})
	return &env{cfg: cfg, cs: cs, ns: ns}
}

// deleteNamespace deletes the namespace and waits until it (and so every pod in it) is gone,
// so that the next test finds all GPUs free.
func deleteNamespace(t *testing.T, cs *kubernetes.Clientset, ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete namespace %s: %v", ns, err)
		return
	}
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Errorf("namespace %s not gone after 90s", ns)
	}
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond wait.ConditionWithContextFunc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, poll, true, cond); err != nil {
		t.Fatalf("waiting for %s (%s): %v", what, timeout, err)
	}
}

func gpuPod(name string, gpus int64) *corev1.Pod {
	q := *resource.NewQuantity(gpus, resource.DecimalSI)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "smoke"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  "desktop",
				Image: fakeImage,
				Resources: corev1.ResourceRequirements{
					Limits:   corev1.ResourceList{gpuResource: q},
					Requests: corev1.ResourceList{gpuResource: q},
				},
			}},
		},
	}
}

func (e *env) create(t *testing.T, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	p, err := e.cs.CoreV1().Pods(e.ns).Create(t.Context(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", pod.Name, err)
	}
	return p
}

func (e *env) waitRunning(t *testing.T, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	waitFor(t, timeout, "pod "+name+" Running", func(ctx context.Context) (bool, error) {
		p, err := e.cs.CoreV1().Pods(e.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		pod = p
		return p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "", nil
	})
	return pod
}

func condition(pod *corev1.Pod, typ corev1.PodConditionType) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == typ {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

func (e *env) gpuNodes(t *testing.T) (map[string]*corev1.Node, int64) {
	t.Helper()
	nodes, err := e.cs.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list nodes: %v", err)
	}
	out := map[string]*corev1.Node{}
	var total int64
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if q, ok := n.Status.Allocatable[gpuResource]; ok && q.Value() > 0 {
			out[n.Name] = n
			total += q.Value()
		}
	}
	if len(out) == 0 {
		t.Fatal("no node advertises nvidia.com/gpu")
	}
	return out, total
}

func internalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// (a) A pod asking for one GPU is bound to a GPU node by the scheduler and becomes Running with
// a loopback pod IP from that node's podCIDR.
func TestGPUPodIsScheduledAndRuns(t *testing.T) {
	e := setup(t)
	nodes, _ := e.gpuNodes(t)
	start := time.Now()
	e.create(t, gpuPod("ws-0", 1))
	pod := e.waitRunning(t, "ws-0", 60*time.Second)
	took := time.Since(start)

	node, ok := nodes[pod.Spec.NodeName]
	if !ok {
		t.Fatalf("pod bound to %q, not a GPU node", pod.Spec.NodeName)
	}
	if c := condition(pod, corev1.PodScheduled); c == nil || c.Status != corev1.ConditionTrue {
		t.Fatalf("PodScheduled condition: %+v", c)
	}
	if c := condition(pod, corev1.PodReady); c == nil || c.Status != corev1.ConditionTrue {
		t.Fatalf("Ready condition: %+v", c)
	}
	ip := net.ParseIP(pod.Status.PodIP)
	if ip == nil || !loopback.Contains(ip) {
		t.Fatalf("pod IP %q is not inside 127.0.0.0/8", pod.Status.PodIP)
	}
	_, cidr, err := net.ParseCIDR(node.Spec.PodCIDR)
	if err != nil || !cidr.Contains(ip) {
		t.Fatalf("pod IP %s not in node %s podCIDR %q", ip, node.Name, node.Spec.PodCIDR)
	}
	if pod.Status.HostIP != internalIP(node) || !loopback.Contains(net.ParseIP(pod.Status.HostIP)) {
		t.Fatalf("hostIP %q, node InternalIP %q", pod.Status.HostIP, internalIP(node))
	}
	t.Logf("pod ws-0 -> node %s (%s), pod IP %s, host IP %s, Running after %v",
		node.Name, node.Labels["nvidia.com/gpu.product"], pod.Status.PodIP, pod.Status.HostIP, took.Round(time.Millisecond))
}

// The per-pod start delay annotation: "0s" starts at once, "3s" takes at least 3 s.
func TestPodStartDelayAnnotation(t *testing.T) {
	e := setup(t)
	fast, slow := gpuPod("fast", 0), gpuPod("slow", 0)
	fast.Spec.Containers[0].Resources = corev1.ResourceRequirements{}
	slow.Spec.Containers[0].Resources = corev1.ResourceRequirements{}
	fast.Annotations = map[string]string{startDelayAnnotation: "0s"}
	slow.Annotations = map[string]string{startDelayAnnotation: "3s"}
	start := time.Now()
	e.create(t, fast)
	e.create(t, slow)
	e.waitRunning(t, "fast", 30*time.Second)
	tookFast := time.Since(start)
	e.waitRunning(t, "slow", 30*time.Second)
	tookSlow := time.Since(start)
	if tookSlow < 3*time.Second {
		t.Fatalf("pod with a 3s start delay was Running after %v", tookSlow)
	}
	if tookFast >= tookSlow {
		t.Fatalf("0s pod (%v) not faster than 3s pod (%v)", tookFast, tookSlow)
	}
	t.Logf("Running after: 0s-delay pod %v, 3s-delay pod %v", tookFast.Round(time.Millisecond), tookSlow.Round(time.Millisecond))
}

// (b) With every GPU taken, one more GPU pod stays Pending, Unschedulable; deleting a running
// pod (KWOK's pod-delete stage finishes the deletion) frees a GPU and the pending pod runs.
func TestGPUCapacityIsEnforced(t *testing.T) {
	e := setup(t)
	_, total := e.gpuNodes(t)
	t.Logf("cluster has %d allocatable GPUs", total)
	start := time.Now()
	for i := range total {
		p := gpuPod(fmt.Sprintf("ws-%d", i), 1)
		p.Annotations = map[string]string{startDelayAnnotation: "0s"}
		e.create(t, p)
	}
	waitFor(t, 120*time.Second, fmt.Sprintf("%d GPU pods Running", total), func(ctx context.Context) (bool, error) {
		pods, err := e.cs.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		return int64(running) == total, nil
	})
	t.Logf("%d GPU pods Running after %v", total, time.Since(start).Round(time.Millisecond))

	extra := fmt.Sprintf("ws-%d", total)
	e.create(t, gpuPod(extra, 1))
	var cond *corev1.PodCondition
	waitFor(t, 30*time.Second, extra+" PodScheduled=False", func(ctx context.Context) (bool, error) {
		p, err := e.cs.CoreV1().Pods(e.ns).Get(ctx, extra, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		cond = condition(p, corev1.PodScheduled)
		return cond != nil && cond.Status == corev1.ConditionFalse, nil
	})
	if cond.Reason != corev1.PodReasonUnschedulable {
		t.Fatalf("PodScheduled reason %q, want Unschedulable (%s)", cond.Reason, cond.Message)
	}
	if !strings.Contains(cond.Message, "nvidia.com/gpu") {
		t.Fatalf("unschedulable message does not name nvidia.com/gpu: %s", cond.Message)
	}
	// Stays pending.
	time.Sleep(2 * time.Second)
	if p, _ := e.cs.CoreV1().Pods(e.ns).Get(t.Context(), extra, metav1.GetOptions{}); p.Spec.NodeName != "" || p.Status.Phase != corev1.PodPending {
		t.Fatalf("pod %s got node %q phase %s with no GPU free", extra, p.Spec.NodeName, p.Status.Phase)
	}
	t.Logf("pod %s: PodScheduled=False %s: %s", extra, cond.Reason, cond.Message)

	if err := e.cs.CoreV1().Pods(e.ns).Delete(t.Context(), "ws-0", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete ws-0: %v", err)
	}
	waitFor(t, 30*time.Second, "ws-0 gone", func(ctx context.Context) (bool, error) {
		_, err := e.cs.CoreV1().Pods(e.ns).Get(ctx, "ws-0", metav1.GetOptions{})
		return apierrors.IsNotFound(err), ignoreNotFound(err)
	})
	p := e.waitRunning(t, extra, 60*time.Second)
	t.Logf("after deleting ws-0, %s runs on %s", extra, p.Spec.NodeName)
}

// (c) Deleting an owner deletes the pods it owns (garbage collector in kube-controller-manager).
func TestGarbageCollectorDeletesOwnedPods(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	owner, err := e.cs.CoreV1().ConfigMaps(e.ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "session-owner"},
		Data:       map[string]string{"kind": "session"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create owner: %v", err)
	}
	ref := metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID}
	const n = 3
	for i := range n {
		p := gpuPod(fmt.Sprintf("owned-%d", i), 1)
		p.OwnerReferences = []metav1.OwnerReference{ref}
		e.create(t, p)
	}
	for i := range n {
		e.waitRunning(t, fmt.Sprintf("owned-%d", i), 60*time.Second)
	}
	start := time.Now()
	if err := e.cs.CoreV1().ConfigMaps(e.ns).Delete(ctx, owner.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete owner: %v", err)
	}
	waitFor(t, 60*time.Second, "owned pods garbage collected", func(ctx context.Context) (bool, error) {
		pods, err := e.cs.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(pods.Items) == 0, err
	})
	t.Logf("%d owned pods gone %v after deleting their owner", n, time.Since(start).Round(time.Millisecond))
}

// (d) A CRD is installed, becomes Established, and a custom object can be created and read.
func TestCustomResourceDefinition(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	ext := apiextensionsclient.NewForConfigOrDie(e.cfg)
	group, plural := "smoke.cadbroker.io", fmt.Sprintf("widgets%04x", rand.IntN(1<<16))
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: plural + "." + group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: group,
			Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: plural, Kind: "Widget" + plural[7:], ListKind: "Widget" + plural[7:] + "List"},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1alpha1", Served: true, Storage: true,
				Subresources: &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}},
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"spec": {Type: "object", Required: []string{"pool"}, Properties: map[string]apiextensionsv1.JSONSchemaProps{
							"pool": {Type: "string"},
							"gpus": {Type: "integer", Minimum: ptr(0.0)},
						}},
						"status": {Type: "object", XPreserveUnknownFields: ptr(true)},
					},
				}},
			}},
		},
	}
	if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create CRD: %v", err)
	}
	t.Cleanup(func() {
		_ = ext.ApiextensionsV1().CustomResourceDefinitions().Delete(context.Background(), crd.Name, metav1.DeleteOptions{})
	})
	waitFor(t, 30*time.Second, "CRD Established", func(ctx context.Context) (bool, error) {
		c, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range c.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})

	dyn := dynamic.NewForConfigOrDie(e.cfg)
	gvr := schema.GroupVersionResource{Group: group, Version: "v1alpha1", Resource: plural}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": group + "/v1alpha1",
		"kind":       crd.Spec.Names.Kind,
		"metadata":   map[string]any{"name": "w1"},
		"spec":       map[string]any{"pool": "cad-l40s", "gpus": int64(1)},
	}}
	// The discovery/storage for a fresh CRD can lag Established by a moment: retry NotFound.
	waitFor(t, 15*time.Second, "custom object created", func(ctx context.Context) (bool, error) {
		_, err := dyn.Resource(gvr).Namespace(e.ns).Create(ctx, obj, metav1.CreateOptions{})
		return err == nil, ignoreNotFound(err)
	})
	got, err := dyn.Resource(gvr).Namespace(e.ns).Get(ctx, "w1", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get custom object: %v", err)
	}
	if pool, _, _ := unstructured.NestedString(got.Object, "spec", "pool"); pool != "cad-l40s" {
		t.Fatalf("spec.pool = %q", pool)
	}
	// Schema validation is live: a missing required field is refused.
	bad := obj.DeepCopy()
	bad.SetName("w2")
	unstructured.RemoveNestedField(bad.Object, "spec", "pool")
	if _, err := dyn.Resource(gvr).Namespace(e.ns).Create(ctx, bad, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Fatalf("object without spec.pool: want Invalid, got %v", err)
	}
	// Status subresource.
	if err := unstructured.SetNestedField(got.Object, "Ready", "status", "phase"); err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(gvr).Namespace(e.ns).UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update status: %v", err)
	}
	t.Logf("CRD %s Established; object w1 created, read back, status updated", crd.Name)
}

// (e) A Lease can be taken and renewed with a compare-and-swap on resourceVersion; a writer
// with a stale resourceVersion gets a Conflict.
func TestLeaseTakeAndRenew(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	leases := e.cs.CoordinationV1().Leases(e.ns)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "cadbroker-leader"},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr("replica-a"),
			LeaseDurationSeconds: ptr(int32(15)),
			AcquireTime:          &now,
			RenewTime:            &now,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("take lease: %v", err)
	}
	stale := l.DeepCopy()

	renewed := l.DeepCopy()
	later := metav1.NewMicroTime(time.Now().Add(time.Second).Truncate(time.Microsecond))
	renewed.Spec.RenewTime = &later
	renewed, err = leases.Update(ctx, renewed, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("renew lease: %v", err)
	}
	if renewed.ResourceVersion == l.ResourceVersion {
		t.Fatal("renewal did not change resourceVersion")
	}

	stale.Spec.HolderIdentity = ptr("replica-b")
	if _, err := leases.Update(ctx, stale, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("update with stale resourceVersion: want Conflict, got %v", err)
	}
	got, err := leases.Get(ctx, "cadbroker-leader", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *got.Spec.HolderIdentity != "replica-a" || !got.Spec.RenewTime.Equal(&later) {
		t.Fatalf("lease after renew: holder %q renew %v", *got.Spec.HolderIdentity, got.Spec.RenewTime)
	}
	t.Logf("lease taken (rv %s), renewed (rv %s), stale writer got Conflict", l.ResourceVersion, renewed.ResourceVersion)
}

func ptr[T any](v T) *T { return &v }
