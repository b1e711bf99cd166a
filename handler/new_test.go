//go:build !js

package handler_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler"
	"github.com/toolgate/toolgate-go/handler/engine"
)

func TestNewRequiresStoreCatalogUpstream(t *testing.T) {
	t.Parallel()
	st, _ := openStore(t)
	c := testCatalog(t, "https://x.test")
	up := &engine.HTTPUpstream{}
	for name, cfg := range map[string]handler.Config{
		"store":    {Catalog: c, Upstream: up},
		"catalog":  {Store: st, Upstream: up},
		"upstream": {Store: st, Catalog: c},
	} {
		_, err := handler.New(cfg)
		require.ErrorContains(t, err, "Config."+map[string]string{"store": "Store", "catalog": "Catalog", "upstream": "Upstream"}[name])
	}
}
