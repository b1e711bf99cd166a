package jsonschema

// ValidateWithin is Validate with a budget of steps instead of MaxSteps.
func (s *Schema) ValidateWithin(instance any, steps int) ([]Violation, bool) {
	return s.validate(instance, steps)
}
