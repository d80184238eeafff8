//go:build errors

// The errors build is a token server that answers 500 to a share of token requests,
// KUBEOAUTH_TEST_ERROR_RATE (0 to 1, default 0.5), counted in its metrics like any
// other 5xx: an upgrade to it must fail its analysis and roll back.
// docs/upgrades.md, "Test builds".

package main

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"

	"github.com/kubeoauth/kubeoauth/internal/version"
)

func init() {
	version.Version += "-errors"
	rate := 0.5
	variant.beforeServe = func() error {
		if v, ok := os.LookupEnv("KUBEOAUTH_TEST_ERROR_RATE"); ok {
			r, err := strconv.ParseFloat(v, 64)
			if err != nil || r < 0 || r > 1 {
				return fmt.Errorf("KUBEOAUTH_TEST_ERROR_RATE=%q: want a number from 0 to 1", v)
			}
			rate = r
		}
		return nil
	}
	variant.tokenMiddleware = func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if rand.Float64() < rate { // #nosec G404 -- a test fault, not a secret
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusInternalServerError)
				_, _ = w.Write([]byte(`{"error":"server_error","error_description":"errors test build"}` + "\n"))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
