// Package wire reads and writes the skeleton of an ABI v1 envelope without
// reflection, so the guest SDK's hot path allocates almost nothing.
//
// Parsing yields views into the frame (no copies); params, context, event,
// result and error stay raw CBOR for the abi codec to decode when needed. The
// reader is bounded like abi.Codec (frame size, depth, element counts,
// duplicate envelope keys, no indefinite lengths) and never panics on bad
// input; the fuzz test holds it to agreeing with abi.Codec.
package wire
