// Package statuspage serves the host's status page: plain HTML, JavaScript
// and CSS embedded in the binary (no build step), reading the gateway's
// JSON endpoints and its WebSocket for a live event tail.
package statuspage
