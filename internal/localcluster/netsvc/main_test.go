package netsvc

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// clientset talks to a real kube-apiserver (envtest). It runs no controllers: the
// tests write EndpointSlices themselves, as the EndpointSlice controller would.
var clientset kubernetes.Interface

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	env, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
		}
	}()
	clientset = kubernetes.NewForConfigOrDie(env.Config)
	return m.Run()
}

// namespace creates a namespace for one test. envtest runs no namespace controller, so
// deleting it leaves its objects behind until the control plane stops; the names are
// unique, so tests do not see each other's objects.
func namespace(t *testing.T) string {
	t.Helper()
	ns, err := clientset.CoreV1().Namespaces().Create(t.Context(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "netsvc-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = clientset.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	return ns.Name
}

func createService(t *testing.T, svc *corev1.Service) *corev1.Service {
	t.Helper()
	out, err := clientset.CoreV1().Services(svc.Namespace).Create(t.Context(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func createSlice(t *testing.T, s *discoveryv1.EndpointSlice) {
	t.Helper()
	if _, err := clientset.DiscoveryV1().EndpointSlices(s.Namespace).Create(t.Context(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// slice builds an IPv4 EndpointSlice of service, labelled as the EndpointSlice
// controller labels them.
func slice(namespace, name, service string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: service},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       ports,
		Endpoints:   eps,
	}
}

// ep is an endpoint at addr; ready nil leaves the condition unknown.
func ep(addr string, ready *bool, hostname string) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
	if hostname != "" {
		e.Hostname = ptr.To(hostname)
	}
	return e
}

func port(name string, number int32) discoveryv1.EndpointPort {
	p := discoveryv1.EndpointPort{Port: ptr.To(number), Protocol: ptr.To(corev1.ProtocolTCP)}
	if name != "" {
		p.Name = ptr.To(name)
	}
	return p
}

// setReady sets the ready condition of the slice's endpoints at the given addresses,
// as the EndpointSlice controller does when a pod's readiness changes.
func setReady(t *testing.T, namespace, name string, ready map[string]bool) {
	t.Helper()
	slices := clientset.DiscoveryV1().EndpointSlices(namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		s, err := slices.Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for i, e := range s.Endpoints {
			if r, ok := ready[e.Addresses[0]]; ok {
				s.Endpoints[i].Conditions.Ready = ptr.To(r)
			}
		}
		_, err = slices.Update(t.Context(), s, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// eventually polls check until it returns nil, for up to five seconds: the servers see
// changes through informers, a moment after the API server has them.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 5s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wait waits for a server's result after it was told to stop, failing the test if it
// does not stop promptly or stops with an error.
func wait(t *testing.T, what string, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("%s did not return within 10s of its context ending", what)
	}
}

// hostIP is an address of this machine an EndpointSlice may hold, for the test servers.
func hostIP(t *testing.T) string {
	t.Helper()
	ip, err := testenv.HostIP()
	if err != nil {
		t.Fatal(err)
	}
	return ip
}
