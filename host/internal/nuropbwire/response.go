package nuropbwire

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/client"
)

// errorNames maps nuropb's error codes to the NuroPb exception classes a
// NuroPb client knows, so that its error handling keeps working.
var errorNames = map[abi.ErrorCode]string{
	abi.CodeNotFound:          "NuropbNotDeliveredError",
	abi.CodeMethodNotFound:    "NuropbHandlingError",
	abi.CodeBadRequest:        "NuropbValidationError",
	abi.CodeTimeout:           "NuropbTimeoutError",
	abi.CodeTrapped:           "NuropbHandlingError",
	abi.CodeResourceExhausted: "NuropbHandlingError",
	abi.CodeForbidden:         "NuropbAuthorizationError",
	abi.CodeUnavailable:       "NuropbTransportError",
	abi.CodeInternal:          "NuropbException",
	abi.CodeHandler:           "NuropbHandlingError",
}

// ErrorName returns the NuroPb exception class name for a nuropb error code;
// an unknown code is NuroPb's base class, as ABI v1 treats it as internal.
func ErrorName(code abi.ErrorCode) string {
	if n, ok := errorNames[code]; ok {
		return n
	}
	return "NuropbException"
}

// Error is NuroPb's error object. Code and Details are nuropb's additions:
// several nuropb codes share one NuroPb class name, and NuroPb lost the
// remote error's kind (its defect 7); a NuroPb client ignores unknown keys.
type Error struct {
	Error       string         `json:"error"`
	Description string         `json:"description"`
	Code        abi.ErrorCode  `json:"code"`
	Details     map[string]any `json:"details,omitempty"`
}

// ToError converts an envelope error to NuroPb's shape.
func ToError(e *abi.Error) *Error {
	if e == nil {
		return nil
	}
	out := &Error{Error: ErrorName(e.Code), Description: e.Message, Code: e.Code}
	if out.Description == "" {
		out.Description = string(e.Code)
	}
	if len(e.Details) > 0 {
		if d, ok := abi.ToJSONValue(e.Details).(map[string]any); ok {
			out.Details = d
		}
	}
	return out
}

// response is NuroPb's response body.
type response struct {
	Tag           string          `json:"tag"`
	CorrelationID string          `json:"correlation_id"`
	Context       json.RawMessage `json:"context"`
	TraceID       *string         `json:"trace_id"`
	Result        json.RawMessage `json:"result"`
	Error         *Error          `json:"error"`
	Warning       *string         `json:"warning"`
	ReplyTo       string          `json:"reply_to"`
}

// Response builds the NuroPb response to req from the host's reply
// envelope: JSON body, NuroPb headers, the request's correlation id. A
// result that cannot be shown as JSON or does not fit the codec's frame
// limit becomes an error response, so the caller always hears back; the
// error return is only for a response that cannot be built at all.
func Response(codec *abi.Codec, req broker.Message, reply *abi.Envelope) (broker.Message, error) {
	corr := req.CorrelationID
	if corr == "" {
		corr = reply.ID
	}
	r := response{Tag: string(abi.KindResponse), CorrelationID: corr, Context: requestContext(req),
		Result: json.RawMessage("null")}
	if reply.TraceID != "" {
		r.TraceID = &reply.TraceID
	}
	if reply.Error != nil {
		r.Error = ToError(reply.Error)
	} else if res, err := result(codec, reply); err != nil {
		r.Error = ToError(abi.AsError(err))
	} else {
		r.Result = res
	}
	b, err := json.Marshal(r)
	if err == nil && len(b) > codec.Limits().MaxFrame {
		r.Result = json.RawMessage("null")
		r.Error = ToError(abi.Errorf(abi.CodeResourceExhausted, "%s.%s: JSON response is %d bytes, over the %d byte limit",
			reply.Service, reply.Method, len(b), codec.Limits().MaxFrame))
		b, err = json.Marshal(r)
	}
	if err != nil {
		return broker.Message{}, fmt.Errorf("nuropbwire: encode response: %w", err)
	}
	h := map[string]any{HeaderProtocol: Protocol, HeaderType: string(abi.KindResponse)}
	if reply.TraceID != "" {
		h[HeaderTraceID] = reply.TraceID
	}
	return broker.Message{Body: b, ContentType: ContentType, Type: string(abi.KindResponse), CorrelationID: corr, Headers: h}, nil
}

