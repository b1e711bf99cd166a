package jsonschema_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/jsonschema"
)

// decode decodes an instance as the engine does (UseNumber).
func decode(t testing.TB, s string) any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	require.NoError(t, dec.Decode(&v), s)
	return v
}

// brief renders violations as "path keyword" lines.
func brief(vs []jsonschema.Violation) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Path+" "+v.Keyword)
	}
	return out
}

type invalid struct {
	in   string
	want []string // "path keyword", in order
}

func TestValidateKeywords(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		schema  string
		valid   []string
		invalid []invalid
	}{
		"type string": {`{"type":"string"}`, []string{`""`, `"x"`},
			[]invalid{{`1`, []string{" type"}}, {`null`, []string{" type"}}, {`{}`, []string{" type"}}}},
		"type list": {`{"type":["string","null"]}`, []string{`"x"`, `null`},
			[]invalid{{`true`, []string{" type"}}, {`[]`, []string{" type"}}}},
		"type integer": {`{"type":"integer"}`,
			[]string{`1`, `1.0`, `-3`, `1e3`, `1.50e1`, `0`, `-0.0`, `9007199254740993`, `123456789012345678901234567890`},
			[]invalid{{`1.5`, []string{" type"}}, {`1e-1`, []string{" type"}}, {`"1"`, []string{" type"}},
				{`9007199254740993.5`, []string{" type"}}}},
		"type number takes integers": {`{"type":"number"}`, []string{`1`, `1.5`, `-1e400`}, []invalid{{`"1"`, []string{" type"}}}},
		"type boolean object array null": {`{"properties":{"b":{"type":"boolean"},"o":{"type":"object"},"a":{"type":"array"},"n":{"type":"null"}}}`,
			[]string{`{"b":true,"o":{},"a":[],"n":null}`},
			[]invalid{{`{"a":{},"b":0,"n":false,"o":[]}`, []string{"/a type", "/b type", "/n type", "/o type"}}}},
		"properties and required": {`{"type":"object","properties":{"q":{"type":"string"},"n":{"type":"integer"}},"required":["q"]}`,
			[]string{`{"q":"x"}`, `{"q":"x","n":2,"other":[]}`},
			[]invalid{{`{}`, []string{" required"}}, {`{"q":1,"n":"2"}`, []string{"/n type", "/q type"}},
				{`[]`, []string{" type"}}}},
		"required on a non-object is ignored": {`{"required":["a"]}`, []string{`1`, `"s"`, `[]`}, []invalid{{`{}`, []string{" required"}}}},
		"additionalProperties false with patternProperties": {
			`{"properties":{"a":{}},"patternProperties":{"^x-":{"type":"string"}},"additionalProperties":false}`,
			[]string{`{}`, `{"a":1,"x-b":"s"}`},
			[]invalid{{`{"b":1}`, []string{"/b additionalProperties"}}, {`{"x-b":1}`, []string{"/x-b type"}},
				{`{"a":1,"y":2,"x-":"ok","z/~":3}`, []string{"/y additionalProperties", "/z~1~0 additionalProperties"}}}},
		"additionalProperties schema": {`{"properties":{"a":{}},"additionalProperties":{"type":"integer"}}`,
			[]string{`{"a":"s","b":1}`}, []invalid{{`{"a":"s","b":"x"}`, []string{"/b type"}}}},
		"patternProperties unanchored (RE2)": {`{"patternProperties":{"id":{"type":"integer"}}}`,
			[]string{`{"userid":1,"name":"x"}`}, []invalid{{`{"ids":"x"}`, []string{"/ids type"}}}},
		"items": {`{"items":{"type":"integer"}}`, []string{`[]`, `[1,2.0]`, `{"not":"array"}`},
			[]invalid{{`[1,"x",2,null]`, []string{"/1 type", "/3 type"}}}},
		"prefixItems and items false": {`{"prefixItems":[{"type":"string"},{"type":"integer"}],"items":false}`,
			[]string{`[]`, `["a"]`, `["a",1]`}, []invalid{{`[1,"a"]`, []string{"/0 type", "/1 type"}}, {`["a",1,2,3]`, []string{"/2 items"}}}},
		"prefixItems then items": {`{"prefixItems":[{"type":"string"}],"items":{"type":"integer"}}`,
			[]string{`["a",1,2]`}, []invalid{{`["a",1,"b"]`, []string{"/2 type"}}}},
		"minItems maxItems": {`{"minItems":1,"maxItems":2}`, []string{`[1]`, `[1,2]`, `"not an array"`},
			[]invalid{{`[]`, []string{" minItems"}}, {`[1,2,3]`, []string{" maxItems"}}}},
		"uniqueItems": {`{"uniqueItems":true}`, []string{`[]`, `[1,"1",[1],{"a":1},true,null]`, `[{"a":1,"b":2},{"a":2,"b":1}]`},
			[]invalid{{`[1,1.0]`, []string{" uniqueItems"}}, {`[{"a":1,"b":[2]},{"b":[2.0],"a":1e0}]`, []string{" uniqueItems"}},
				{`["x","y","x","y"]`, []string{" uniqueItems", " uniqueItems"}}}},
		"enum": {`{"enum":["a",1,null,{"k":[1]}]}`, []string{`"a"`, `1`, `1.0`, `null`, `{"k":[1.0]}`},
			[]invalid{{`"b"`, []string{" enum"}}, {`"1"`, []string{" enum"}}, {`{"k":[1],"x":1}`, []string{" enum"}}}},
		"const": {`{"const":{"a":[1,"x"]}}`, []string{`{"a":[1.0,"x"]}`}, []invalid{{`{"a":[1,"y"]}`, []string{" const"}}, {`null`, []string{" const"}}}},
		"minimum maximum": {`{"minimum":1,"maximum":10}`, []string{`1`, `10`, `5.5`, `1.0e1`, `"x"`},
			[]invalid{{`0.999999999999999999999`, []string{" minimum"}}, {`10.000000000000000000001`, []string{" maximum"}}, {`-1e400`, []string{" minimum"}}}},
		"exclusive bounds": {`{"exclusiveMinimum":0,"exclusiveMaximum":1}`, []string{`0.5`, `1e-400`},
			[]invalid{{`0`, []string{" exclusiveMinimum"}}, {`-0.0`, []string{" exclusiveMinimum"}}, {`1.0`, []string{" exclusiveMaximum"}}}},
		"beyond 2^53": {`{"type":"integer","maximum":9007199254740992}`, []string{`9007199254740992`, `-9007199254740993`},
			[]invalid{{`9007199254740993`, []string{" maximum"}}, {`18446744073709551616`, []string{" maximum"}}}},
		"multipleOf decimal": {`{"multipleOf":0.01}`, []string{`0.07`, `1`, `0`, `12345678901234567890.01`, `1e400`, `-0.3`},
			[]invalid{{`0.001`, []string{" multipleOf"}}, {`1.005`, []string{" multipleOf"}}}},
		"multipleOf integer": {`{"multipleOf":7}`, []string{`14`, `7e1000`, `-21.0`, `700000000000000000000000000000000000007`},
			[]invalid{{`15`, []string{" multipleOf"}}, {`1e1000`, []string{" multipleOf"}}, {`7.7`, []string{" multipleOf"}}}},
		"minLength maxLength in code points": {`{"minLength":2,"maxLength":3}`, []string{`"ab"`, `"日本語"`, `"😀😀"`, `"e\u0301x"`, `5`},
			[]invalid{{`"a"`, []string{" minLength"}}, {`"😀"`, []string{" minLength"}}, {`"日本語!"`, []string{" maxLength"}}}},
		"pattern unanchored": {`{"pattern":"[0-9]{3}"}`, []string{`"a123b"`, `1`}, []invalid{{`"12a"`, []string{" pattern"}}}},
		"pattern anchored":   {`{"pattern":"^[a-z]+$"}`, []string{`"abc"`}, []invalid{{`"abc1"`, []string{" pattern"}}, {`""`, []string{" pattern"}}}},
		"minProperties maxProperties": {`{"minProperties":1,"maxProperties":2}`, []string{`{"a":1}`, `{"a":1,"b":2}`, `[]`},
			[]invalid{{`{}`, []string{" minProperties"}}, {`{"a":1,"b":2,"c":3}`, []string{" maxProperties"}}}},
		"allOf": {`{"allOf":[{"type":"integer"},{"minimum":3}]}`, []string{`3`},
			[]invalid{{`2`, []string{" minimum"}}, {`2.5`, []string{" type", " minimum"}}}},
		"anyOf": {`{"anyOf":[{"type":"string"},{"type":"integer"}]}`, []string{`"a"`, `1`}, []invalid{{`1.5`, []string{" anyOf"}}}},
		"oneOf with two matches": {`{"oneOf":[{"type":"integer"},{"minimum":0}]}`, []string{`-1`, `0.5`},
			[]invalid{{`1`, []string{" oneOf"}}, {`-0.5`, []string{" oneOf"}}}},
		"not":             {`{"not":{"type":"null"}}`, []string{`1`, `{}`}, []invalid{{`null`, []string{" not"}}}},
		"boolean schemas": {`{"properties":{"yes":true,"no":false}}`, []string{`{"yes":[1]}`}, []invalid{{`{"no":1}`, []string{"/no false"}}}},
		"ref to defs": {`{"$defs":{"pos":{"type":"integer","minimum":1}},"properties":{"a":{"$ref":"#/$defs/pos"}}}`,
			[]string{`{"a":1}`}, []invalid{{`{"a":0}`, []string{"/a minimum"}}}},
		"nested ref": {`{"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"type":"object","properties":{"c":{"$ref":"#/$defs/c"}}},"c":{"enum":[1,2]}},"$ref":"#/$defs/a"}`,
			[]string{`{"c":2}`, `{}`}, []invalid{{`{"c":3}`, []string{"/c enum"}}, {`[]`, []string{" type"}}}},
		"recursive ref to the root": {`{"type":"object","properties":{"name":{"type":"string"},"children":{"type":"array","items":{"$ref":"#"}}},"required":["name"]}`,
			[]string{`{"name":"a","children":[{"name":"b","children":[{"name":"c"}]}]}`},
			[]invalid{{`{"name":"a","children":[{"name":"b","children":[{"children":[]}]}]}`, []string{"/children/0/children/0 required"}}}},
		"ref with siblings": {`{"$defs":{"s":{"type":"string"}},"$ref":"#/$defs/s","maxLength":1}`, []string{`"a"`},
			[]invalid{{`"ab"`, []string{" maxLength"}}, {`1`, []string{" type"}}}},
		"ref escaped pointer": {`{"$defs":{"a/b":{"type":"string"},"c%d":{"type":"integer"}},"properties":{"x":{"$ref":"#/$defs/a~1b"},"y":{"$ref":"#/$defs/c%25d"}}}`,
			[]string{`{"x":"s","y":1}`}, []invalid{{`{"x":1,"y":"s"}`, []string{"/x type", "/y type"}}}},
		"self-referencing loop stops": {`{"$ref":"#"}`, nil, []invalid{{`{}`, []string{" $ref"}}}},
		"mutual ref loop stops": {`{"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"allOf":[{"$ref":"#/$defs/a"}]}},"$ref":"#/$defs/a"}`, nil,
			[]invalid{{`1`, []string{" $ref"}}}},
		"annotations ignored": {`{"$schema":"https://json-schema.org/draft/2020-12/schema","$id":"https://x.test/s","$comment":"c","title":"t","description":"d",` +
			`"default":1,"examples":[1],"format":"email","deprecated":true,"readOnly":true,"writeOnly":false,"type":"string"}`,
			[]string{`"not an email"`}, []invalid{{`1`, []string{" type"}}}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := jsonschema.Compile([]byte(tc.schema))
			require.NoError(t, err)
			for _, in := range tc.valid {
				vs, truncated := s.Validate(decode(t, in))
				require.Empty(t, vs, "valid: %s", in)
				require.False(t, truncated)
			}
			for _, c := range tc.invalid {
				vs, _ := s.Validate(decode(t, c.in))
				require.Equal(t, c.want, brief(vs), "invalid: %s -> %v", c.in, vs)
				for _, v := range vs {
					require.NotEmpty(t, v.Message)
				}
			}
		})
	}
}

