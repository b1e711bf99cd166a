//go:build !js

package hranatest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The JSON structures of Hrana over HTTP, version 2 (docs/HRANA_3_SPEC.md in
// tursodatabase/libsql). Unknown fields are ignored, as the spec requires.

type pipelineRequest struct {
	Baton    *string         `json:"baton"`
	Requests []streamRequest `json:"requests"`
}

type pipelineResponse struct {
	Baton   *string        `json:"baton"`
	BaseURL *string        `json:"base_url"`
	Results []streamResult `json:"results"`
}

type streamRequest struct {
	Type  string  `json:"type"`
	Stmt  *stmt   `json:"stmt"`
	Batch *batch  `json:"batch"`
	SQL   *string `json:"sql"`
	SQLID *int32  `json:"sql_id"`
}

type streamResult struct {
	Type     string          `json:"type"` // "ok" or "error"
	Response *streamResponse `json:"response,omitempty"`
	Error    *hranaError     `json:"error,omitempty"`
}

type streamResponse struct {
	Type         string `json:"type"`
	Result       any    `json:"result,omitempty"` // *stmtResult or *batchResult
	IsAutocommit *bool  `json:"is_autocommit,omitempty"`
}

type hranaError struct {
	Message string `json:"message"`
	Code    string `json:"code,omitempty"`
}

func (e *hranaError) Error() string { return e.Message }

type stmt struct {
	SQL       *string    `json:"sql"`
	SQLID     *int32     `json:"sql_id"`
	Args      []value    `json:"args"`
	NamedArgs []namedArg `json:"named_args"`
	WantRows  *bool      `json:"want_rows"` // absent means true
}

type namedArg struct {
	Name  string `json:"name"`
	Value value  `json:"value"`
}

type stmtResult struct {
	Cols             []col     `json:"cols"`
	Rows             [][]value `json:"rows"`
	AffectedRowCount int64     `json:"affected_row_count"`
	LastInsertRowid  *string   `json:"last_insert_rowid"`
}

type col struct {
	Name     *string `json:"name"`
	Decltype *string `json:"decltype"`
}

type batch struct {
	Steps []batchStep `json:"steps"`
}

type batchStep struct {
	Condition *batchCond `json:"condition"`
	Stmt      stmt       `json:"stmt"`
}

type batchCond struct {
	Type  string      `json:"type"`
	Step  *int        `json:"step"`
	Cond  *batchCond  `json:"cond"`
	Conds []batchCond `json:"conds"`
}

type batchResult struct {
	StepResults []*stmtResult `json:"step_results"`
	StepErrors  []*hranaError `json:"step_errors"`
}

// value is a Hrana value. v holds nil, int64, float64, string or []byte.
type value struct{ v any }

// timeLayout renders the time.Time that modernc.org/sqlite returns for TEXT
// values of columns declared DATE, DATETIME or TIMESTAMP. The driver parses
// such text and the original spelling is lost; this is the layout the libSQL
// Go client writes times in, and parses again.
const timeLayout = "2006-01-02 15:04:05.999999999-07:00"

// valueOf converts a value scanned by database/sql into a Hrana value.
func valueOf(src any) (value, error) {
	switch x := src.(type) {
	case nil, int64, float64, string, []byte:
		return value{x}, nil
	case bool:
		if x {
			return value{int64(1)}, nil
		}
		return value{int64(0)}, nil
	case time.Time:
		return value{x.Format(timeLayout)}, nil
	default:
		return value{}, fmt.Errorf("convert value: unsupported type %T", src)
	}
}

func (x value) MarshalJSON() ([]byte, error) {
	switch v := x.v.(type) {
	case nil:
		return []byte(`{"type":"null"}`), nil
	case int64:
		return json.Marshal(map[string]string{"type": "integer", "value": strconv.FormatInt(v, 10)})
	case float64:
		return json.Marshal(map[string]any{"type": "float", "value": v})
	case string:
		return json.Marshal(map[string]string{"type": "text", "value": v})
	case []byte:
		// Unpadded: libsql-client-go decodes blobs with base64.NoPadding.
		return json.Marshal(map[string]string{"type": "blob", "base64": base64.RawStdEncoding.EncodeToString(v)})
	default:
		return nil, fmt.Errorf("marshal value: unsupported type %T", x.v)
	}
}

func (x *value) UnmarshalJSON(b []byte) error {
	var raw struct {
		Type   string          `json:"type"`
		Value  json.RawMessage `json:"value"`
		Base64 string          `json:"base64"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("decode value: %w", err)
	}
	switch raw.Type {
	case "null":
		x.v = nil
	case "integer":
		// The spec sends integers as strings; accept bare numbers too.
		var s string
		if err := json.Unmarshal(raw.Value, &s); err != nil {
			s = string(raw.Value)
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("decode integer value: %w", err)
		}
		x.v = n
	case "float":
		var f float64
		if err := json.Unmarshal(raw.Value, &f); err != nil {
			return fmt.Errorf("decode float value: %w", err)
		}
		x.v = f
	case "text":
		var s string
		if err := json.Unmarshal(raw.Value, &s); err != nil {
			return fmt.Errorf("decode text value: %w", err)
		}
		x.v = s
	case "blob":
		blob, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(raw.Base64, "="))
		if err != nil {
			return fmt.Errorf("decode blob value: %w", err)
		}
		x.v = blob
	default:
		return fmt.Errorf("decode value: unknown type %q", raw.Type)
	}
	return nil
}
