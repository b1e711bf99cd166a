// Package sqlite opens a native SQLite database file as a store.DbClient,
// with the pure-Go modernc.org/sqlite driver. It is for native builds only;
// under js/wasm the package is empty (the worker uses D1 or libSQL).
package sqlite
