package bridge

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
)

// The shim passes headers as one string of "name:value\n" lines: one JS call instead of one per
// header. Names never contain ':' and values never contain '\n' (the Fetch API forbids both).

// parseHeaderLines decodes "name:value\n" lines into h.
func parseHeaderLines(lines string, h http.Header) {
	for lines != "" {
		line, rest, _ := strings.Cut(lines, "\n")
		lines = rest
		if name, value, ok := strings.Cut(line, ":"); ok && name != "" {
			h.Add(name, value)
		}
	}
}

// formatHeaderLines encodes h as "name:value\n" lines, one per value. Values with a newline (which no
// Fetch API Headers accepts) are dropped.
func formatHeaderLines(h http.Header) string {
	var b strings.Builder
	for name, values := range h {
		for _, v := range values {
			if strings.ContainsAny(v, "\r\n") || strings.ContainsAny(name, ":\r\n") {
				continue
			}
			b.WriteString(name)
			b.WriteByte(':')
			b.WriteString(v)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// HTTP messages cross between the shim and Go as one byte array each (one JS value instead of one per
// field: Go pays a finalizer and calls back into JS for every value it holds). goruntime.mjs has the same
// four functions. All integers are big-endian.
//
//	request:  meta length (uint32), meta "method\nurl\nheaderLines", body
//	response: status (uint16), meta length (uint32), meta "statusText\nheaderLines", body
//
// Methods, URLs and status texts never contain a newline.

// appendRequest appends a packed request to dst.
func appendRequest(dst []byte, method, url, headerLines string, body []byte) []byte {
	meta := len(method) + 1 + len(url) + 1 + len(headerLines)
	dst = binary.BigEndian.AppendUint32(dst, uint32(meta))
	dst = append(append(append(append(append(dst, method...), '\n'), url...), '\n'), headerLines...)
	return append(dst, body...)
}

// unpackRequest reads a packed request; body aliases b (nil if empty).
func unpackRequest(b []byte) (method, url, headerLines string, body []byte, err error) {
	if len(b) < 4 {
		return "", "", "", nil, errors.New("packed request: too short")
	}
	m := int(binary.BigEndian.Uint32(b))
	if m > len(b)-4 {
		return "", "", "", nil, errors.New("packed request: meta overruns it")
	}
	method, rest, ok1 := strings.Cut(string(b[4:4+m]), "\n")
	url, headerLines, ok2 := strings.Cut(rest, "\n")
	if !ok1 || !ok2 {
		return "", "", "", nil, errors.New("packed request: no method and URL")
	}
	if body = b[4+m:]; len(body) == 0 {
		body = nil
	}
	return method, url, headerLines, body, nil
}

// appendResponse appends a packed response to dst.
func appendResponse(dst []byte, status int, statusText, headerLines string, body []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(status))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(statusText)+1+len(headerLines)))
	dst = append(append(append(dst, statusText...), '\n'), headerLines...)
	return append(dst, body...)
}

// unpackResponse reads a packed response; its body reads b without a copy.
func unpackResponse(b []byte) (*http.Response, error) {
	if len(b) < 6 {
		return nil, errors.New("packed response: too short")
	}
	status := int(binary.BigEndian.Uint16(b))
	m := int(binary.BigEndian.Uint32(b[2:]))
	if m > len(b)-6 {
		return nil, errors.New("packed response: meta overruns it")
	}
	statusText, headers, _ := strings.Cut(string(b[6:6+m]), "\n")
	body := b[6+m:]
	res := &http.Response{
		Status:        strconv.Itoa(status) + " " + statusText,
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
	}
	parseHeaderLines(headers, res.Header)
	return res, nil
}

// responseRecorder buffers a handler's response: the shim answers with the whole body at once.
type responseRecorder struct {
	header http.Header
	status int // 0 until WriteHeader or Write
	body   bytes.Buffer
}

var (
	_ http.ResponseWriter = (*responseRecorder)(nil)
	_ http.Flusher        = (*responseRecorder)(nil)
)

func newResponseRecorder() *responseRecorder { return &responseRecorder{header: http.Header{}} }

func (w *responseRecorder) Header() http.Header { return w.header }

func (w *responseRecorder) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *responseRecorder) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}

