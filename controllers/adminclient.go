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
	"github.com/kubeoauth/kubeoauth/internal/resources"
)

// errServerNotReady ends a pass that needs a token server that is not Ready yet.
var errServerNotReady = errors.New("token server not ready")

// adminHTTP is shared by every admin API client: bounded, so an unreachable server
// fails a reconcile instead of hanging it.
var adminHTTP = &http.Client{Timeout: 10 * time.Second}

// adminClientFor returns a client of the TokenServer's admin API: for an external
// server the URL and token Secret in spec.external; for a bundled one a ready pod
// behind its admin Service and the token Secret the operator generated.
func adminClientFor(ctx context.Context, secrets *SecretReader, ts *oauthv1alpha1.TokenServer) (*adminapi.HTTPClient, error) {
	var url, secretName, key string
	if ext := ts.Spec.External; ext != nil {
		url, secretName, key = ext.AdminURL, ext.TokenSecretRef.Name, ext.TokenSecretRef.Key
		if key == "" {
			key = "token"
		}
	} else {
		var err error
		if url, err = readyAdminURL(ctx, secrets.cache, ts); err != nil {
			return nil, err
		}
		secretName, key = resources.AdminObjects(ts), resources.KeyAdminToken
	}
	var sec corev1.Secret
	if err := secrets.Get(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: secretName}, &sec); err != nil {
		return nil, fmt.Errorf("admin token Secret %s: %w", secretName, err)
	}
	token := string(sec.Data[key])
	if token == "" {
		return nil, fmt.Errorf("admin token Secret %s has no key %q", secretName, key)
	}
	return &adminapi.HTTPClient{BaseURL: url, Token: token, HTTP: adminHTTP}, nil
}
