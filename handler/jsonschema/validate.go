package jsonschema

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Violation is one way an input fails its schema.
type Violation struct {
	// Path is the JSON Pointer (RFC 6901) of the failing value in the
	// input; "" is the whole input.
	Path string `json:"path"`
	// Keyword is the schema keyword that failed, such as "required" or
	// "type"; "complexity" when the work ran out (MaxSteps).
	Keyword string `json:"keyword"`
	// Message says what is wrong. It quotes the schema, never the input.
	Message string `json:"message"`
}

// Validate checks instance, a value as encoding/json decodes it into an any
// (with UseNumber, so numbers keep their literal; a float64 is judged as its
// shortest decimal rendering), against s. It returns the violations in a
// deterministic order, nil when the instance is valid, and at most
// MaxViolations of them; truncated reports that there were more, or that the
// work ran out before the check finished (the last violation then has keyword
// "complexity"). The caller bounds the instance's depth (see package
// safejson); Validate never panics.
func (s *Schema) Validate(instance any) (violations []Violation, truncated bool) {
	return s.validate(instance, MaxSteps)
}

func (s *Schema) validate(instance any, steps int) ([]Violation, bool) {
	r := &run{steps: steps}
	e := evaluator{run: r, limit: MaxViolations + 1}
	e.eval(s.root, instance, nil, 0, 0)
	out, truncated := e.out, false
	if len(out) > MaxViolations {
		out, truncated = out[:MaxViolations], true
	}
	if r.exhausted {
		out = append(out[:min(len(out), MaxViolations-1)], Violation{Keyword: "complexity",
			Message: fmt.Sprintf("the input is too large or complex to check against the schema within %d steps", steps)})
		truncated = true
	}
	return out, truncated
}

// run is the work budget one Validate shares with its probes.
type run struct {
	steps     int
	exhausted bool
}

func (r *run) step(n int) bool {
	if r.exhausted {
		return false
	}
	r.steps -= n
	if r.steps < 0 {
		r.exhausted = true
	}
	return !r.exhausted
}

// path is a JSON Pointer built as the evaluation descends; nil is the root.
// It is rendered only for a violation.
type path struct {
	parent *path
	key    string
	index  int // when key is "" and isIndex
	isItem bool
}

func (p *path) String() string {
	var parts []string
	for q := p; q != nil; q = q.parent {
		if q.isItem {
			parts = append(parts, strconv.Itoa(q.index))
		} else {
			parts = append(parts, escape(q.key))
		}
	}
	var sb strings.Builder
	for i := len(parts) - 1; i >= 0; i-- {
		sb.WriteByte('/')
		sb.WriteString(parts[i])
	}
	return sb.String()
}

// evaluator collects violations, up to limit. A probe (anyOf, oneOf and
// not only need to know whether a schema matches) is quiet: it counts one
// failure and formats nothing, so a message is built only when reported.
type evaluator struct {
	run      *run
	out      []Violation
	limit    int
	quiet    bool
	failures int
}

func (e *evaluator) done() bool { return e.run.exhausted || e.failures >= e.limit }

func (e *evaluator) add(p *path, keyword string, message func() string) {
	if e.done() {
		return
	}
	e.failures++
	if !e.quiet {
		e.out = append(e.out, Violation{Path: p.String(), Keyword: keyword, Message: message()})
	}
}

// matches reports whether v is valid against n, without reporting why not.
func (e *evaluator) matches(n *node, v any, p *path, depth, refs int) bool {
	probe := evaluator{run: e.run, limit: 1, quiet: true}
	probe.eval(n, v, p, depth+1, refs)
	return probe.failures == 0 && !e.run.exhausted
}