func TestValidateMessages(t *testing.T) {
	t.Parallel()
	s, err := jsonschema.Compile([]byte(`{"type":"object","properties":{"n":{"type":"integer","minimum":1,"multipleOf":0.5},` +
		`"s":{"maxLength":2,"pattern":"^a"},"e":{"enum":["x","y"]}},"required":["q"],"additionalProperties":false}`))
	require.NoError(t, err)
	vs, truncated := s.Validate(decode(t, `{"n":0.25,"s":"bcd","e":"z","zz":1}`))
	require.False(t, truncated)
	require.Equal(t, []jsonschema.Violation{
		{Path: "", Keyword: "required", Message: `missing required property "q"`},
		{Path: "/e", Keyword: "enum", Message: `must be one of: "x", "y"`},
		{Path: "/n", Keyword: "type", Message: "must be integer, not number"},
		{Path: "/n", Keyword: "minimum", Message: "must be at least 1"},
		{Path: "/n", Keyword: "multipleOf", Message: "must be a multiple of 0.5"},
		{Path: "/s", Keyword: "maxLength", Message: "must be at most 2 characters long, is 3"},
		{Path: "/s", Keyword: "pattern", Message: `must match the pattern "^a"`},
		{Path: "/zz", Keyword: "additionalProperties", Message: "is not allowed: the schema does not list this property"},
	}, vs)
}

