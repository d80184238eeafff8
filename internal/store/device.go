package store

import "errors"

// The answers of a device-code poll (RFC 8628 section 3.5) that are not tokens. The
// store decides them, under the row's lock, so that replicas agree on the interval a
// device must keep and on whether the user has decided.
var (
	// ErrDevicePending: the user has not decided yet (authorization_pending).
	ErrDevicePending = errors.New("the user has not decided yet")
	// ErrDeviceSlowDown: the device polled sooner than its interval allows; the
	// interval has grown by DeviceSlowDownStep (slow_down).
	ErrDeviceSlowDown = errors.New("polled faster than the interval")
	// ErrDeviceDenied: the user refused (access_denied).
	ErrDeviceDenied = errors.New("the user refused")
	// ErrDeviceExpired: the device code expired before it was used (expired_token).
	ErrDeviceExpired = errors.New("the device code expired")
)

// DeviceSlowDownStep is how much a device's polling interval grows each time it
// polls too fast (RFC 8628 section 3.5: "increased by 5 seconds").
const DeviceSlowDownStep = 5

// ErrUserCodeTaken: a new device authorization drew a user code another pending one
// holds; the caller draws again.
var ErrUserCodeTaken = errors.New("the user code is taken")
