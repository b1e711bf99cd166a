// Package dashboard holds the publisher dashboard's static files (assets/dashboard: one HTML page, its
// script and its style sheet; no framework, no CDN, charts drawn as SVG by hand). In the Worker they are
// Workers static assets (wrangler.toml [assets]), served without running Go; the native twin serves the
// same embedded files with Wrap. The page reads the admin API (/v1/admin/stats, /calls, /callers,
// /attention) with the admin token the user enters, kept in sessionStorage.
//
// Only the native build imports this package: the wasm carries none of these bytes.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed assets
var files embed.FS

// Assets is the asset tree, rooted like Workers static assets (dashboard/index.html is /dashboard/).
func Assets() fs.FS {
	sub, _ := fs.Sub(files, "assets")
	return sub
}

// Wrap serves GET and HEAD of /dashboard (a redirect to /dashboard/, as Workers static assets do) and
// of the files under /dashboard/, and hands every other request to next untouched (so next's own path
// rules, such as answering 404 for an unclean path, still hold).
func Wrap(next http.Handler) http.Handler {
	files := http.FileServerFS(Assets())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		read := r.Method == http.MethodGet || r.Method == http.MethodHead
		switch {
		case read && p == "/dashboard":
			http.Redirect(w, r, "/dashboard/", http.StatusTemporaryRedirect)
		case read && strings.HasPrefix(p, "/dashboard/") && (path.Clean(p) == p || p == "/dashboard/"):
			w.Header().Set("Cache-Control", "no-cache") // no stale page after an upgrade
			files.ServeHTTP(w, r)
		default:
			next.ServeHTTP(w, r)
		}
	})
}