func TestValidateAcceptsFloat64(t *testing.T) {
	t.Parallel()
	s, err := jsonschema.Compile([]byte(`{"type":"integer","maximum":3,"multipleOf":0.1}`))
	require.NoError(t, err)
	vs, _ := s.Validate(float64(3))
	require.Empty(t, vs)
	vs, _ = s.Validate(3.5)
	require.Equal(t, []string{" type", " maximum"}, brief(vs))
	s, err = jsonschema.Compile([]byte(`{"multipleOf":0.1}`))
	require.NoError(t, err)
	vs, _ = s.Validate(0.3)
	require.Empty(t, vs, "0.3 is a multiple of 0.1 as a decimal; in float64 arithmetic 0.3/0.1 is not whole")
}

func TestValidateIsBounded(t *testing.T) {
	t.Parallel()
	// At most MaxViolations violations, then truncated.
	s, err := jsonschema.Compile([]byte(`{"items":{"type":"string"}}`))
	require.NoError(t, err)
	in := "[" + strings.Repeat("1,", 99) + "1]"
	vs, truncated := s.Validate(decode(t, in))
	require.Len(t, vs, jsonschema.MaxViolations)
	require.True(t, truncated)
	require.Equal(t, "/19", vs[19].Path)

	// Exactly MaxViolations is not truncated.
	in = "[" + strings.Repeat("1,", jsonschema.MaxViolations-1) + "1]"
	vs, truncated = s.Validate(decode(t, in))
	require.Len(t, vs, jsonschema.MaxViolations)
	require.False(t, truncated)

	// Exponential branching runs out of steps instead of running for ever:
	// each level doubles the work of a probe.
	s, err = jsonschema.Compile([]byte(`{"$defs":{"x":{"anyOf":[{"$ref":"#/$defs/x","type":"string"},{"$ref":"#/$defs/x"}]}},"$ref":"#/$defs/x"}`))
	require.NoError(t, err)
	vs, truncated = s.ValidateWithin(decode(t, `1`), 10_000)
	require.True(t, truncated)
	require.Equal(t, "complexity", vs[len(vs)-1].Keyword)
	vs, truncated = s.Validate(decode(t, `1`))
	require.True(t, truncated)
	require.Equal(t, "complexity", vs[len(vs)-1].Keyword)

	// A large valid input within the budget passes; over it, it fails with
	// complexity and no false violations.
	s, err = jsonschema.Compile([]byte(`{"items":{"type":"integer"}}`))
	require.NoError(t, err)
	in = "[" + strings.Repeat("1,", 9999) + "1]"
	vs, truncated = s.Validate(decode(t, in))
	require.Empty(t, vs)
	require.False(t, truncated)
	vs, truncated = s.ValidateWithin(decode(t, in), 5000)
	require.Equal(t, []string{" complexity"}, brief(vs))
	require.True(t, truncated)

	// A 1 MiB array of small values, each checked once, fits the budget.
	in = "[" + strings.Repeat("1,", 1<<19-1) + "1]"
	require.Greater(t, len(in), 1<<20)
	vs, truncated = s.Validate(decode(t, in))
	require.Empty(t, vs)
	require.False(t, truncated)

	// A deep recursive schema on deep data follows the data, then stops at
	// the schema's end.
	s, err = jsonschema.Compile([]byte(`{"type":"array","items":{"$ref":"#"}}`))
	require.NoError(t, err)
	deep := strings.Repeat("[", 128) + strings.Repeat("]", 128)
	vs, _ = s.Validate(decode(t, deep))
	require.Empty(t, vs)
	vs, _ = s.Validate(decode(t, strings.Repeat("[", 127)+"1"+strings.Repeat("]", 127)))
	require.Equal(t, []string{"/" + strings.TrimSuffix(strings.Repeat("0/", 127), "/") + " type"}, brief(vs))
}

