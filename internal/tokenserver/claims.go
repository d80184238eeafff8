package tokenserver

// standardScopeDescriptions are the consent page's words for the scopes that share
// the user's attributes, when the TokenServer's scopeDescriptions give none: the user
// should see plainly what an app will learn about them.
var standardScopeDescriptions = map[string]string{
	"profile": "See your name and username",
	"email":   "See your email address",
	"groups":  "See the groups you belong to",
}
