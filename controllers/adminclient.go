package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
)

// errServerNotReady ends a pass that needs a token server that is not Ready yet.
var errServerNotReady = errors.New("token server not ready")

// adminHTTP is shared by every admin API client: bounded, so an unreachable server
// fails a reconcile instead of hanging it.
var adminHTTP = &http.Client{Timeout: 10 * time.Second}

// adminClientFor returns a client of the TokenServer's admin API. External servers
// name their URL and token Secret in spec.external.
func adminClientFor(ctx context.Context, secrets *SecretReader, ts *oauthv1alpha1.TokenServer) (*adminapi.HTTPClient, error) {
	ext := ts.Spec.External
	if ext == nil {
		return nil, fmt.Errorf("%w: the operator does not run bundled token servers yet; use spec.external", errServerNotReady)
	}
	var sec corev1.Secret
	if err := secrets.Get(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: ext.TokenSecretRef.Name}, &sec); err != nil {
		return nil, fmt.Errorf("admin token Secret %s: %w", ext.TokenSecretRef.Name, err)
	}
	key := ext.TokenSecretRef.Key
	if key == "" {
		key = "token"
	}
	token := string(sec.Data[key])
	if token == "" {
		return nil, fmt.Errorf("admin token Secret %s has no key %q", ext.TokenSecretRef.Name, key)
	}
	return &adminapi.HTTPClient{BaseURL: ext.AdminURL, Token: token, HTTP: adminHTTP}, nil
}
