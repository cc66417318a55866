package schema

import (
	"fmt"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
)

// Proto converts s to the plugin protocol (v6) schema.
func (s *Schema) Proto() (*tfprotov6.Schema, error) {
	b, err := s.Block.proto()
	if err != nil {
		return nil, err
	}
	return &tfprotov6.Schema{Version: s.Version, Block: b}, nil
}

func (b *Block) proto() (*tfprotov6.SchemaBlock, error) {
	out := &tfprotov6.SchemaBlock{}
	for _, name := range sortedKeys(b.Attributes) {
		a := b.Attributes[name]
		t, err := ParseType(a.Type)
		if err != nil {
			return nil, fmt.Errorf("attribute %s: %w", name, err)
		}
		if err := a.check(); err != nil {
			return nil, fmt.Errorf("attribute %s: %w", name, err)
		}
		out.Attributes = append(out.Attributes, &tfprotov6.SchemaAttribute{
			Name: name, Type: t, Required: a.Required, Optional: a.Optional, Computed: a.Computed,
		})
	}
	for _, name := range sortedKeys(b.BlockTypes) {
		nb := b.BlockTypes[name]
		inner, err := nb.Block.proto()
		if err != nil {
			return nil, fmt.Errorf("block %s: %w", name, err)
		}
		var mode tfprotov6.SchemaNestedBlockNestingMode
		switch nb.NestingMode {
		case NestingSingle:
			mode = tfprotov6.SchemaNestedBlockNestingModeSingle
		case NestingList:
			mode = tfprotov6.SchemaNestedBlockNestingModeList
		case NestingSet:
			mode = tfprotov6.SchemaNestedBlockNestingModeSet
		default:
			return nil, fmt.Errorf("block %s: unknown nesting mode %q", name, nb.NestingMode)
		}
		out.BlockTypes = append(out.BlockTypes, &tfprotov6.SchemaNestedBlock{
			TypeName: name, Block: inner, Nesting: mode, MinItems: nb.MinItems, MaxItems: nb.MaxItems,
		})
	}
	return out, nil
}

// check enforces the flag combinations Terraform accepts: required;
// optional; optional+computed; computed.
func (a *Attribute) check() error {
	switch {
	case a.Required && (a.Optional || a.Computed):
		return fmt.Errorf("required cannot be optional or computed")
	case !a.Required && !a.Optional && !a.Computed:
		return fmt.Errorf("neither required, optional nor computed")
	}
	return nil
}
