//go:build js

// Command hranatest-server is native-only.
package main

func main() {}
