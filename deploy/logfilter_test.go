package deploy

// A reader of terraform/'s log-based metrics and alert policies (parsed with
// HCL, evaluated with the variables' defaults), and an evaluator for the
// part of the Cloud Logging query language their filters use, so the
// filters can be run against the log lines a real broker wrote.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// logMetric is a google_logging_metric of the module.
type logMetric struct {
	Resource  string            // resource name, e.g. "tokens_issued"
	Name      string            // metric name, e.g. "orthanc-gcp-broker/tokens_issued"
	Filter    string            // its log filter
	Extractor map[string]string // label -> extractor expression
}

// alertCondition is one condition of a google_monitoring_alert_policy.
type alertCondition struct {
	Policy  string // resource name
	Kind    string // condition_absent, condition_threshold, ...
	Filter  string
	GroupBy []string
}

// module is what the tests read from terraform/.
type module struct {
	ServiceName string // var.service_name's default
	Metrics     map[string]*logMetric
	Conditions  []alertCondition
}

// readModule parses every .tf file of dir and evaluates the log metrics'
// and alert conditions' filters, extractors and group-by fields with the
// variables' defaults and the locals that follow from them.
func readModule(dir string) (*module, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.tf"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no .tf files in %s (%v)", dir, err)
	}
	p := hclparse.NewParser()
	var bodies []*hclsyntax.Body
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		file, diags := p.ParseHCL(src, f)
		if diags.HasErrors() {
			return nil, diags
		}
		bodies = append(bodies, file.Body.(*hclsyntax.Body))
	}
	ctx := &hcl.EvalContext{Variables: map[string]cty.Value{}}
	vars := map[string]cty.Value{}
	localExprs := map[string]hcl.Expression{}
	for _, b := range bodies {
		for _, blk := range b.Blocks {
			switch {
			case blk.Type == "variable" && len(blk.Labels) == 1:
				if a, ok := blk.Body.Attributes["default"]; ok {
					v, diags := a.Expr.Value(nil)
					if diags.HasErrors() {
						return nil, fmt.Errorf("variable %s default: %v", blk.Labels[0], diags)
					}
					vars[blk.Labels[0]] = v
				}
			case blk.Type == "locals":
				for name, a := range blk.Body.Attributes {
					localExprs[name] = a.Expr
				}
			}
		}
	}
	ctx.Variables["var"] = cty.ObjectVal(vars)
	// Locals in dependency order: evaluate what can be until nothing more
	// can. Locals that need resources or data sources stay out; an
	// expression below that needs one fails with HCL's message.
	locals := map[string]cty.Value{}
	for progress := true; progress; {
		progress = false
		ctx.Variables["local"] = cty.ObjectVal(locals)
		for name, e := range localExprs {
			if _, done := locals[name]; done {
				continue
			}
			if v, diags := e.Value(ctx); !diags.HasErrors() && v.IsWhollyKnown() {
				locals[name] = v
				progress = true
			}
		}
	}
	ctx.Variables["local"] = cty.ObjectVal(locals)

	m := &module{Metrics: map[string]*logMetric{}}
	if v, ok := vars["service_name"]; ok && v.Type() == cty.String {
		m.ServiceName = v.AsString()
	}
	str := func(body *hclsyntax.Body, attr, where string) (string, error) {
		a, ok := body.Attributes[attr]
		if !ok {
			return "", nil
		}
		v, diags := a.Expr.Value(ctx)
		if diags.HasErrors() {
			return "", fmt.Errorf("%s.%s: %v", where, attr, diags)
		}
		if v.Type() != cty.String {
			return "", fmt.Errorf("%s.%s is %s, not a string", where, attr, v.Type().FriendlyName())
		}
		return v.AsString(), nil
	}
	// Metrics first: alert filters refer to their names.
	metricNames := map[string]cty.Value{}
	for _, b := range bodies {
		for _, blk := range b.Blocks {
			if blk.Type != "resource" || len(blk.Labels) != 2 || blk.Labels[0] != "google_logging_metric" {
				continue
			}
			where := "google_logging_metric." + blk.Labels[1]
			lm := &logMetric{Resource: blk.Labels[1], Extractor: map[string]string{}}
			if lm.Name, err = str(blk.Body, "name", where); err != nil {
				return nil, err
			}
			if lm.Filter, err = str(blk.Body, "filter", where); err != nil {
				return nil, err
			}
			if a, ok := blk.Body.Attributes["label_extractors"]; ok {
				v, diags := a.Expr.Value(ctx)
				if diags.HasErrors() {
					return nil, fmt.Errorf("%s.label_extractors: %v", where, diags)
				}
				for it := v.ElementIterator(); it.Next(); {
					k, e := it.Element()
					lm.Extractor[k.AsString()] = e.AsString()
				}
			}
			m.Metrics[lm.Name] = lm
			metricNames[lm.Resource] = cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal(lm.Name)})
		}
	}
	ctx.Variables["google_logging_metric"] = cty.ObjectVal(metricNames)
	for _, b := range bodies {
		for _, blk := range b.Blocks {
			if blk.Type != "resource" || len(blk.Labels) != 2 || blk.Labels[0] != "google_monitoring_alert_policy" {
				continue
			}
			for _, cond := range blk.Body.Blocks {
				if cond.Type != "conditions" {
					continue
				}
				for _, c := range cond.Body.Blocks {
					where := fmt.Sprintf("google_monitoring_alert_policy.%s.conditions.%s", blk.Labels[1], c.Type)
					ac := alertCondition{Policy: blk.Labels[1], Kind: c.Type}
					if ac.Filter, err = str(c.Body, "filter", where); err != nil {
						return nil, err
					}
					for _, agg := range c.Body.Blocks {
						if agg.Type != "aggregations" {
							continue
						}
						if a, ok := agg.Body.Attributes["group_by_fields"]; ok {
							v, diags := a.Expr.Value(ctx)
							if diags.HasErrors() {
								return nil, fmt.Errorf("%s.aggregations.group_by_fields: %v", where, diags)
							}
							for it := v.ElementIterator(); it.Next(); {
								_, e := it.Element()
								ac.GroupBy = append(ac.GroupBy, e.AsString())
							}
						}
					}
					m.Conditions = append(m.Conditions, ac)
				}
			}
		}
	}
	return m, nil
}