// eval checks v against n. depth counts nested evaluations; refs counts
// the $ref hops since the evaluation last descended into the input.
func (e *evaluator) eval(n *node, v any, p *path, depth, refs int) {
	if e.done() || !e.run.step(1) {
		return
	}
	switch {
	case depth > maxDepth:
		e.add(p, "$ref", func() string { return fmt.Sprintf("the schema nests deeper than %d levels here", maxDepth) })
		return
	case n.never:
		e.add(p, "false", func() string { return "no value is allowed here (the schema is false)" })
		return
	case n.always:
		return
	}
	if n.ref != nil {
		if refs >= MaxRefChain {
			e.add(p, "$ref", func() string {
				return fmt.Sprintf("the schema follows more than %d $ref in a row without descending into the input "+
					"(a $ref loop)", MaxRefChain)
			})
		} else {
			e.eval(n.ref, v, p, depth+1, refs+1)
		}
	}
	num, isNum := numberOf(v)
	if n.types != 0 {
		if kind := kindOf(v, num, isNum); n.types&kind == 0 && !(kind == tInteger && n.types&tNumber != 0) {
			e.add(p, "type", func() string { return fmt.Sprintf("must be %s, not %s", n.typeList, kindName(kind, isNum)) })
		}
	}
	if n.constKey != nil || n.enum != nil {
		if key, ok := e.canonical(v); ok {
			if n.constKey != nil && key != *n.constKey {
				e.add(p, "const", func() string { return "must be " + n.constText })
			}
			if n.enum != nil && !contains(n.enum, key) {
				e.add(p, "enum", func() string { return "must be one of: " + n.enumText })
			}
		}
	}
	switch x := v.(type) {
	case map[string]any:
		e.object(n, x, p, depth)
	case []any:
		e.array(n, x, p, depth)
	case string:
		e.str(n, x, p)
	default:
		if isNum {
			e.number(n, num, p)
		}
	}
	for _, c := range n.allOf {
		e.eval(c, v, p, depth+1, refs)
	}
	if n.anyOf != nil {
		ok := false
		for _, c := range n.anyOf {
			if ok = e.matches(c, v, p, depth, refs); ok || e.run.exhausted {
				break
			}
		}
		if !ok {
			e.add(p, "anyOf", func() string {
				return fmt.Sprintf("must match at least one of the %d schemas in anyOf; it matches none", len(n.anyOf))
			})
		}
	}
	if n.oneOf != nil {
		var hits []int
		for i, c := range n.oneOf {
			if e.matches(c, v, p, depth, refs) {
				if hits = append(hits, i); len(hits) == 2 {
					break
				}
			}
			if e.run.exhausted {
				break
			}
		}
		switch len(hits) {
		case 0:
			e.add(p, "oneOf", func() string {
				return fmt.Sprintf("must match exactly one of the %d schemas in oneOf; it matches none", len(n.oneOf))
			})
		case 2:
			e.add(p, "oneOf", func() string {
				return fmt.Sprintf("must match exactly one of the schemas in oneOf; it matches #%d and #%d", hits[0], hits[1])
			})
		}
	}
	if n.not != nil && e.matches(n.not, v, p, depth, refs) {
		e.add(p, "not", func() string { return "must not match the schema in not" })
	}
}

func (e *evaluator) object(n *node, m map[string]any, p *path, depth int) {
	if len(m) < n.minProps {
		e.add(p, "minProperties", func() string {
			return fmt.Sprintf("must have at least %d properties, has %d", n.minProps, len(m))
		})
	}
	if n.maxProps >= 0 && len(m) > n.maxProps {
		e.add(p, "maxProperties", func() string {
			return fmt.Sprintf("must have at most %d properties, has %d", n.maxProps, len(m))
		})
	}
	for _, name := range n.required {
		if _, ok := m[name]; !ok {
			e.add(p, "required", func() string { return fmt.Sprintf("missing required property %q", name) })
		}
	}
	if n.properties == nil && n.patternProps == nil && n.additional == nil {
		return
	}
	if !e.run.step(len(m)) {
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if e.done() {
			return
		}
		cp := &path{parent: p, key: k}
		matched := false
		if c, ok := n.properties[k]; ok {
			matched = true
			e.eval(c, m[k], cp, depth+1, 0)
		}
		for _, pp := range n.patternProps {
			if !e.run.step(1 + len(k)/64) {
				return
			}
			if pp.re.MatchString(k) {
				matched = true
				e.eval(pp.node, m[k], cp, depth+1, 0)
			}
		}
		switch {
		case matched || n.additional == nil:
		case n.additional.never:
			e.add(cp, "additionalProperties", func() string { return "is not allowed: the schema does not list this property" })
		default:
			e.eval(n.additional, m[k], cp, depth+1, 0)
		}
	}
}

func (e *evaluator) array(n *node, a []any, p *path, depth int) {
	if len(a) < n.minItems {
		e.add(p, "minItems", func() string { return fmt.Sprintf("must have at least %d items, has %d", n.minItems, len(a)) })
	}
	if n.maxItems >= 0 && len(a) > n.maxItems {
		e.add(p, "maxItems", func() string { return fmt.Sprintf("must have at most %d items, has %d", n.maxItems, len(a)) })
	}
	for i, item := range a {
		if e.done() || i >= len(n.prefixItems) && n.items == nil {
			break // (eval counts the steps)
		}
		cp := &path{parent: p, index: i, isItem: true}
		switch {
		case i < len(n.prefixItems):
			e.eval(n.prefixItems[i], item, cp, depth+1, 0)
		case n.items == nil:
		case n.items.never:
			e.add(cp, "items", func() string {
				return fmt.Sprintf("is not allowed: the array may have at most %d items", len(n.prefixItems))
			})
		default:
			e.eval(n.items, item, cp, depth+1, 0)
		}
		if n.items != nil && n.items.never && i >= len(n.prefixItems) {
			break // one violation for the extra items
		}
	}
	if n.uniqueItems && len(a) > 1 {
		seen := make(map[string]int, len(a))
		for i, item := range a {
			key, ok := e.canonical(item)
			if !ok {
				return
			}
			if j, dup := seen[key]; dup {
				e.add(p, "uniqueItems", func() string {
					return fmt.Sprintf("items %d and %d are equal; all items must be distinct", j, i)
				})
				continue
			}
			seen[key] = i
		}
	}
}

