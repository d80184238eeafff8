package controllers_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// tlsProxy serves TLS with cert and forwards the clear text to target: a token
// server pod with the admin certificate it was given (or an impostor with another).
// accepted counts the connections made to it.
type tlsProxy struct {
	addr     string
	accepted atomic.Int32
}

func newTLSProxy(t *testing.T, host, target string, cert tls.Certificate) *tlsProxy {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	p := &tlsProxy{addr: ln.Addr().String()}
	tln := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	go func() {
		for {
			c, err := tln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
			go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
		}
	}()
	return p
}

// waitConditionMessage waits until obj's condition's message contains part.
func waitConditionMessage(t *testing.T, obj client.Object, condType, part string) {
	t.Helper()
	var last []metav1.Condition
	eventually(t, 20*time.Second, obj.GetName()+": "+condType+" saying "+part, func() bool {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return false
		}
		last = conditionsOf(obj)
		for _, c := range last {
			if c.Type == condType && strings.Contains(c.Message, part) {
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("conditions: %+v", last) })
}
