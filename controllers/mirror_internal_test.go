package controllers

import (
	"testing"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// A follower follows a server's active database: the cutover of a Copy upgrade
// (status.database set, then set back by a rollback after it) starts it over,
// the same endpoint and database do not.
func TestFollowerKeyFollowsTheActiveDatabase(t *testing.T) {
	ts := &oauthv1alpha1.TokenServer{}
	ts.Namespace, ts.Name, ts.Status.AdminEndpoint = "platform", "auth", "https://auth-admin.platform.svc:4445"
	before := followerKey(ts)
	if again := followerKey(ts.DeepCopy()); again != before {
		t.Errorf("the same server: %q then %q", before, again)
	}
	ts.Status.Database = &oauthv1alpha1.DatabaseRef{SecretName: "auth-1a2b3c4d-db", Key: "dsn"}
	cut := followerKey(ts)
	if cut == before {
		t.Errorf("after the cutover the key is still %q", cut)
	}
	ts.Status.Database = nil
	if back := followerKey(ts); back != before {
		t.Errorf("after a cut back: %q; want %q", back, before)
	}
}
