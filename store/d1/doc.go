// Package d1 opens a Cloudflare D1 binding as a store.DbClient. It builds
// only for js/wasm (inside workerd); natively the package is empty.
//
// It uses syumai/workers' database/sql driver. D1 has no interactive
// transactions, which the SQL backend never needs: every state change is one
// statement. The driver hands integers back as float64, exact below 2^53;
// the SQL backend reads them back as int64.
package d1
