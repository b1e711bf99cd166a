// Package jsonschema checks a tool's input against its inputSchema before any money moves. It implements the
// subset of JSON Schema 2020-12 that tool authors use, compiled once when the catalog is parsed:
//
//   - applicators: properties, patternProperties, additionalProperties (a boolean or a schema), items (a
//     schema), prefixItems, allOf, anyOf, oneOf, not, and $ref to a schema of the same document ("#",
//     "#/$defs/name", or any JSON Pointer to a subschema), with $defs;
//   - assertions: type (a name or a list; "integer" is a number with no fractional part, so 1.0 is one),
//     required, enum, const, minimum, maximum, exclusiveMinimum, exclusiveMaximum, multipleOf, minLength and
//     maxLength (in Unicode code points), pattern (a Go regexp: RE2 syntax and semantics, unanchored like
//     ECMA-262's; lookarounds and backreferences are refused at compile time), minItems, maxItems, uniqueItems,
//     minProperties, maxProperties;
//   - annotations, accepted and ignored: title, description, default, examples, format, $schema, $id (it does
//     not change the base of $ref), $comment, deprecated, readOnly, writeOnly.
//
// Any other keyword is a compile error naming it: a keyword silently ignored would let an author believe it is
// enforced. Numbers are compared exactly as decimals (never through float64), so integers beyond 2^53 and
// literals such as 1e400 are judged by their value; equality (enum, const, uniqueItems) is JSON equality, with
// 1 and 1.0 equal and object members unordered.
//
// Validation is bounded whatever the input and schema: at most MaxViolations violations are collected, at
// most MaxSteps steps of work are done (a violation with keyword "complexity" says when they ran out), and
// the recursion follows the data (whose depth the caller bounds, see package safejson) and the schema, with
// at most MaxRefChain $ref hops in a row that consume no data (a schema that refers to itself without
// descending into the input fails instead of looping) and at most maxDepth nested evaluations.
package jsonschema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/toolgate/toolgate-go/handler/safejson"
)

// Limits of one validation.
const (
	// MaxViolations is the most violations Validate returns.
	MaxViolations = 20
	// MaxSteps bounds the work of one Validate: a step per (schema, value)
	// pair visited, object member, and value compared by enum, const or
	// uniqueItems, and per 64 bytes a pattern or length scans. A 1 MiB input
	// of small values checked once each fits; spending all of it takes about
	// 70 ms natively (BenchmarkValidateWorstCase), a typical tool input a
	// few microseconds.
	MaxSteps = 1_000_000
	// MaxRefChain is the most $ref hops in a row without descending into
	// the input.
	MaxRefChain = 32
	// maxDepth bounds nested evaluations (data depth, $ref and combinator
	// nesting together), far below what would overflow the wasm stack.
	maxDepth = 512
)

// Schema is a compiled schema; it is immutable and safe for concurrent use.
type Schema struct {
	root *node
}

// SchemaError says why a schema does not compile: the JSON Pointer of the
// subschema ("" for the root), the keyword at fault, and why.
type SchemaError struct {
	Pointer string
	Keyword string
	Reason  string
}

// Error implements error.
func (e *SchemaError) Error() string {
	at := ""
	if e.Pointer != "" {
		at = " at " + e.Pointer
	}
	if e.Keyword == "" {
		return e.Reason + at
	}
	return fmt.Sprintf("keyword %q%s: %s", e.Keyword, at, e.Reason)
}

// node is one compiled schema.
type node struct {
	// boolean schemas: always (true) or never (false) valid.
	always, never bool

	types        uint8 // bit set of typeNames; 0 means any
	typeList     string
	properties   map[string]*node
	required     []string
	patternProps []patternProp
	additional   *node
	prefixItems  []*node
	items        *node
	minItems     int
	maxItems     int // -1: none
	uniqueItems  bool
	enum         []string // canonical forms
	enumText     string
	constKey     *string
	constText    string
	minimum      *decimal
	maximum      *decimal
	exclMinimum  *decimal
	exclMaximum  *decimal
	multipleOf   *decimal
	minLength    int
	maxLength    int // -1: none
	pattern      *regexp.Regexp
	minProps     int
	maxProps     int // -1: none
	allOf        []*node
	anyOf        []*node
	oneOf        []*node
	not          *node
	ref          *node
	refText      string
}

type patternProp struct {
	re   *regexp.Regexp
	node *node
}

var typeNames = []string{"null", "boolean", "object", "array", "number", "string", "integer"}

const (
	tNull uint8 = 1 << iota
	tBoolean
	tObject
	tArray
	tNumber
	tString
	tInteger
)

