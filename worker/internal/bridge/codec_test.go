package bridge

import (
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestHeaderLinesRoundTrip(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		lines string
		want  http.Header
	}{
		"empty":                   {"", http.Header{}},
		"one":                     {"content-type:application/json\n", http.Header{"Content-Type": {"application/json"}}},
		"colon in value":          {"x-time:12:30\n", http.Header{"X-Time": {"12:30"}}},
		"repeated name":           {"set-cookie:a=1\nset-cookie:b=2\n", http.Header{"Set-Cookie": {"a=1", "b=2"}}},
		"empty value":             {"x-empty:\n", http.Header{"X-Empty": {""}}},
		"no trailing newline":     {"a:1\nb:2", http.Header{"A": {"1"}, "B": {"2"}}},
		"line without a colon":    {"garbage\na:1\n", http.Header{"A": {"1"}}},
		"line with an empty name": {":x\n", http.Header{}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got := http.Header{}
			parseHeaderLines(tc.lines, got)
			require.Equal(t, tc.want, got)

			again := http.Header{}
			parseHeaderLines(formatHeaderLines(got), again)
			require.Equal(t, got, again)
		})
	}
}

func TestFormatHeaderLinesDropsNewlines(t *testing.T) {
	t.Parallel()
	h := http.Header{"Ok": {"1"}, "Bad": {"a\r\nInjected: yes"}}
	require.Equal(t, "Ok:1\n", formatHeaderLines(h))
}

func TestResponseRecorder(t *testing.T) {
	t.Parallel()
	w := newResponseRecorder()
	require.Equal(t, http.StatusOK, w.statusCode())
	w.WriteHeader(http.StatusTeapot)
	w.WriteHeader(http.StatusInternalServerError) // ignored, as net/http does
	_, err := w.Write([]byte("hi"))
	require.NoError(t, err)
	require.Equal(t, http.StatusTeapot, w.statusCode())
	require.Equal(t, "hi", w.body.String())

	w = newResponseRecorder()
	_, _ = w.Write([]byte("x"))
	require.Equal(t, http.StatusOK, w.statusCode())
}

func TestDecodeRows(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		json string
		want [][]any
	}{
		"scalars": {`[[1,"a",null,2.5,true,false,-3,1e+21]]`,
			[][]any{{int64(1), "a", nil, 2.5, true, false, int64(-3), 1e21}}},
		"empty":          {`[]`, nil},
		"empty row":      {`[[],[]]`, [][]any{{}, {}}},
		"blob":           {`[[{"$b":"aGk="}]]`, [][]any{{[]byte("hi")}}},
		"max safe int":   {`[[9007199254740991]]`, [][]any{{int64(1<<53 - 1)}}},
		"escapes":        {`[["a\"b\\c\/\n\t\r\b\f\u0001"]]`, [][]any{{"a\"b\\c/\n\t\r\b\f\x01"}}},
		"surrogates":     {`[["\ud83d\ude00 \u2028"]]`, [][]any{{"😀 \u2028"}}},
		"lone surrogate": {`[["\ud800x"]]`, [][]any{{"\ufffdx"}}},
		"raw utf-8":      {`[["żółw"]]`, [][]any{{"żółw"}}},
		"whitespace":     {" [ [ 1 , \"x\" ] ] ", [][]any{{int64(1), "x"}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := decodeRows(tc.json)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	for _, bad := range []string{`[[{"x":1}]]`, `[[{"$b":"!"}]]`, `{}`, `[[1]`, `[[1]] x`, `[["a]]`, `[[nul]]`, `[["\q"]]`, `[[1,]]`} {
		_, err := decodeRows(bad)
		require.Error(t, err, bad)
	}
}

func TestDecodeBatch(t *testing.T) {
	t.Parallel()
	got, err := decodeBatch(`[[[1,"a"],[2,"b"]],[],[[{"$b":"aGk="}]]]`)
	require.NoError(t, err)
	require.Equal(t, [][][]any{{{int64(1), "a"}, {int64(2), "b"}}, nil, {{[]byte("hi")}}}, got)
	got, err = decodeBatch(`[]`)
	require.NoError(t, err)
	require.Empty(t, got)
	for _, bad := range []string{`[[1]]`, `[[[1]]`, `[[[1]]] x`, `[[[1]],]`, `{}`} {
		_, err := decodeBatch(bad)
		require.Error(t, err, bad)
	}
}

func TestAppendBatch(t *testing.T) {
	t.Parallel()
	got, blobs, err := appendBatch(nil, []string{"SELECT ?", "INSERT \"x\""}, [][]any{{1}, {[]byte("hi"), "s"}}, nil)
	require.NoError(t, err)
	require.True(t, blobs)
	require.Equal(t, `[["SELECT ?",[1]],["INSERT \"x\"",[{"$b":"aGk="},"s"]]]`, string(got))
	var decoded []any
	require.NoError(t, json.Unmarshal(got, &decoded), "valid JSON")

	got, blobs, err = appendBatch(nil, []string{"SELECT 1"}, [][]any{nil}, nil)
	require.NoError(t, err)
	require.False(t, blobs)
	require.Equal(t, `[["SELECT 1",[]]]`, string(got))

	_, _, err = appendBatch(nil, []string{"a", "b"}, [][]any{{1}, {math.NaN()}}, nil)
	require.ErrorContains(t, err, "statement 2")
}

func TestAppendArgs(t *testing.T) {
	t.Parallel()
	got, blobs, err := appendArgs(nil, []any{nil, true, 1, int64(-2), 2.5, "a\"\\\n\x01ż", []byte("hi")})
	require.NoError(t, err)
	require.True(t, blobs)
	require.Equal(t, `[null,true,1,-2,2.5,"a\"\\\n\u0001ż",{"$b":"aGk="}]`, string(got))

	got, blobs, err = appendArgs(nil, nil)
	require.NoError(t, err)
	require.False(t, blobs)
	require.Equal(t, `[]`, string(got))

	for _, bad := range []any{math.NaN(), math.Inf(1), struct{}{}, int32(1)} {
		_, _, err := appendArgs(nil, []any{bad})
		require.Error(t, err)
	}
}

// FuzzStringsRoundTrip: a string bound by appendArgs and read back by decodeRows is unchanged, and
// appendArgs agrees with encoding/json.
func FuzzStringsRoundTrip(f *testing.F) {
	for _, s := range []string{"", "a", "\"\\", "\x00\x1f\x7f", "żółw 😀", "\u2028", "</script>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			t.Skip() // Go strings reach JS through a UTF-8 decoder, which replaces invalid bytes
		}
		args, _, err := appendArgs(nil, []any{s})
		require.NoError(t, err)
		var viaStd []string
		require.NoError(t, json.Unmarshal(args, &viaStd))
		require.Equal(t, []string{s}, viaStd)

		rows, err := decodeRows("[" + string(args) + "]")
		require.NoError(t, err)
		require.Equal(t, [][]any{{s}}, rows)

		std, err := json.Marshal([][]string{{s}})
		require.NoError(t, err)
		rows, err = decodeRows(string(std))
		require.NoError(t, err)
		require.Equal(t, [][]any{{s}}, rows)
	})
}