// Flush implements http.Flusher as a no-op: the body is sent when the handler returns.
func (w *responseRecorder) Flush() {}

// statusCode returns the status to answer: 200 if the handler never set one.
func (w *responseRecorder) statusCode() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// decodeRows decodes the shim's JSON rows (D1 raw() results: JSON.stringify output, an array of arrays
// of null, booleans, numbers, strings and {"$b": base64} BLOBs). Integers become int64, other numbers
// float64, BLOBs []byte. It is a small parser for exactly that shape: encoding/json's reflection costs
// more than the statement itself inside wasm.
func decodeRows(s string) ([][]any, error) {
	p := rowsParser{s: s}
	rows, err := p.rows()
	if err != nil {
		return nil, fmt.Errorf("decode rows: %w at offset %d", err, p.i)
	}
	return rows, nil
}

type rowsParser struct {
	s string
	i int
}

var errSyntax = errors.New("unexpected input")

func (p *rowsParser) next() byte {
	for p.i < len(p.s) {
		switch c := p.s[p.i]; c {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return c
		}
	}
	return 0
}

func (p *rowsParser) expect(c byte) error {
	if p.next() != c {
		return errSyntax
	}
	p.i++
	return nil
}

// list parses '[' item (',' item)* ']' or '[]'.
func (p *rowsParser) list(item func() error) error {
	if err := p.expect('['); err != nil {
		return err
	}
	if p.next() == ']' {
		p.i++
		return nil
	}
	for {
		if err := item(); err != nil {
			return err
		}
		switch p.next() {
		case ',':
			p.i++
		case ']':
			p.i++
			return nil
		default:
			return errSyntax
		}
	}
}

// decodeBatch decodes the shim's JSON for a D1 batch: an array holding each statement's rows, in the
// shape decodeRows reads.
func decodeBatch(s string) ([][][]any, error) {
	p := rowsParser{s: s}
	var out [][][]any
	err := p.list(func() error {
		rows, err := p.rowList()
		out = append(out, rows)
		return err
	})
	if err == nil && p.next() != 0 {
		err = errSyntax
	}
	if err != nil {
		return nil, fmt.Errorf("decode batch: %w at offset %d", err, p.i)
	}
	return out, nil
}

// appendBatch appends statements as the shim's d1batch reads them: a JSON array of [sql, [args...]],
// where sql is the text, or the number the shim holds it under when texts (may be nil) has one.
// blobs reports whether any argument is a BLOB.
func appendBatch(dst []byte, queries []string, args [][]any, texts *sqlTexts) (out []byte, blobs bool, err error) {
	dst = append(dst, '[')
	for i, q := range queries {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '[')
		if id, ok := texts.id(q); ok {
			dst = strconv.AppendInt(dst, int64(id), 10)
		} else {
			dst = appendJSONString(dst, q)
		}
		dst = append(dst, ',')
		var b bool
		if dst, b, err = appendArgs(dst, args[i]); err != nil {
			return nil, false, fmt.Errorf("statement %d: %w", i+1, err)
		}
		blobs = blobs || b
		dst = append(dst, ']')
	}
	return append(dst, ']'), blobs, nil
}

func (p *rowsParser) rows() ([][]any, error) {
	rows, err := p.rowList()
	if err == nil && p.next() != 0 {
		err = errSyntax
	}
	return rows, err
}

// rowList parses one statement's rows: an array of arrays of values.
func (p *rowsParser) rowList() ([][]any, error) {
	var rows [][]any
	err := p.list(func() error {
		row := []any{}
		err := p.list(func() error {
			v, err := p.value()
			row = append(row, v)
			return err
		})
		rows = append(rows, row)
		return err
	})
	return rows, err
}

