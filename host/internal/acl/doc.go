// Package acl decides what a tenant may reach outside itself: calls to other
// tenants' services, and publishing or subscribing on their topics.
//
// A tenant always reaches its own namespace; everything else needs a grant,
// and anything that is not plainly granted is refused (fail closed).
package acl
