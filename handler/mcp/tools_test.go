//go:build !js

package mcp

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/catalog"
)

// TestToolsListShowsFreeTier: a tool's free tier is in its _meta and its
// description; a tool without one has no such member.
func TestToolsListShowsFreeTier(t *testing.T) {
	t.Parallel()
	c, err := catalog.ParseCatalog([]byte(`{"tools": [
	 {"name": "tiered", "description": "d", "price": "0.05", "currency": "USD", "free": {"calls": 100, "per": "day"},
	  "upstream": {"url": "https://x.test/a"}},
	 {"name": "freeonly", "description": "d", "price": "0", "currency": "USD", "free": {"calls": 3, "per": "week"},
	  "upstream": {"url": "https://x.test/a"}},
	 {"name": "fixed", "description": "d", "price": "0.05", "currency": "USD", "upstream": {"url": "https://x.test/a"}}]}`))
	require.NoError(t, err)
	var list struct {
		Tools []struct {
			Name        string         `json:"name"`
			Description string         `json:"description"`
			Meta        map[string]any `json:"_meta"`
		} `json:"tools"`
	}
	require.NoError(t, json.Unmarshal(toolsListJSON(c, false, false), &list))
	require.Len(t, list.Tools, 3)
	require.Equal(t, map[string]any{"calls": float64(100), "per": "day"}, list.Tools[0].Meta[MetaFree])
	require.Equal(t, "0.05", list.Tools[0].Meta[MetaPrice])
	require.Contains(t, list.Tools[0].Description, "your first 100 calls per day (UTC) are free, then the price applies")
	require.Equal(t, map[string]any{"calls": float64(3), "per": "week"}, list.Tools[1].Meta[MetaFree])
	require.Contains(t, list.Tools[1].Description, "refused (429) until the window resets")
	require.NotContains(t, list.Tools[2].Meta, MetaFree)
}

// TestToolsListShowsMeteredPrice: a metered tool's price is in its _meta
// (the maximum as the price, and the metered member) and its description.
func TestToolsListShowsMeteredPrice(t *testing.T) {
	t.Parallel()
	c, err := catalog.ParseCatalog([]byte(`{"tools": [
	 {"name": "metered", "description": "d", "price": {"max": "1.00", "per": "0.001"}, "currency": "USD",
	  "free": {"calls": 5, "per": "hour"}, "upstream": {"url": "https://x.test/a"}},
	 {"name": "fixed", "description": "d", "price": "0.05", "currency": "USD", "upstream": {"url": "https://x.test/a"}}]}`))
	require.NoError(t, err)
	var list struct {
		Tools []struct {
			Description string         `json:"description"`
			Meta        map[string]any `json:"_meta"`
		} `json:"tools"`
	}
	require.NoError(t, json.Unmarshal(toolsListJSON(c, false, false), &list))
	require.Equal(t, map[string]any{"max": "1.00", "per": "0.001", "usageHeader": "Toolgate-Usage"}, list.Tools[0].Meta[MetaMetered])
	require.Equal(t, "1.00", list.Tools[0].Meta[MetaPrice])
	require.Contains(t, list.Tools[0].Description, "Price: metered, 0.001 USD per unit used, at most 1.00 per call")
	require.Contains(t, list.Tools[0].Description, "your first 5 calls per hour (UTC) are free")
	require.NotContains(t, list.Tools[1].Meta, MetaMetered)
}
