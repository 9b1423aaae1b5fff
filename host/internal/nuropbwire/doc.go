// Package nuropbwire translates NuroPb's JSON wire protocol 0.1.1 to and from
// nuropb envelopes, so that a NuroPb client can call a service a host serves.
//
// A NuroPb message is recognised by its nuropb_protocol header or its
// application/json content type (Is). Decode turns a request, command or
// event into an abi.Envelope with params converted JSON -> CBOR by the
// service's codec (so the same size, depth and count limits apply);
// Response turns the envelope the host answers with into the JSON response a
// NuroPb client waits for. Payload encryption is not supported: an
// encrypted message is refused as bad_request (NuropbValidationError).
package nuropbwire
