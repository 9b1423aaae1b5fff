//go:build !wasip1

package nuropb

func defaultHost() hostFuncs { return fallbackHost{} }
