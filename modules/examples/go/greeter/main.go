// Command greeter is an example nuropb service in Go: it greets people, in a
// few languages, and validates its typed params.
package main

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/nuropb/nuropb/abi"
	nuropb "github.com/nuropb/nuropb/guest-sdk/go"
)

var svc = nuropb.NewService("greeter", "1.2.0", "Greets people.")

// HelloParams are the params of hello.
type HelloParams struct {
	Name string `cbor:"name" nuropb:"required" doc:"who to greet"`
}

// GreetParams are the params of greet, checked by Validate.
type GreetParams struct {
	Name     string `cbor:"name" nuropb:"required" doc:"who to greet, 1 to 64 characters"`
	Language string `cbor:"language" doc:"en (default), fr, de or es"`
	Times    int    `cbor:"times" doc:"how many times to say it, 1 to 5 (default 1)"`
	Shout    bool   `cbor:"shout" doc:"upper-case the greeting"`
}

// Greeting is greet's result.
type Greeting struct {
	Text     string `cbor:"text"`
	Language string `cbor:"language"`
}

var salutations = map[string]string{"en": "Hello", "fr": "Bonjour", "de": "Hallo", "es": "Hola"}

// Validate checks the params and fills in defaults.
func (p *GreetParams) Validate() error {
	name := strings.TrimSpace(p.Name)
	if n := utf8.RuneCountInString(name); n == 0 || n > 64 {
		return fmt.Errorf("name must be 1 to 64 characters, got %d", n)
	}
	p.Name = name
	if p.Language == "" {
		p.Language = "en"
	}
	if _, ok := salutations[p.Language]; !ok {
		return abi.Errorf(abi.CodeBadRequest, "language %q is not one of %s", p.Language, strings.Join(languages(), ", "))
	}
	if p.Times == 0 {
		p.Times = 1
	}
	if p.Times < 1 || p.Times > 5 {
		return fmt.Errorf("times must be 1 to 5, got %d", p.Times)
	}
	return nil
}

func languages() []string {
	l := make([]string, 0, len(salutations))
	for k := range salutations {
		l = append(l, k)
	}
	slices.Sort(l)
	return l
}

func hello(_ *nuropb.Context, p HelloParams) (string, error) {
	return "Hello, " + p.Name + "!", nil
}

func greet(ctx *nuropb.Context, p GreetParams) (Greeting, error) {
	one := salutations[p.Language] + ", " + p.Name + "!"
	text := strings.TrimSpace(strings.Repeat(one+" ", p.Times))
	if p.Shout {
		text = strings.ToUpper(text)
	}
	ctx.Logf(nuropb.LevelDebug, "greeted %s in %s", p.Name, p.Language)
	return Greeting{Text: text, Language: p.Language}, nil
}

func init() {
	nuropb.Method(svc, "hello", "Says hello.", hello)
	nuropb.Method(svc, "greet", "Greets someone in a language, validating every param.", greet)
	nuropb.Method(svc, "languages", "Lists the languages greet speaks.",
		func(*nuropb.Context, nuropb.NoParams) ([]string, error) { return languages(), nil })
	nuropb.Register(svc)
}

func main() {}