// requestContext echoes the request's context, as NuroPb does; a request
// too broken to have one gets an empty object.
func requestContext(req broker.Message) json.RawMessage {
	var b struct {
		Context json.RawMessage `json:"context"`
	}
	if json.Unmarshal(req.Body, &b) != nil || isNull(b.Context) || b.Context[0] != '{' {
		return json.RawMessage("{}")
	}
	return b.Context
}

// result is the reply's result as JSON; nuropb_describe's is reshaped into
// what a NuroPb client expects of it.
func result(codec *abi.Codec, reply *abi.Envelope) (json.RawMessage, error) {
	if reply.Method == client.DescribeMethod {
		var d client.Description
		if err := codec.Unmarshal(reply.Result, &d); err != nil {
			return nil, abi.Errorf(abi.CodeInternal, "describe result: %s", abi.AsError(err).Message)
		}
		return json.Marshal(Describe(&d))
	}
	return codec.CBORToJSON(reply.Result)
}

// Description is nuropb_describe's result in NuroPb's shape. The fields
// after Methods are nuropb's additions, for operators.
type Description struct {
	ServiceName    string                       `json:"service_name"`
	ServiceVersion string                       `json:"service_version"`
	Description    string                       `json:"description"`
	Methods        map[string]MethodDescription `json:"methods"`
	Warnings       []string                     `json:"warnings"`
	Subscriptions  []string                     `json:"subscriptions,omitempty"`
	Tenant         string                       `json:"tenant"`
	Hash           string                       `json:"hash"`
	LoadedAt       string                       `json:"loaded_at"`
}

// MethodDescription describes one method; Parameters is a JSON Schema
// object, which is what NuroPb clients render.
type MethodDescription struct {
	Description        string  `json:"description"`
	RequiresEncryption bool    `json:"requires_encryption"`
	RequiresAuth       bool    `json:"requires_auth"`
	Parameters         Schema  `json:"parameters"`
	Result             *Schema `json:"result,omitempty"`
}

// Schema is the small part of JSON Schema a manifest can express.
type Schema struct {
	Type        string            `json:"type,omitempty"`
	Description string            `json:"description,omitempty"`
	Encoding    string            `json:"contentEncoding,omitempty"`
	Properties  map[string]Schema `json:"properties,omitempty"`
	Required    []string          `json:"required,omitempty"`
}

// Describe reshapes a nuropb description. The file path on the serving host
// is left out: a NuroPb client has no use for it.
func Describe(d *client.Description) Description {
	out := Description{ServiceName: d.Manifest.Service, ServiceVersion: d.Manifest.Version,
		Description: d.Manifest.Description, Methods: map[string]MethodDescription{}, Warnings: []string{},
		Subscriptions: d.Manifest.Subscriptions, Tenant: d.Tenant, Hash: d.Hash}
	if !d.LoadedAt.IsZero() {
		out.LoadedAt = d.LoadedAt.UTC().Format(time.RFC3339Nano)
	}
	for name, m := range d.Manifest.Methods {
		md := MethodDescription{Description: m.Description, RequiresAuth: m.RequiresAuth,
			Parameters: Schema{Type: "object", Properties: map[string]Schema{}}}
		for _, p := range m.Params {
			s := schemaOf(p.Type)
			s.Description = p.Description
			md.Parameters.Properties[p.Name] = s
			if p.Required {
				md.Parameters.Required = append(md.Parameters.Required, p.Name)
			}
		}
		sort.Strings(md.Parameters.Required)
		if m.Result != "" {
			s := schemaOf(m.Result)
			md.Result = &s
		}
		out.Methods[name] = md
	}
	return out
}

// schemaOf maps a manifest type name to JSON Schema. Bytes travel as
// base64 text in JSON (abi.CBORToJSON); unknown names (any) are unconstrained.
func schemaOf(typ string) Schema {
	switch typ {
	case "string", "str", "text":
		return Schema{Type: "string"}
	case "int", "integer":
		return Schema{Type: "integer"}
	case "float", "number", "double":
		return Schema{Type: "number"}
	case "bool", "boolean":
		return Schema{Type: "boolean"}
	case "bytes":
		return Schema{Type: "string", Encoding: "base64"}
	case "list", "array":
		return Schema{Type: "array"}
	case "map", "object", "dict":
		return Schema{Type: "object"}
	}
	return Schema{}
}
