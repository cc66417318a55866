package schema

import (
	"encoding/json"
	"testing"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

func TestParseType(t *testing.T) {
	cases := []struct {
		in      string
		want    tftypes.Type
		wantErr bool
	}{
		{`"string"`, tftypes.String, false},
		{`"number"`, tftypes.Number, false},
		{`"bool"`, tftypes.Bool, false},
		{`"dynamic"`, tftypes.DynamicPseudoType, false},
		{`["list","string"]`, tftypes.List{ElementType: tftypes.String}, false},
		{`["set","number"]`, tftypes.Set{ElementType: tftypes.Number}, false},
		{`["map",["list","bool"]]`, tftypes.Map{ElementType: tftypes.List{ElementType: tftypes.Bool}}, false},
		{`["object",{"a":"string","b":["set","string"]}]`, tftypes.Object{AttributeTypes: map[string]tftypes.Type{"a": tftypes.String, "b": tftypes.Set{ElementType: tftypes.String}}}, false},
		{`"int"`, nil, true},
		{`["tuple","string"]`, nil, true},
		{`["list"]`, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseType(json.RawMessage(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && !got.Equal(tc.want) {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestProtoFlagsAndNesting(t *testing.T) {
	s := &Schema{Block: &Block{
		Attributes: map[string]*Attribute{
			"id":   {Type: String, Optional: true, Computed: true},
			"name": {Type: String, Required: true},
		},
		BlockTypes: map[string]*NestedBlock{
			"template": {NestingMode: NestingList, MinItems: 1, MaxItems: 1, Block: &Block{
				Attributes: map[string]*Attribute{"image": {Type: String, Required: true}},
			}},
		},
	}}
	p, err := s.Proto()
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Block.Attributes) != 2 || p.Block.Attributes[0].Name != "id" || !p.Block.Attributes[1].Required {
		t.Errorf("attributes %+v", p.Block.Attributes)
	}
	nb := p.Block.BlockTypes[0]
	if nb.TypeName != "template" || nb.Nesting != tfprotov6.SchemaNestedBlockNestingModeList || nb.MinItems != 1 || nb.MaxItems != 1 {
		t.Errorf("block %+v", nb)
	}

	for _, bad := range []*Attribute{
		{Type: String},
		{Type: String, Required: true, Optional: true},
		{Type: String, Required: true, Computed: true},
	} {
		s := &Schema{Block: &Block{Attributes: map[string]*Attribute{"x": bad}}}
		if _, err := s.Proto(); err == nil {
			t.Errorf("flags %+v accepted", bad)
		}
	}
}
