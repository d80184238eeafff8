//go:build crashloop

// The crashloop build is a token server that never becomes ready: `serve` exits
// non-zero a second after it starts, before it listens, as a broken release would.
// Its migrate commands work, so an upgrade to it gets as far as deploying it.
// docs/upgrades.md, "Test builds".

package main

import (
	"errors"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/version"
)

func init() {
	version.Version += "-crashloop"
	variant.beforeServe = func() error {
		time.Sleep(time.Second)
		return errors.New("crashloop test build: exiting before it is ready")
	}
}
