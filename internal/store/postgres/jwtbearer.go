package postgres

import "encoding/json"

// GetJWTBearer is the client's JWT bearer trust (oauth.JWTBearerClient); the assertion
// IDs it sees are kept with client assertions' (SetClientAssertionJWT).
func (c *Client) GetJWTBearer() json.RawMessage { return c.JWTBearer }

// SkipsConsent is the client's first-party standing (oauth.JWTBearerClient).
func (c *Client) SkipsConsent() bool { return c.SkipConsent }
