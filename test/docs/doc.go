// Package docs tests that the user documentation under docs/ keeps up with the code:
// a reason the operator sets that docs/troubleshooting.md does not explain fails here.
package docs