func TestCompileRejects(t *testing.T) {
	t.Parallel()
	cases := map[string]struct{ schema, want string }{
		"unknown keyword":          {`{"type":"object","if":{}}`, `keyword "if": is not supported`},
		"unknown nested keyword":   {`{"properties":{"a":{"properties":{"b":{"dependentRequired":{}}}}}}`, `keyword "dependentRequired" at /properties/a/properties/b: is not supported`},
		"unknown in defs":          {`{"$defs":{"x":{"unevaluatedProperties":false}}}`, `keyword "unevaluatedProperties" at /$defs/x`},
		"definitions (draft 7)":    {`{"definitions":{}}`, `keyword "definitions": is not supported`},
		"$anchor":                  {`{"$anchor":"a"}`, `keyword "$anchor"`},
		"bad type":                 {`{"type":"int"}`, `keyword "type": "int" is not a type`},
		"type twice":               {`{"type":["string","string"]}`, `"string" is listed twice`},
		"empty type list":          {`{"type":[]}`, `keyword "type": must be a type name`},
		"items array (draft 7)":    {`{"items":[{}]}`, `keyword "items": must be a schema (in 2020-12 a tuple is prefixItems)`},
		"schema not object":        {`{"properties":{"a":1}}`, `a schema must be a JSON object or a boolean at /properties/a`},
		"required not strings":     {`{"required":[1]}`, `keyword "required": must be an array of distinct strings`},
		"required twice":           {`{"required":["a","a"]}`, `distinct`},
		"negative minLength":       {`{"minLength":-1}`, `keyword "minLength": must be a non-negative integer`},
		"fractional maxItems":      {`{"maxItems":1.5}`, `keyword "maxItems": must be a non-negative integer`},
		"huge maxLength":           {`{"maxLength":1e20}`, `keyword "maxLength": must be a non-negative integer`},
		"uniqueItems not bool":     {`{"uniqueItems":1}`, `keyword "uniqueItems": must be a boolean`},
		"empty enum":               {`{"enum":[]}`, `keyword "enum": must be a non-empty array`},
		"minimum not number":       {`{"minimum":"1"}`, `keyword "minimum": must be a number`},
		"multipleOf zero":          {`{"multipleOf":0}`, `keyword "multipleOf": must be a number greater than 0`},
		"multipleOf negative":      {`{"multipleOf":-2}`, `greater than 0`},
		"pattern lookahead":        {`{"pattern":"(?=a)"}`, `keyword "pattern": "(?=a)" is not a Go (RE2) regular expression`},
		"patternProperties bad re": {`{"patternProperties":{"(":{}}}`, `keyword "patternProperties": "(" is not a Go (RE2)`},
		"empty anyOf":              {`{"anyOf":[]}`, `keyword "anyOf": must be a non-empty array of schemas`},
		"remote ref":               {`{"$ref":"https://x.test/s.json"}`, `keyword "$ref": "https://x.test/s.json" is not a local reference`},
		"dangling ref":             {`{"properties":{"a":{"$ref":"#/$defs/nope"}}}`, `keyword "$ref" at /properties/a: "#/$defs/nope" does not point to a schema`},
		"ref to a non-schema":      {`{"properties":{"a":{}},"$ref":"#/properties"}`, `does not point to a schema`},
		"ref not string":           {`{"$ref":1}`, `keyword "$ref": must be a string`},
		"too deep":                 {strings.Repeat(`{"not":`, 130) + "{}" + strings.Repeat("}", 130), "deeper than 128"},
		"trailing data":            {`{} {}`, "unexpected data"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := jsonschema.Compile([]byte(tc.schema))
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
	var se *jsonschema.SchemaError
	_, err := jsonschema.Compile([]byte(`{"properties":{"a~b":{"contains":{}}}}`))
	require.ErrorAs(t, err, &se)
	require.Equal(t, jsonschema.SchemaError{Pointer: "/properties/a~0b", Keyword: "contains", Reason: se.Reason}, *se)
}

// FuzzValidate checks that no (schema, instance) pair makes Compile or
// Validate panic, loop or break their bounds.
func FuzzValidate(f *testing.F) {
	seeds := [][2]string{
		{`{"type":"object","properties":{"q":{"type":"string","minLength":1}},"required":["q"]}`, `{"q":"x"}`},
		{`{"$ref":"#"}`, `{}`},
		{`{"anyOf":[{"$ref":"#"},{"$ref":"#"}]}`, `[1,[2,[3]]]`},
		{`{"items":{"$ref":"#"},"uniqueItems":true}`, `[[],[[]],[[]]]`},
		{`{"multipleOf":1e-400,"maximum":1e400}`, `1e-401`},
		{`{"multipleOf":3}`, `1e999999999999999999999`},
		{`{"enum":[1,"a",{"b":[null]}],"const":1.0}`, `1`},
		{`{"patternProperties":{"^a":false},"additionalProperties":{"type":"integer"}}`, `{"ab":1,"c":2.5}`},
		{`{"oneOf":[{"type":"integer"},{"minimum":0}],"not":{"const":5}}`, `5`},
		{`{"prefixItems":[true,false],"items":false,"minItems":1,"maxItems":2}`, `[1,2,3]`},
		{`{"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"}`, `null`},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, schema, instance string) {
		s, err := jsonschema.Compile([]byte(schema))
		if err != nil {
			return
		}
		if !json.Valid([]byte(instance)) || bytes.Count([]byte(instance), []byte("[")) > 128 || bytes.Count([]byte(instance), []byte("{")) > 128 {
			return
		}
		dec := json.NewDecoder(strings.NewReader(instance))
		dec.UseNumber()
		var v any
		if dec.Decode(&v) != nil {
			return
		}
		vs, truncated := s.ValidateWithin(v, 20_000)
		require.LessOrEqual(t, len(vs), jsonschema.MaxViolations)
		if !truncated {
			// Validation is deterministic.
			again, _ := s.ValidateWithin(v, 20_000)
			require.Equal(t, vs, again, fmt.Sprint(schema, " ", instance))
		}
	})
}

// BenchmarkValidateWorstCase spends the whole MaxSteps budget (the most
// work one Validate can do) on an exponentially branching schema.
func BenchmarkValidateWorstCase(b *testing.B) {
	s, err := jsonschema.Compile([]byte(`{"$defs":{"x":{"anyOf":[{"$ref":"#/$defs/x","type":"string"},{"$ref":"#/$defs/x"}]}},"$ref":"#/$defs/x"}`))
	require.NoError(b, err)
	v := decode(b, `1`)
	for b.Loop() {
		_, truncated := s.Validate(v)
		require.True(b, truncated)
	}
}

// BenchmarkValidateTypical is a tool input of a few fields.
func BenchmarkValidateTypical(b *testing.B) {
	s, err := jsonschema.Compile([]byte(`{"type":"object","required":["q"],"additionalProperties":false,"properties":{` +
		`"q":{"type":"string","minLength":1,"maxLength":500},"limit":{"type":"integer","minimum":1,"maximum":100},` +
		`"lang":{"enum":["en","fr","de"]},"tags":{"type":"array","items":{"type":"string","pattern":"^[a-z]+$"},"uniqueItems":true}}}`))
	require.NoError(b, err)
	v := decode(b, `{"q":"what is the weather in Paris","limit":10,"lang":"fr","tags":["weather","travel"]}`)
	for b.Loop() {
		vs, _ := s.Validate(v)
		require.Empty(b, vs)
	}
}