// annotations are accepted and ignored.
var annotations = map[string]bool{
	"title": true, "description": true, "default": true, "examples": true, "format": true,
	"$schema": true, "$id": true, "$comment": true, "deprecated": true, "readOnly": true, "writeOnly": true,
}

type compiler struct {
	byPointer map[string]*node
	refs      []pendingRef
}

type pendingRef struct {
	n       *node
	ref     string
	pointer string
}

// Compile compiles a schema document (JSON). It returns a *SchemaError for
// a keyword it does not support, a keyword whose value is not what 2020-12
// allows, or a $ref that does not resolve within the document; an error for
// JSON it may not decode (see safejson.Check).
func Compile(doc []byte) (*Schema, error) {
	if reason := safejson.Check(doc, safejson.MaxDepth); reason != "" {
		return nil, errors.New(reason)
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("unexpected data after the schema")
	}
	c := &compiler{byPointer: map[string]*node{}}
	root, err := c.compile(v, "")
	if err != nil {
		return nil, err
	}
	for _, r := range c.refs {
		target, err := c.resolve(r.ref)
		if err != nil {
			return nil, &SchemaError{Pointer: r.pointer, Keyword: "$ref", Reason: err.Error()}
		}
		r.n.ref = target
	}
	return &Schema{root: root}, nil
}

func (c *compiler) resolve(ref string) (*node, error) {
	frag, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return nil, fmt.Errorf("%q is not a local reference: only \"#\" and \"#/...\" (such as \"#/$defs/name\") "+
			"are supported", ref)
	}
	p, err := url.PathUnescape(frag)
	if err != nil {
		return nil, fmt.Errorf("%q is not a valid URI fragment", ref)
	}
	n, ok := c.byPointer[p]
	if !ok {
		return nil, fmt.Errorf("%q does not point to a schema in this document", ref)
	}
	return n, nil
}

func (c *compiler) compile(v any, ptr string) (*node, error) {
	switch s := v.(type) {
	case bool:
		n := &node{always: s, never: !s}
		c.byPointer[ptr] = n
		return n, nil
	case map[string]any:
		n := &node{maxItems: -1, maxLength: -1, maxProps: -1}
		c.byPointer[ptr] = n
		keys := make([]string, 0, len(s))
		for k := range s {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := c.keyword(n, k, s[k], ptr); err != nil {
				return nil, err
			}
		}
		return n, nil
	}
	return nil, &SchemaError{Pointer: ptr, Reason: "a schema must be a JSON object or a boolean"}
}