func packed(status int, meta, body string) []byte {
	statusText, headers, _ := strings.Cut(meta, "\n")
	return appendResponse(nil, status, statusText, headers, []byte(body))
}

func TestUnpackResponse(t *testing.T) {
	t.Parallel()
	res, err := unpackResponse(packed(201, "Created\ncontent-type:application/json\nx-a:1\nx-a:2\n", `{"ok":true}`))
	require.NoError(t, err)
	require.Equal(t, 201, res.StatusCode)
	require.Equal(t, "201 Created", res.Status)
	require.Equal(t, http.Header{"Content-Type": {"application/json"}, "X-A": {"1", "2"}}, res.Header)
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, `{"ok":true}`, string(body))
	require.EqualValues(t, len(body), res.ContentLength)

	res, err = unpackResponse(packed(204, "\n", ""))
	require.NoError(t, err)
	require.Equal(t, 204, res.StatusCode)
	require.Empty(t, res.Header)
	require.Zero(t, res.ContentLength)

	for name, bad := range map[string][]byte{"empty": nil, "short": {0, 200, 0}, "meta overruns": packed(200, "OK\n", "")[:7]} {
		_, err := unpackResponse(bad)
		require.Error(t, err, name)
	}
}

func TestPackedRequestRoundTrip(t *testing.T) {
	t.Parallel()
	b := appendRequest(nil, "POST", "https://x.test/v1/tools/a%0Ab/call?q=1", "content-type:application/json\nx:ż\n", []byte("{}"))
	method, url, headers, body, err := unpackRequest(b)
	require.NoError(t, err)
	require.Equal(t, []string{"POST", "https://x.test/v1/tools/a%0Ab/call?q=1", "content-type:application/json\nx:ż\n", "{}"},
		[]string{method, url, headers, string(body)})

	_, _, headers, body, err = unpackRequest(appendRequest(nil, "GET", "https://x.test/", "", nil))
	require.NoError(t, err)
	require.Empty(t, headers)
	require.Nil(t, body, "no body")

	for name, bad := range map[string][]byte{"empty": nil, "short": {0, 0}, "meta overruns": {0, 0, 0, 9, 'G'},
		"no URL": {0, 0, 0, 3, 'G', 'E', 'T'}} {
		_, _, _, _, err := unpackRequest(bad)
		require.Error(t, err, name)
	}
}
