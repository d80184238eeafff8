// Package version holds the version of the build, set when linking:
//
//	go build -ldflags "-X github.com/kubeoauth/kubeoauth/internal/version.Version=v1.2.0" ./cmd/tokenserver
//
// The token server reports it on every response and as a metric, so that an upgrade
// (and its tests) can see which version answered.
package version

// Version is "dev" unless the build sets it.
var Version = "dev"
