package tokenserver

// SetAfterPasswordCheck runs f between a sign-in's password check and the start of
// its session, until the returned function is called.
func SetAfterPasswordCheck(f func()) (restore func()) {
	afterPasswordCheck = f
	return func() { afterPasswordCheck = nil }
}
