package nuropb_test

import (
	"fmt"

	nuropb "github.com/nuropb/nuropb/guest-sdk/go"
)

// HelloParams are hello's keyword params: the cbor tag names them, nuropb
// marks them required, doc describes them in the manifest.
type HelloParams struct {
	Name string `cbor:"name" nuropb:"required" doc:"who to greet"`
	Loud bool   `cbor:"loud" doc:"shout it"`
}

// A service is declared in package init and registered with nuropb.Register
// (left out here: a test binary is not a wasm module). The manifest the host
// reads through nuropb_describe comes from these registrations.
func ExampleMethod() {
	svc := nuropb.NewService("greeter", "1.2.0", "Greets people.")
	nuropb.Method(svc, "hello", "Says hello.", func(ctx *nuropb.Context, p HelloParams) (string, error) {
		ctx.Logf(nuropb.LevelDebug, "greeting %s", p.Name)
		return "Hello, " + p.Name + "!", nil
	})
	nuropb.Method(svc, "reset", "Forgets everything.", func(*nuropb.Context, nuropb.NoParams) (bool, error) {
		return true, nil
	}, nuropb.Hidden())
	svc.Subscribe("order.*", func(ctx *nuropb.Context, ev nuropb.Event) error {
		var order map[string]any
		return ev.Decode(&order)
	})

	m, err := svc.Manifest()
	if err != nil {
		panic(err)
	}
	fmt.Println(m.Service, m.Version, m.Subscriptions)
	for _, p := range m.Methods["hello"].Params {
		fmt.Printf("hello %s %s required=%v %q\n", p.Name, p.Type, p.Required, p.Description)
	}
	fmt.Println("hello returns", m.Methods["hello"].Result, "; reset hidden:", m.Methods["reset"].Hidden)
	// Output:
	// greeter 1.2.0 [order.*]
	// hello name string required=true "who to greet"
	// hello loud bool required=false "shout it"
	// hello returns string ; reset hidden: true
}