func (p *rowsParser) value() (any, error) {
	switch c := p.next(); {
	case c == '"':
		return p.str()
	case c == '{':
		return p.blob()
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	for _, lit := range []struct {
		text string
		v    any
	}{{"null", nil}, {"true", true}, {"false", false}} {
		if strings.HasPrefix(p.s[p.i:], lit.text) {
			p.i += len(lit.text)
			return lit.v, nil
		}
	}
	return nil, errSyntax
}

func (p *rowsParser) number() (any, error) {
	start, integer := p.i, true
	for ; p.i < len(p.s); p.i++ {
		c := p.s[p.i]
		if c == '.' || c == 'e' || c == 'E' || c == '+' {
			integer = false
		} else if c != '-' && (c < '0' || c > '9') {
			break
		}
	}
	text := p.s[start:p.i]
	if integer {
		if n, err := strconv.ParseInt(text, 10, 64); err == nil {
			return n, nil
		}
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return nil, errSyntax
	}
	return f, nil
}

// str parses a JSON string; p.s[p.i] is its opening quote.
func (p *rowsParser) str() (string, error) {
	p.i++
	start := p.i
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case '"':
			v := strings.Clone(p.s[start:p.i]) // don't pin the whole result text
			p.i++
			return v, nil
		case '\\':
			return p.escaped(start)
		}
		p.i++
	}
	return "", errSyntax
}

// escaped finishes a string with escapes, begun at start.
func (p *rowsParser) escaped(start int) (string, error) {
	var b strings.Builder
	b.WriteString(p.s[start:p.i])
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return b.String(), nil
		case c != '\\':
			b.WriteByte(c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.s) {
			return "", errSyntax
		}
		e := p.s[p.i+1]
		p.i += 2
		switch e {
		case '"', '\\', '/':
			b.WriteByte(e)
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return "", errSyntax
			}
			if utf16.IsSurrogate(r) {
				r2 := unicode.ReplacementChar
				if strings.HasPrefix(p.s[p.i:], "\\u") {
					save := p.i
					p.i += 2
					if lo, ok := p.hex4(); ok {
						r2 = lo
					} else {
						p.i = save
					}
				}
				if d := utf16.DecodeRune(r, r2); d != unicode.ReplacementChar {
					r = d
				} else {
					r = unicode.ReplacementChar
				}
			}
			b.WriteRune(r)
		default:
			return "", errSyntax
		}
	}
	return "", errSyntax
}

func (p *rowsParser) hex4() (rune, bool) {
	if p.i+4 > len(p.s) {
		return 0, false
	}
	n, err := strconv.ParseUint(p.s[p.i:p.i+4], 16, 16)
	if err != nil {
		return 0, false
	}
	p.i += 4
	return rune(n), true
}

// blob parses {"$b":"<base64>"}.
func (p *rowsParser) blob() ([]byte, error) {
	p.i++
	if p.next() != '"' {
		return nil, errSyntax
	}
	key, err := p.str()
	if err != nil || key != "$b" {
		return nil, errSyntax
	}
	if err := p.expect(':'); err != nil {
		return nil, err
	}
	if p.next() != '"' {
		return nil, errSyntax
	}
	b64, err := p.str()
	if err != nil {
		return nil, err
	}
	if err := p.expect('}'); err != nil {
		return nil, err
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, errSyntax
	}
	return b, nil
}

// appendArgs appends args as a JSON array for the shim, which binds them to a D1 statement: one string
// crossing into JS instead of one per argument. BLOBs travel as {"$b": base64}; blobs reports whether
// there were any (the shim then revives them).
func appendArgs(dst []byte, args []any) (out []byte, blobs bool, err error) {
	dst = append(dst, '[')
	for i, a := range args {
		if i > 0 {
			dst = append(dst, ',')
		}
		switch x := a.(type) {
		case nil:
			dst = append(dst, "null"...)
		case bool:
			dst = strconv.AppendBool(dst, x)
		case int:
			dst = strconv.AppendInt(dst, int64(x), 10)
		case int64:
			dst = strconv.AppendInt(dst, x, 10)
		case float64:
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return nil, false, fmt.Errorf("cannot bind %v (argument %d)", x, i+1)
			}
			dst = strconv.AppendFloat(dst, x, 'g', -1, 64)
		case string:
			dst = appendJSONString(dst, x)
		case []byte:
			dst = append(dst, `{"$b":"`...)
			dst = base64.StdEncoding.AppendEncode(dst, x)
			dst = append(dst, `"}`...)
			blobs = true
		default:
			return nil, false, fmt.Errorf("cannot bind %T (argument %d)", a, i+1)
		}
	}
	return append(dst, ']'), blobs, nil
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 is left as is: the string reaches JS
// through a UTF-8 decoder, which replaces it, as it would any Go string.
func appendJSONString(dst []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
