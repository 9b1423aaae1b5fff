// Package config reads host.toml, applies NUROPB_* environment overrides and
// validates the result into the settings nuropb-host runs with. Unknown keys
// are errors naming the key and the file, so a typo never becomes a silent
// default.
package config
