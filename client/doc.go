// Package client calls services on the mesh through a broker.Broker: requests
// that end in a result or a typed error by their deadline, commands, events,
// and describe. The CLI, the HTTP gateway and the host's own call import all
// use it, so every caller gets the same deadlines, ids and error mapping.
package client