func (e *evaluator) str(n *node, s string, p *path) {
	if n.minLength > 0 || n.maxLength >= 0 {
		if !e.run.step(len(s) / 64) {
			return
		}
		l := utf8.RuneCountInString(s)
		if l < n.minLength {
			e.add(p, "minLength", func() string { return fmt.Sprintf("must be at least %d characters long, is %d", n.minLength, l) })
		}
		if n.maxLength >= 0 && l > n.maxLength {
			e.add(p, "maxLength", func() string { return fmt.Sprintf("must be at most %d characters long, is %d", n.maxLength, l) })
		}
	}
	if n.pattern != nil {
		if !e.run.step(1 + len(s)/64) {
			return
		}
		if !n.pattern.MatchString(s) {
			e.add(p, "pattern", func() string { return fmt.Sprintf("must match the pattern %q", shorten(n.pattern.String())) })
		}
	}
}

func (e *evaluator) number(n *node, d decimal, p *path) {
	if n.minimum != nil && d.cmp(*n.minimum) < 0 {
		e.add(p, "minimum", func() string { return "must be at least " + n.minimum.String() })
	}
	if n.maximum != nil && d.cmp(*n.maximum) > 0 {
		e.add(p, "maximum", func() string { return "must be at most " + n.maximum.String() })
	}
	if n.exclMinimum != nil && d.cmp(*n.exclMinimum) <= 0 {
		e.add(p, "exclusiveMinimum", func() string { return "must be greater than " + n.exclMinimum.String() })
	}
	if n.exclMaximum != nil && d.cmp(*n.exclMaximum) >= 0 {
		e.add(p, "exclusiveMaximum", func() string { return "must be less than " + n.exclMaximum.String() })
	}
	if n.multipleOf != nil {
		if !e.run.step(1 + len(d.digits)/18) {
			return
		}
		if !d.multipleOf(*n.multipleOf) {
			e.add(p, "multipleOf", func() string { return "must be a multiple of " + n.multipleOf.String() })
		}
	}
}

// canonical is canonicalKey under the run's budget.
func (e *evaluator) canonical(v any) (string, bool) { return canonicalKey(v, e.run) }

// canonicalKey renders v so that two values have the same key iff they are
// equal as JSON (numbers by value, object members unordered). Under a run
// it costs a step per value and per 64 bytes of string, and fails when the
// budget runs out.
func canonicalKey(v any, r *run) (string, bool) {
	var sb strings.Builder
	ok := writeCanonical(&sb, v, r)
	return sb.String(), ok
}

func writeCanonical(sb *strings.Builder, v any, r *run) bool {
	if r != nil && !r.step(1) {
		return false
	}
	switch x := v.(type) {
	case nil:
		sb.WriteByte('n')
	case bool:
		if x {
			sb.WriteByte('t')
		} else {
			sb.WriteByte('f')
		}
	case string:
		if r != nil && !r.step(len(x)/64) {
			return false
		}
		sb.WriteByte('s')
		sb.WriteString(strconv.Itoa(len(x)))
		sb.WriteByte(':')
		sb.WriteString(x)
	case []any:
		sb.WriteByte('[')
		for _, e := range x {
			if !writeCanonical(sb, e, r) {
				return false
			}
		}
		sb.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		sb.WriteByte('{')
		for _, k := range keys {
			if !writeCanonical(sb, k, r) || !writeCanonical(sb, x[k], r) {
				return false
			}
		}
		sb.WriteByte('}')
	default:
		d, ok := numberOf(v)
		if !ok {
			sb.WriteString("?" + fmt.Sprintf("%T", v))
			return true
		}
		sb.WriteByte('d')
		if d.neg {
			sb.WriteByte('-')
		}
		sb.WriteString(d.digits)
		sb.WriteByte('e')
		sb.WriteString(strconv.FormatInt(d.exp, 10))
		sb.WriteByte(';')
	}
	return true
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// kindOf returns v's type bit: tInteger for a number with no fractional
// part (which is also a number).
func kindOf(v any, num decimal, isNum bool) uint8 {
	switch v.(type) {
	case nil:
		return tNull
	case bool:
		return tBoolean
	case map[string]any:
		return tObject
	case []any:
		return tArray
	case string:
		return tString
	}
	if isNum && num.isInteger() {
		return tInteger
	}
	if isNum {
		return tNumber
	}
	return 0
}

func kindName(kind uint8, isNum bool) string {
	switch {
	case kind == tInteger, kind == tNumber:
		return "number"
	case kind == 0 && !isNum:
		return "a value of no JSON type"
	}
	for i, name := range typeNames {
		if kind == 1<<i {
			return name
		}
	}
	return "unknown"
}