// keyword compiles one keyword of the schema at ptr into n.
func (c *compiler) keyword(n *node, k string, v any, ptr string) error {
	bad := func(format string, args ...any) error {
		return &SchemaError{Pointer: ptr, Keyword: k, Reason: fmt.Sprintf(format, args...)}
	}
	sub := func(v any, parts ...string) (*node, error) {
		p := ptr + "/" + escape(k)
		for _, part := range parts {
			p += "/" + escape(part)
		}
		return c.compile(v, p)
	}
	var err error
	switch k {
	case "type":
		n.types, n.typeList, err = compileType(v)
		if err != nil {
			return bad("%s", err)
		}
	case "properties", "patternProperties", "$defs":
		m, ok := v.(map[string]any)
		if !ok {
			return bad("must be an object of schemas")
		}
		names := make([]string, 0, len(m))
		for name := range m {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			child, err := sub(m[name], name)
			if err != nil {
				return err
			}
			switch k {
			case "properties":
				if n.properties == nil {
					n.properties = map[string]*node{}
				}
				n.properties[name] = child
			case "patternProperties":
				re, err := regexp.Compile(name)
				if err != nil {
					return bad("%q is not a Go (RE2) regular expression: %v", name, err)
				}
				n.patternProps = append(n.patternProps, patternProp{re: re, node: child})
			}
		}
	case "required":
		list, ok := v.([]any)
		if !ok {
			return bad("must be an array of strings")
		}
		seen := map[string]bool{}
		for _, e := range list {
			s, ok := e.(string)
			if !ok || seen[s] {
				return bad("must be an array of distinct strings")
			}
			seen[s] = true
			n.required = append(n.required, s)
		}
	case "additionalProperties", "items", "not":
		child, err := sub(v)
		if err != nil {
			if _, isArray := v.([]any); isArray && k == "items" {
				return bad("must be a schema (in 2020-12 a tuple is prefixItems)")
			}
			return err
		}
		switch k {
		case "additionalProperties":
			n.additional = child
		case "items":
			n.items = child
		case "not":
			n.not = child
		}
	case "prefixItems", "allOf", "anyOf", "oneOf":
		list, ok := v.([]any)
		if !ok || len(list) == 0 {
			return bad("must be a non-empty array of schemas")
		}
		nodes := make([]*node, len(list))
		for i, e := range list {
			if nodes[i], err = sub(e, strconv.Itoa(i)); err != nil {
				return err
			}
		}
		switch k {
		case "prefixItems":
			n.prefixItems = nodes
		case "allOf":
			n.allOf = nodes
		case "anyOf":
			n.anyOf = nodes
		case "oneOf":
			n.oneOf = nodes
		}
	case "minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties":
		i, ok := count(v)
		if !ok {
			return bad("must be a non-negative integer")
		}
		switch k {
		case "minItems":
			n.minItems = i
		case "maxItems":
			n.maxItems = i
		case "minLength":
			n.minLength = i
		case "maxLength":
			n.maxLength = i
		case "minProperties":
			n.minProps = i
		case "maxProperties":
			n.maxProps = i
		}
	case "uniqueItems":
		b, ok := v.(bool)
		if !ok {
			return bad("must be a boolean")
		}
		n.uniqueItems = b
	case "enum":
		list, ok := v.([]any)
		if !ok || len(list) == 0 {
			return bad("must be a non-empty array")
		}
		texts := make([]string, len(list))
		for i, e := range list {
			key, _ := canonicalKey(e, nil)
			n.enum = append(n.enum, key)
			b, _ := safejson.MarshalNoEscape(e)
			texts[i] = string(b)
		}
		n.enumText = shorten(strings.Join(texts, ", "))
	case "const":
		key, _ := canonicalKey(v, nil)
		n.constKey = &key
		b, _ := safejson.MarshalNoEscape(v)
		n.constText = shorten(string(b))
	case "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf":
		d, ok := numberOf(v)
		if !ok {
			return bad("must be a number")
		}
		switch k {
		case "minimum":
			n.minimum = &d
		case "maximum":
			n.maximum = &d
		case "exclusiveMinimum":
			n.exclMinimum = &d
		case "exclusiveMaximum":
			n.exclMaximum = &d
		case "multipleOf":
			if d.sign() <= 0 {
				return bad("must be a number greater than 0")
			}
			if len(d.digits) > 64 {
				return bad("must have at most 64 significant digits")
			}
			n.multipleOf = &d
		}
	case "pattern":
		s, ok := v.(string)
		if !ok {
			return bad("must be a string")
		}
		if n.pattern, err = regexp.Compile(s); err != nil {
			return bad("%q is not a Go (RE2) regular expression: %v", s, err)
		}
	case "$ref":
		s, ok := v.(string)
		if !ok {
			return bad("must be a string")
		}
		n.refText = s
		c.refs = append(c.refs, pendingRef{n: n, ref: s, pointer: ptr})
	default:
		if !annotations[k] {
			return bad("is not supported (toolgate enforces a subset of JSON Schema 2020-12, see the README); " +
				"remove it or express it with supported keywords")
		}
	}
	return nil
}

func compileType(v any) (uint8, string, error) {
	var names []any
	switch t := v.(type) {
	case string:
		names = []any{t}
	case []any:
		names = t
	}
	if len(names) == 0 {
		return 0, "", errors.New("must be a type name or a non-empty array of them")
	}
	var set uint8
	var list []string
	for _, e := range names {
		s, _ := e.(string)
		bit := uint8(0)
		for i, name := range typeNames {
			if s == name {
				bit = 1 << i
			}
		}
		if bit == 0 {
			return 0, "", fmt.Errorf("%q is not a type (null, boolean, object, array, number, string, integer)", s)
		}
		if set&bit != 0 {
			return 0, "", fmt.Errorf("%q is listed twice", s)
		}
		set |= bit
		list = append(list, s)
	}
	return set, strings.Join(list, " or "), nil
}

// count reads a non-negative integer keyword value (1.0 is one), up to
// 2^31-1.
func count(v any) (int, bool) {
	d, ok := numberOf(v)
	switch {
	case !ok || d.neg || !d.isInteger():
		return 0, false
	case d.digits == "":
		return 0, true
	case int64(len(d.digits))+d.exp > 10:
		return 0, false
	}
	i, err := strconv.ParseInt(d.digits+strings.Repeat("0", int(d.exp)), 10, 32)
	return int(i), err == nil
}

// escape escapes a JSON Pointer token (RFC 6901).
func escape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// shorten cuts a text for a message to at most 200 bytes (on a rune
// boundary).
func shorten(s string) string {
	if len(s) <= 200 {
		return s
	}
	cut := 197
	for cut > 0 && s[cut]&0xc0 == 0x80 {
		cut--
	}
	return s[:cut] + "..."
}
