package hrana

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/toolgate/toolgate-go/store"
)

// The JSON of Hrana over HTTP. Requests are appended by hand (one small
// allocation per call, no reflection); responses are decoded with
// encoding/json into the few fields the client reads.

// appendExecutePipeline appends {"baton":null,"requests":[execute, close]}.
func appendExecutePipeline(dst []byte, query string, args []any, wantRows bool) ([]byte, error) {
	dst = append(dst, `{"baton":null,"requests":[{"type":"execute","stmt":`...)
	dst, err := appendStmt(dst, query, args, wantRows)
	if err != nil {
		return nil, err
	}
	return append(dst, `},{"type":"close"}]}`...), nil
}

// appendBatchPipeline appends a pipeline of [batch, close] whose batch runs
// stmts as a transaction: step 0 is BEGIN IMMEDIATE, step i (1..n) runs
// stmts[i-1] if step i-1 succeeded, step n+1 commits if step n succeeded,
// and step n+2 rolls back unless the commit succeeded (a skipped commit
// counts as not succeeded).
func appendBatchPipeline(dst []byte, stmts []store.Stmt) ([]byte, error) {
	n := len(stmts)
	dst = append(dst, `{"baton":null,"requests":[{"type":"batch","batch":{"steps":[{"stmt":{"sql":"BEGIN IMMEDIATE","want_rows":false}}`...)
	var err error
	for i, st := range stmts {
		dst = appendOKCond(append(dst, `,{"condition":`...), i)
		dst = append(dst, `,"stmt":`...)
		if dst, err = appendStmt(dst, st.Query, st.Args, true); err != nil {
			return nil, fmt.Errorf("statement %d: %w", i+1, err)
		}
		dst = append(dst, '}')
	}
	dst = appendOKCond(append(dst, `,{"condition":`...), n)
	dst = append(dst, `,"stmt":{"sql":"COMMIT","want_rows":false}},{"condition":{"type":"not","cond":`...)
	dst = appendOKCond(dst, n+1)
	dst = append(dst, `},"stmt":{"sql":"ROLLBACK","want_rows":false}}]}},{"type":"close"}]}`...)
	return dst, nil
}

func appendOKCond(dst []byte, step int) []byte {
	dst = append(dst, `{"type":"ok","step":`...)
	dst = strconv.AppendInt(dst, int64(step), 10)
	return append(dst, '}')
}

// appendStmt appends a Stmt with positional args.
func appendStmt(dst []byte, query string, args []any, wantRows bool) ([]byte, error) {
	dst = appendString(append(dst, `{"sql":`...), query)
	dst = append(dst, `,"args":[`...)
	for i, a := range args {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = appendValue(dst, a); err != nil {
			return nil, fmt.Errorf("argument %d: %w", i+1, err)
		}
	}
	dst = append(dst, `],"want_rows":`...)
	return append(strconv.AppendBool(dst, wantRows), '}'), nil
}

// appendValue appends a Hrana Value for v: nil, bool, int, int32, int64,
// float64, string or []byte.
func appendValue(dst []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(dst, `{"type":"null"}`...), nil
	case bool:
		if x {
			return append(dst, `{"type":"integer","value":"1"}`...), nil
		}
		return append(dst, `{"type":"integer","value":"0"}`...), nil
	case int:
		return appendInt(dst, int64(x)), nil
	case int32:
		return appendInt(dst, int64(x)), nil
	case int64:
		return appendInt(dst, x), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("float %v has no JSON form", x)
		}
		dst = append(dst, `{"type":"float","value":`...)
		return append(strconv.AppendFloat(dst, x, 'g', -1, 64), '}'), nil
	case string:
		return append(appendString(append(dst, `{"type":"text","value":`...), x), '}'), nil
	case []byte:
		dst = append(dst, `{"type":"blob","base64":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, x)
		return append(dst, `"}`...), nil
	default:
		return nil, fmt.Errorf("unsupported type %T", v)
	}
}

func appendInt(dst []byte, n int64) []byte {
	dst = append(dst, `{"type":"integer","value":"`...)
	return append(strconv.AppendInt(dst, n, 10), `"}`...)
}

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does.
func appendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
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
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// pipelineResponse is the part of a PipelineRespBody the client reads.
type pipelineResponse struct {
	Results []struct {
		Type     string `json:"type"`
		Response *struct {
			Type   string      `json:"type"`
			Result *stmtResult `json:"result"`
		} `json:"response"`
		Error *Error `json:"error"`
	} `json:"results"`
}

// stmtResult is a StmtResult, or a BatchResult (StepResults, StepErrors).
type stmtResult struct {
	Rows             [][]wireValue `json:"rows"`
	AffectedRowCount int64         `json:"affected_row_count"`
	StepResults      []*stmtResult `json:"step_results"`
	StepErrors       []*Error      `json:"step_errors"`
}

// wireValue is a Value as sent: integers are strings, floats numbers,
// blobs base64.
type wireValue struct {
	Type   string          `json:"type"`
	Value  json.RawMessage `json:"value"`
	Base64 string          `json:"base64"`
}

func decodePipeline(b []byte) (*pipelineResponse, error) {
	var resp pipelineResponse
	if err := json.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("decode pipeline response: %w", err)
	}
	return &resp, nil
}

// values converts the result's rows to Go values.
func (r *stmtResult) values() ([][]any, error) {
	if len(r.Rows) == 0 {
		return nil, nil
	}
	out := make([][]any, len(r.Rows))
	for i, row := range r.Rows {
		vals := make([]any, len(row))
		for j := range row {
			v, err := row[j].value()
			if err != nil {
				return nil, fmt.Errorf("row %d column %d: %w", i+1, j+1, err)
			}
			vals[j] = v
		}
		out[i] = vals
	}
	return out, nil
}

func (v *wireValue) value() (any, error) {
	switch v.Type {
	case "null":
		return nil, nil
	case "integer":
		s := string(v.Value)
		if unq, ok := strings.CutPrefix(s, `"`); ok {
			s = strings.TrimSuffix(unq, `"`)
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("decode integer: %w", err)
		}
		return n, nil
	case "float":
		f, err := strconv.ParseFloat(string(v.Value), 64)
		if err != nil {
			return nil, fmt.Errorf("decode float: %w", err)
		}
		return f, nil
	case "text":
		var s string
		if err := json.Unmarshal(v.Value, &s); err != nil {
			return nil, fmt.Errorf("decode text: %w", err)
		}
		return s, nil
	case "blob":
		b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(v.Base64, "="))
		if err != nil {
			return nil, fmt.Errorf("decode blob: %w", err)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("unknown value type %q", v.Type)
	}
}

// decodeHTTPError reads the Error structure (or libsql's {"error": "..."})
// from the body of a failed pipeline, or keeps a bounded prefix of a body
// that is not one.
func decodeHTTPError(status int, b []byte) *Error {
	var body struct {
		Message string `json:"message"`
		Code    string `json:"code"`
		Error   string `json:"error"`
	}
	e := &Error{Status: status}
	if json.Unmarshal(b, &body) == nil && (body.Message != "" || body.Error != "") {
		e.Message, e.Code = body.Message, body.Code
		if e.Message == "" {
			e.Message = body.Error
		}
		return e
	}
	text := strings.TrimSpace(strings.ToValidUTF8(string(b), "\uFFFD"))
	if len(text) > 200 {
		text = text[:200] + "..."
	}
	if text == "" {
		text = "empty response"
	}
	e.Message = "server error: " + text
	return e
}