// term is one comparison of a filter: Field Op Value.
type term struct {
	Field, Op, Value string
}

var (
	// A comparison: a dotted field, an operator, a quoted or bare value.
	reTerm = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*(>=|<=|!=|=~|!~|=|>|<|:)\s*("(?:[^"\\]|\\.)*"|[A-Za-z0-9_.-]+)$`)
	// The extractors the module may use.
	reExtract = regexp.MustCompile(`^(?:EXTRACT\(([A-Za-z0-9_.]+)\)|REGEXP_EXTRACT\(([A-Za-z0-9_.]+),\s*("(?:[^"\\]|\\.)*")\))$`)
)

// parseFilter splits a filter made of comparisons joined by AND. Anything
// else (OR, NOT, parentheses, functions) is refused, so a filter the
// evaluator would misread cannot pass unchecked.
func parseFilter(f string) ([]term, error) {
	var out []term
	for _, part := range splitAnd(f) {
		part = strings.TrimSpace(part)
		m := reTerm.FindStringSubmatch(part)
		if m == nil {
			return nil, fmt.Errorf("filter %q: %q is not a comparison this check understands (FIELD OP VALUE joined by AND)", f, part)
		}
		v := m[3]
		if strings.HasPrefix(v, `"`) {
			u, err := strconv.Unquote(v)
			if err != nil {
				return nil, fmt.Errorf("filter %q: value %s: %v", f, v, err)
			}
			v = u
		}
		out = append(out, term{Field: m[1], Op: m[2], Value: v})
	}
	return out, nil
}

// splitAnd splits on " AND " outside quoted strings.
func splitAnd(f string) []string {
	var parts []string
	inQuote, start := false, 0
	for i := 0; i < len(f); i++ {
		switch {
		case f[i] == '\\' && inQuote:
			i++
		case f[i] == '"':
			inQuote = !inQuote
		case !inQuote && strings.HasPrefix(f[i:], " AND "):
			parts = append(parts, f[start:i])
			start = i + len(" AND ")
			i += len(" AND ") - 1
		}
	}
	return append(parts, f[start:])
}

// severities in Cloud Logging's order.
var severities = []string{"DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY"}

func severityRank(s string) int {
	for i, v := range severities {
		if v == s {
			return i
		}
	}
	return -1
}

// lookup finds a dotted field in a log entry.
func lookup(entry map[string]any, field string) (any, bool) {
	var cur any = entry
	for _, k := range strings.Split(field, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// matches evaluates t on entry. A field the entry lacks matches nothing
// (as in Cloud Logging, for every operator this check accepts but !=).
func (t term) matches(entry map[string]any) (bool, error) {
	v, ok := lookup(entry, t.Field)
	if !ok {
		return t.Op == "!=", nil
	}
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case bool:
		s = strconv.FormatBool(x)
	case float64:
		s = strconv.FormatFloat(x, 'f', -1, 64)
	default:
		return false, fmt.Errorf("%s is a %T, not a value a comparison can use", t.Field, v)
	}
	if t.Field == "severity" {
		a, b := severityRank(s), severityRank(t.Value)
		if a < 0 || b < 0 {
			return false, fmt.Errorf("severity %q or %q is not a Cloud Logging severity", s, t.Value)
		}
		switch t.Op {
		case "=":
			return a == b, nil
		case "!=":
			return a != b, nil
		case ">=":
			return a >= b, nil
		case ">":
			return a > b, nil
		case "<=":
			return a <= b, nil
		case "<":
			return a < b, nil
		}
		return false, fmt.Errorf("severity %s is not supported here", t.Op)
	}
	switch t.Op {
	case "=":
		return s == t.Value, nil
	case "!=":
		return s != t.Value, nil
	case ":":
		return strings.Contains(strings.ToLower(s), strings.ToLower(t.Value)), nil
	}
	return false, fmt.Errorf("operator %s on %s is not supported by this check", t.Op, t.Field)
}

// matchAll reports whether every term matches entry.
func matchAll(terms []term, entry map[string]any) (bool, error) {
	for _, t := range terms {
		ok, err := t.matches(entry)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// extractorField returns the field an extractor reads and its regular
// expression ("" for EXTRACT).
func extractorField(e string) (field, re string, err error) {
	m := reExtract.FindStringSubmatch(e)
	if m == nil {
		return "", "", fmt.Errorf("extractor %q is neither EXTRACT(field) nor REGEXP_EXTRACT(field, \"re\")", e)
	}
	if m[1] != "" {
		return m[1], "", nil
	}
	re, err = strconv.Unquote(m[3])
	return m[2], re, err
}

// sortedKeys returns m's keys in order, for stable messages.
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
