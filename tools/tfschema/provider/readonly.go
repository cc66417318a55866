package provider

import (
	"fmt"
	"sort"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/tools/tfschema/schema"
)

// readOnlyDiags reports computed-only attributes that the configuration sets.
// Terraform core leaves this check to providers (the real google provider
// rejects such configurations in ValidateResourceConfig), so the schema-only
// provider does it too.
func readOnlyDiags(s *schema.Schema, cfg *tfprotov6.DynamicValue) []*tfprotov6.Diagnostic {
	if s == nil || cfg == nil {
		return nil
	}
	proto, err := s.Proto()
	if err != nil {
		return []*tfprotov6.Diagnostic{{Severity: tfprotov6.DiagnosticSeverityError, Summary: "schema", Detail: err.Error()}}
	}
	v, err := cfg.Unmarshal(proto.ValueType())
	if err != nil {
		return []*tfprotov6.Diagnostic{{Severity: tfprotov6.DiagnosticSeverityError, Summary: "decoding configuration", Detail: err.Error()}}
	}
	var diags []*tfprotov6.Diagnostic
	walkReadOnly(s.Block, v, tftypes.NewAttributePath(), &diags)
	return diags
}

func walkReadOnly(b *schema.Block, v tftypes.Value, path *tftypes.AttributePath, diags *[]*tfprotov6.Diagnostic) {
	if v.IsNull() || !v.IsKnown() {
		return
	}
	var obj map[string]tftypes.Value
	if err := v.As(&obj); err != nil {
		return
	}
	names := make([]string, 0, len(b.Attributes))
	for name := range b.Attributes {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		a := b.Attributes[name]
		if a.Computed && !a.Optional && !a.Required && !obj[name].IsNull() {
			*diags = append(*diags, &tfprotov6.Diagnostic{
				Severity:  tfprotov6.DiagnosticSeverityError,
				Summary:   "Value for unconfigurable attribute",
				Detail:    fmt.Sprintf("Can't configure a value for %q: its value will be decided automatically based on the result of applying this configuration.", name),
				Attribute: path.WithAttributeName(name),
			})
		}
	}
	for name, nb := range b.BlockTypes {
		child := obj[name]
		p := path.WithAttributeName(name)
		if nb.NestingMode == schema.NestingSingle {
			walkReadOnly(nb.Block, child, p, diags)
			continue
		}
		if child.IsNull() || !child.IsKnown() {
			continue
		}
		var elems []tftypes.Value
		if err := child.As(&elems); err != nil {
			continue
		}
		for i, e := range elems {
			ep := p.WithElementKeyInt(i)
			if nb.NestingMode == schema.NestingSet {
				ep = p.WithElementKeyValue(e)
			}
			walkReadOnly(nb.Block, e, ep, diags)
		}
	}
}
