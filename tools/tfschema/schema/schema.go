// Package schema holds a Terraform provider schema in the JSON shape that
// `terraform providers schema -json` prints, and turns it into the plugin
// protocol's schema types so a schema-only provider can serve it.
package schema

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

// Provider is one provider's schemas: its own configuration block, its
// managed resources and its data sources, keyed by type name.
type Provider struct {
	// Source names where the schema came from (package and version), for people.
	Source      string             `json:"source,omitempty"`
	Provider    *Schema            `json:"provider"`
	Resources   map[string]*Schema `json:"resource_schemas"`
	DataSources map[string]*Schema `json:"data_source_schemas"`
}

// Schema is a versioned top-level block.
type Schema struct {
	Version int64  `json:"version"`
	Block   *Block `json:"block"`
}

// Block is a configuration block: attributes and nested block types.
type Block struct {
	Attributes map[string]*Attribute   `json:"attributes,omitempty"`
	BlockTypes map[string]*NestedBlock `json:"block_types,omitempty"`
}

// Attribute is one argument or exported attribute. Type uses Terraform's
// JSON type notation: "string", ["list","string"], ["object",{...}].
type Attribute struct {
	Type     json.RawMessage `json:"type"`
	Required bool            `json:"required,omitempty"`
	Optional bool            `json:"optional,omitempty"`
	Computed bool            `json:"computed,omitempty"`
}

// Nesting modes of a nested block, as Terraform names them.
const (
	NestingSingle = "single"
	NestingList   = "list"
	NestingSet    = "set"
)

// NestedBlock is a nested block type. MinItems/MaxItems are 0 when unbounded.
type NestedBlock struct {
	NestingMode string `json:"nesting_mode"`
	Block       *Block `json:"block"`
	MinItems    int64  `json:"min_items,omitempty"`
	MaxItems    int64  `json:"max_items,omitempty"`
}

// Load reads a Provider from a JSON file written by Save.
func Load(path string) (*Provider, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p Provider
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if p.Provider == nil || p.Provider.Block == nil {
		return nil, fmt.Errorf("%s: no provider block", path)
	}
	return &p, nil
}

// Save writes p as indented JSON (stable key order, so diffs are readable).
func Save(path string, p *Provider) error {
	b, err := json.MarshalIndent(p, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ParseType turns Terraform's JSON type notation into a tftypes.Type.
func ParseType(raw json.RawMessage) (tftypes.Type, error) {
	var name string
	if err := json.Unmarshal(raw, &name); err == nil {
		switch name {
		case "string":
			return tftypes.String, nil
		case "number":
			return tftypes.Number, nil
		case "bool":
			return tftypes.Bool, nil
		case "dynamic":
			return tftypes.DynamicPseudoType, nil
		}
		return nil, fmt.Errorf("unknown primitive type %q", name)
	}
	var pair []json.RawMessage
	if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 {
		return nil, fmt.Errorf("bad type %s", raw)
	}
	if err := json.Unmarshal(pair[0], &name); err != nil {
		return nil, fmt.Errorf("bad type kind %s", pair[0])
	}
	switch name {
	case "list", "set", "map":
		elem, err := ParseType(pair[1])
		if err != nil {
			return nil, err
		}
		switch name {
		case "list":
			return tftypes.List{ElementType: elem}, nil
		case "set":
			return tftypes.Set{ElementType: elem}, nil
		}
		return tftypes.Map{ElementType: elem}, nil
	case "object":
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(pair[1], &fields); err != nil {
			return nil, fmt.Errorf("bad object type %s", pair[1])
		}
		attrs := make(map[string]tftypes.Type, len(fields))
		for k, v := range fields {
			t, err := ParseType(v)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			attrs[k] = t
		}
		return tftypes.Object{AttributeTypes: attrs}, nil
	}
	return nil, fmt.Errorf("unknown type kind %q", name)
}

// Primitive and collection type constructors in JSON notation.
var (
	String = json.RawMessage(`"string"`)
	Number = json.RawMessage(`"number"`)
	Bool   = json.RawMessage(`"bool"`)
)

// Collection returns ["kind", elem] for kind list, set or map.
func Collection(kind string, elem json.RawMessage) json.RawMessage {
	b, _ := json.Marshal([]json.RawMessage{json.RawMessage(fmt.Sprintf("%q", kind)), elem})
	return b
}

// Object returns ["object", {name: type}].
func Object(fields map[string]json.RawMessage) json.RawMessage {
	f, _ := json.Marshal(fields)
	b, _ := json.Marshal([]json.RawMessage{json.RawMessage(`"object"`), f})
	return b
}

// ObjectType is the object type a block's attributes and nested blocks make
// when the block is read as a value (used for computed-only nested data).
func (b *Block) ObjectType() json.RawMessage {
	fields := map[string]json.RawMessage{}
	for name, a := range b.Attributes {
		fields[name] = a.Type
	}
	for name, nb := range b.BlockTypes {
		inner := nb.Block.ObjectType()
		switch nb.NestingMode {
		case NestingSingle:
			fields[name] = inner
		default:
			fields[name] = Collection(nb.NestingMode, inner)
		}
	}
	return Object(fields)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
