// Package gateway is the HTTP door to the mesh: JSON requests, commands,
// events and describe over plain HTTP, for curl, browsers and the CLI. It is
// a client of the broker like any other caller; it runs no guest code.
package gateway
