package controllers

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	neturl "net/url"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/adminpki"
	"github.com/kubeoauth/kubeoauth/internal/resources"
)

// errServerNotReady ends a pass that needs a token server that is not Ready yet.
var errServerNotReady = errors.New("token server not ready")

// adminClientFor returns a client of the TokenServer's admin API: for an external
// server the URL, token Secret and optional CA bundle in spec.external, dialled
// through netguard (the URL is whatever the TokenServer's author wrote); for a
// bundled one a ready pod behind its admin Service, over TLS trusting only the CA
// the operator made for that server, and the token Secret the operator generated.
func adminClientFor(ctx context.Context, secrets *SecretReader, ts *oauthv1alpha1.TokenServer) (*adminapi.HTTPClient, error) {
	var url, secretName, key, serverName, field string
	var caPEM []byte
	guard := &secrets.ExternalAdmin
	if ext := ts.Spec.External; ext != nil {
		// #nosec G101 -- a field path for the error message, not a credential
		url, secretName, key, field = ext.AdminURL, ext.TokenSecretRef.Name, ext.TokenSecretRef.Key, " (spec.external.tokenSecretRef)"
		// The CRD refuses this for new objects; one stored before that rule is refused
		// here, before the token is sent anywhere.
		if insecureAdminURL(ext) && !ext.Insecure {
			return nil, errors.New("spec.external.adminURL is http: the admin bearer token would cross the network in " +
				"clear text; use https, or set spec.external.insecure: true to accept that")
		}
		if key == "" {
			key = "token"
		}
		if ref := ext.CASecretRef; ref != nil {
			caKey := ref.Key
			if caKey == "" {
				caKey = resources.KeyCACert
			}
			var ca corev1.Secret
			if err := secrets.Get(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: ref.Name}, &ca); err != nil {
				return nil, fmt.Errorf("CA Secret %s (spec.external.caSecretRef): %w", ref.Name, err)
			}
			if caPEM = ca.Data[caKey]; len(caPEM) == 0 {
				return nil, fmt.Errorf("CA Secret %s (spec.external.caSecretRef) has no key %q", ref.Name, caKey)
			}
		}
	} else {
		var err error
		if url, err = readyAdminURL(ctx, secrets.cache, ts); err != nil {
			return nil, err
		}
		secretName, key = resources.AdminObjectName(ts), resources.KeyAdminToken
		// Pod addresses are cluster-internal by nature: no guard, the pinned CA and
		// the Service's name are what make sure the token reaches our server.
		guard, serverName = nil, resources.AdminServerName(ts)
		var tlsSec corev1.Secret
		if err := secrets.Get(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: resources.AdminTLSSecretName(ts)}, &tlsSec); err != nil {
			return nil, fmt.Errorf("admin TLS Secret %s: %w", resources.AdminTLSSecretName(ts), err)
		}
		if caPEM = tlsSec.Data[resources.KeyCACert]; len(caPEM) == 0 {
			return nil, fmt.Errorf("admin TLS Secret %s has no key %s", resources.AdminTLSSecretName(ts), resources.KeyCACert)
		}
	}
	hc, err := secrets.httpClient(caPEM, serverName, guard)
	if err != nil {
		return nil, err
	}
	var sec corev1.Secret
	if err := secrets.Get(ctx, types.NamespacedName{Namespace: ts.Namespace, Name: secretName}, &sec); err != nil {
		return nil, fmt.Errorf("admin token Secret %s%s: %w", secretName, field, err)
	}
	token := string(sec.Data[key])
	if token == "" {
		return nil, fmt.Errorf("admin token Secret %s%s has no key %q", secretName, field, key)
	}
	return &adminapi.HTTPClient{BaseURL: url, Token: token, HTTP: hc}, nil
}

// insecureAdminURL says whether the external admin API is reached without TLS.
func insecureAdminURL(ext *oauthv1alpha1.ExternalTokenServer) bool {
	u, err := neturl.Parse(ext.AdminURL)
	return err == nil && strings.EqualFold(u.Scheme, "http")
}

func adminPool(caPEM []byte) (*x509.CertPool, error) {
	pool, err := adminpki.Pool(caPEM)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	return pool, nil
}
