// Package dashboard holds the publisher dashboard's static files (assets/dashboard: one HTML page, its
// script and its style sheet; no framework, no CDN, charts drawn as SVG by hand). In the Worker they are
// Workers static assets (wrangler.toml [assets]), served without running Go; the native twin serves the
// same embedded files with Handler. The page reads the admin API (/v1/admin/stats, /calls, /callers,
// /attention) with the admin token the user enters, kept in sessionStorage.
//
// Only the native build imports this package: the wasm carries none of these bytes.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed assets
var files embed.FS

// Assets is the asset tree, rooted like Workers static assets (dashboard/index.html is /dashboard/).
func Assets() fs.FS {
	sub, _ := fs.Sub(files, "assets")
	return sub
}

// Register serves /dashboard (a redirect to /dashboard/, as Workers static assets do) and the files
// under /dashboard/ on mux.
func Register(mux *http.ServeMux) {
	mux.Handle("GET /dashboard", http.RedirectHandler("/dashboard/", http.StatusTemporaryRedirect))
	mux.Handle("GET /dashboard/", noStore(http.FileServerFS(Assets())))
}

// noStore keeps browsers from serving a stale page after an upgrade.
func noStore(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}
