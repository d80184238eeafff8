// Package crdschema digests the schemas of a CustomResourceDefinition, so that the
// operator can tell whether the CRD the API server serves is the one it was built
// with: a CRD older than the operator makes the API server silently drop the fields
// it lacks, from users' specs and from the status the operator writes.
package crdschema

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// Digest is a SHA-256 over each version's name and openAPIV3Schema, of a CRD as
// unstructured JSON (a file's, or the API server's: both decode to the same values,
// and encoding/json orders map keys). Printer columns and the rest of the CRD are left
// out: they do not change what the API server keeps of an object.
func Digest(crd map[string]any) (string, error) {
	spec, _ := crd["spec"].(map[string]any)
	versions, _ := spec["versions"].([]any)
	if len(versions) == 0 {
		return "", errors.New("no spec.versions")
	}
	var schemas []any
	for _, v := range versions {
		v, _ := v.(map[string]any)
		schema, _ := v["schema"].(map[string]any)
		schemas = append(schemas, map[string]any{"name": v["name"], "openAPIV3Schema": schema["openAPIV3Schema"]})
	}
	// Numbers decode as int64 from the API server and as float64 from a file:
	// through JSON once they are all float64.
	data, err := json.Marshal(schemas)
	if err != nil {
		return "", err
	}
	var canonical any
	if err := json.Unmarshal(data, &canonical); err != nil {
		return "", err
	}
	if data, err = json.Marshal(canonical); err != nil {
		return "", fmt.Errorf("canonical schema: %w", err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}
