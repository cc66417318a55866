package cdktf

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/tools/tfschema/schema"
)

var (
	reTFType  = regexp.MustCompile(`public static readonly tfResourceType = "([\w-]+)";`)
	reDecl    = regexp.MustCompile(`(?m)^export (interface|function|class) (\w+)`)
	reExtends = regexp.MustCompile(`^export class \w+ extends ([\w.]+)`)
	reField   = regexp.MustCompile(`(?s)/\*\*((?:[^*]|\*[^/])*)\*/\s*readonly (\w+)(\??): ([^\n]+);`)
	reDocLink = regexp.MustCompile(`\{@link https://\S+ \w+#(\w+)\}`)
	reFlags   = regexp.MustCompile(`(?m)^\s*// (\w+) - computed: (true|false), optional: (true|false), required: (true|false)\s*$`)
	reHcl     = regexp.MustCompile(`"?(\w+)"?: \{\s*value: ([^\n]*),\s*isBlock: (true|false),\s*type: "(\w+)",\s*storageClassType: "(\w+)",\s*\}`)
	reCamel   = regexp.MustCompile(`(?:this\._|struct!?\.)(\w+)`)
	reNew     = regexp.MustCompile(`^private _\w+ = new ([\w.]+)\(this, "(\w+)"(?:, (true|false))?\);$`)
	rePriv    = regexp.MustCompile(`^private _\w+\?: (.+?);$`)
	reReturn  = regexp.MustCompile(`^return (.+);$`)
	reGetter  = regexp.MustCompile(`^(cdktf\.Fn\.tolist\()?this\.(\w+)\('(\w+)'\)\)?$`)
	reStructs = regexp.MustCompile(`^(\w+)\[\] \| cdktf\.IResolvable$`)
)

// source is one lib directory's TypeScript, split into top-level declarations.
type source struct {
	interfaces map[string]map[string]field // interface -> Terraform name -> field
	hclFuncs   map[string]string           // struct name -> its ToHclTerraform function text
	classes    map[string]string           // class name -> class text
}

type field struct {
	camel    string
	optional bool
	tsType   string
}

type hclEntry struct {
	name    string // Terraform name
	camel   string // TypeScript name
	isBlock bool
	kind    string // simple, list, set, map, struct
	storage string // storageClassType
}

type classAttr struct {
	name                         string
	computed, optional, required bool
	decl                         string // the private field or the getter's return expression
}

// Derive derives the schema of the one top-level class (resource, data
// source or provider) defined in a lib directory's TypeScript source.
func Derive(src string) (*Type, error) {
	s := split(src)
	for name, text := range s.classes {
		m := reTFType.FindStringSubmatch(text)
		if m == nil {
			continue
		}
		ext := reExtends.FindStringSubmatch(text)
		if ext == nil {
			return nil, fmt.Errorf("class %s: no base class", name)
		}
		t := &Type{Name: m[1]}
		switch ext[1] {
		case "cdktf.TerraformResource":
			t.Kind = KindResource
		case "cdktf.TerraformDataSource":
			t.Kind = KindDataSource
		case "cdktf.TerraformProvider":
			t.Kind = KindProvider
		default:
			return nil, fmt.Errorf("class %s extends %s: unknown kind", name, ext[1])
		}
		d := deriver{src: s, provider: t.Kind == KindProvider}
		block, err := d.classBlock(name, hclEntries(text), s.interfaces[name+"Config"], true)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t.Name, err)
		}
		t.Schema = &schema.Schema{Block: block}
		return t, nil
	}
	return nil, fmt.Errorf("no class with a tfResourceType")
}

func split(src string) *source {
	s := &source{interfaces: map[string]map[string]field{}, hclFuncs: map[string]string{}, classes: map[string]string{}}
	locs := reDecl.FindAllStringSubmatchIndex(src, -1)
	for i, l := range locs {
		end := len(src)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		text := src[l[0]:end]
		kind, name := src[l[2]:l[3]], src[l[4]:l[5]]
		switch kind {
		case "interface":
			fields := map[string]field{}
			for _, m := range reField.FindAllStringSubmatch(text, -1) {
				// The Terraform name is in the field's registry link; the
				// TypeScript name can differ (build -> buildAttribute).
				links := reDocLink.FindAllStringSubmatch(m[1], -1)
				if len(links) == 0 {
					continue
				}
				tfName := links[len(links)-1][1]
				fields[tfName] = field{camel: m[2], optional: m[3] == "?", tsType: strings.TrimSpace(m[4])}
			}
			s.interfaces[name] = fields
		case "function":
			if base, ok := strings.CutSuffix(name, "ToHclTerraform"); ok && base != "" {
				s.hclFuncs[strings.ToUpper(base[:1])+base[1:]] = text
			}
		case "class":
			s.classes[name] = text
		}
	}
	return s
}

func hclEntries(text string) map[string]hclEntry {
	out := map[string]hclEntry{}
	for _, m := range reHcl.FindAllStringSubmatch(text, -1) {
		e := hclEntry{name: m[1], isBlock: m[3] == "true", kind: m[4], storage: m[5]}
		if c := reCamel.FindStringSubmatch(m[2]); c != nil {
			e.camel = c[1]
		}
		out[e.name] = e
	}
	return out
}

func classAttrs(text string) []classAttr {
	var out []classAttr
	locs := reFlags.FindAllStringSubmatchIndex(text, -1)
	for _, l := range locs {
		a := classAttr{
			name:     text[l[2]:l[3]],
			computed: text[l[4]:l[5]] == "true",
			optional: text[l[6]:l[7]] == "true",
			required: text[l[8]:l[9]] == "true",
		}
		lines := nonEmptyLines(text[l[1]:], 2)
		if len(lines) > 0 {
			a.decl = lines[0]
			if strings.HasPrefix(a.decl, "public get ") && len(lines) > 1 {
				a.decl = lines[1]
			}
		}
		out = append(out, a)
	}
	return out
}

func nonEmptyLines(s string, n int) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
			if len(out) == n {
				break
			}
		}
	}
	return out
}

type deriver struct {
	src      *source
	provider bool
	depth    int
}

// classBlock derives the block described by a CDKTF class: the top-level
// class or an OutputReference class of a nested struct.
func (d *deriver) classBlock(class string, hcl map[string]hclEntry, iface map[string]field, top bool) (*schema.Block, error) {
	text, ok := d.src.classes[class]
	if !ok {
		return nil, fmt.Errorf("class %s not found", class)
	}
	if d.depth++; d.depth > 32 {
		return nil, fmt.Errorf("class %s: nesting too deep", class)
	}
	defer func() { d.depth-- }()
	b := &schema.Block{Attributes: map[string]*schema.Attribute{}, BlockTypes: map[string]*schema.NestedBlock{}}
	seen := map[string]bool{}
	for _, a := range classAttrs(text) {
		seen[a.name] = true
		if top && d.provider && a.name == "alias" {
			// CDKTF adds Terraform's provider meta-argument "alias" to every
			// provider class; it is not part of the provider's own schema.
			continue
		}
		if err := d.add(b, a, hcl, iface); err != nil {
			return nil, fmt.Errorf("%s.%s: %w", class, a.name, err)
		}
	}
	for name := range hcl {
		if !seen[name] {
			return nil, fmt.Errorf("class %s: %q is in the HCL table but has no schema flags", class, name)
		}
	}
	return b, nil
}

func (d *deriver) add(b *schema.Block, a classAttr, hcl map[string]hclEntry, iface map[string]field) error {
	configurable := a.optional || a.required
	h, hasHcl := hcl[a.name]
	if configurable != hasHcl {
		return fmt.Errorf("configurable=%v but in HCL table=%v", configurable, hasHcl)
	}
	if a.required && (a.optional || a.computed) {
		return fmt.Errorf("required together with optional/computed")
	}
	if hasHcl && iface != nil {
		f, ok := iface[a.name]
		if !ok {
			return fmt.Errorf("field missing from the Config interface")
		}
		if f.optional == a.required {
			return fmt.Errorf("interface says optional=%v but flags say required=%v", f.optional, a.required)
		}
	}
	attr := func(t json.RawMessage) error {
		if hasHcl && h.isBlock {
			return fmt.Errorf("HCL table says block but the type is %s", t)
		}
		b.Attributes[a.name] = &schema.Attribute{Type: t, Required: a.required, Optional: a.optional, Computed: a.computed}
		return nil
	}
	collection := func(def string) string { // list or set
		if hasHcl && (h.kind == "list" || h.kind == "set") {
			return h.kind
		}
		return def
	}

	if m := reNew.FindStringSubmatch(a.decl); m != nil {
		cls, tfName, wrapsSet := m[1], m[2], m[3] == "true"
		if tfName != a.name {
			return fmt.Errorf("constructed for %q", tfName)
		}
		if bt, ok := builtinComplex[cls]; ok {
			if bt.list {
				kind := schema.NestingList
				if wrapsSet {
					kind = schema.NestingSet
				}
				return attr(schema.Collection(kind, bt.t))
			}
			return attr(bt.t)
		}
		var structName, elemClass, shape string
		switch {
		case strings.HasSuffix(cls, "OutputReference"):
			structName, elemClass, shape = strings.TrimSuffix(cls, "OutputReference"), cls, "single"
		case strings.HasSuffix(cls, "List"):
			structName, shape = strings.TrimSuffix(cls, "List"), "list"
			if wrapsSet {
				shape = "set"
			}
		case strings.HasSuffix(cls, "Map"):
			structName, shape = strings.TrimSuffix(cls, "Map"), "map"
		default:
			return fmt.Errorf("unknown wrapper class %s", cls)
		}
		if elemClass == "" {
			elemClass = structName + "OutputReference"
		}
		inner, err := d.classBlock(elemClass, hclEntries(d.src.hclFuncs[structName]), d.src.interfaces[structName], false)
		if err != nil {
			return err
		}
		if !hasHcl {
			if !a.computed {
				return fmt.Errorf("nested type is neither configurable nor computed")
			}
			t := inner.ObjectType()
			if shape != "single" {
				t = schema.Collection(shape, t)
			}
			return attr(t)
		}
		if !h.isBlock {
			return fmt.Errorf("configurable nested attribute (not a block) is not supported")
		}
		nb := &schema.NestedBlock{Block: inner}
		switch {
		case shape == "single" && h.kind == "struct":
			nb.NestingMode = schema.NestingSingle
		case shape == "single" && (h.kind == "list" || h.kind == "set"):
			// CDKTF renders a block as one object exactly when MaxItems is 1.
			nb.NestingMode, nb.MaxItems = h.kind, 1
		case (shape == "list" || shape == "set") && h.kind == shape:
			nb.NestingMode = shape
		default:
			return fmt.Errorf("wrapper %s does not match HCL type %q", cls, h.kind)
		}
		if a.required {
			nb.MinItems = 1
		}
		b.BlockTypes[a.name] = nb
		return nil
	}

	if m := rePriv.FindStringSubmatch(a.decl); m != nil {
		ts := m[1]
		if sm := reStructs.FindStringSubmatch(ts); sm != nil && hasHcl && h.isBlock {
			// Provider configuration blocks: CDKTF keeps them as plain arrays of
			// interfaces, so derive them from the interface and its HCL table.
			inner, err := d.structBlock(sm[1])
			if err != nil {
				return err
			}
			mode := schema.NestingList
			if h.kind == "set" {
				mode = schema.NestingSet
			}
			nb := &schema.NestedBlock{NestingMode: mode, Block: inner}
			if a.required {
				nb.MinItems = 1
			}
			b.BlockTypes[a.name] = nb
			return nil
		}
		t, err := tsType(ts, collection)
		if err != nil {
			return err
		}
		return attr(t)
	}

	if m := reReturn.FindStringSubmatch(a.decl); m != nil {
		g := reGetter.FindStringSubmatch(m[1])
		if g == nil || g[3] != a.name {
			return fmt.Errorf("unrecognised getter %q", m[1])
		}
		t, ok := getterTypes[g[2]]
		if !ok {
			return fmt.Errorf("unrecognised getter %s", g[2])
		}
		if g[1] != "" { // cdktf.Fn.tolist(...) wraps sets
			var pair []json.RawMessage
			if err := json.Unmarshal(t, &pair); err != nil || string(pair[0]) != `"list"` {
				return fmt.Errorf("tolist around a non-list getter %s", g[2])
			}
			t = schema.Collection(schema.NestingSet, pair[1])
		}
		return attr(t)
	}
	return fmt.Errorf("unrecognised declaration %q", a.decl)
}

// structBlock derives a block from an interface and its HCL table alone
// (used where CDKTF generates no OutputReference class: provider blocks).
func (d *deriver) structBlock(name string) (*schema.Block, error) {
	iface, ok := d.src.interfaces[name]
	if !ok {
		return nil, fmt.Errorf("interface %s not found", name)
	}
	b := &schema.Block{Attributes: map[string]*schema.Attribute{}, BlockTypes: map[string]*schema.NestedBlock{}}
	for tfName, h := range hclEntries(d.src.hclFuncs[name]) {
		f, ok := iface[tfName]
		if !ok {
			return nil, fmt.Errorf("%s: field %q not in interface", name, tfName)
		}
		a := classAttr{name: tfName, optional: f.optional, required: !f.optional, decl: "private _" + f.camel + "?: " + f.tsType + ";"}
		if err := d.add(b, a, map[string]hclEntry{tfName: h}, iface); err != nil {
			return nil, fmt.Errorf("%s.%s: %w", name, tfName, err)
		}
	}
	return b, nil
}

type builtin struct {
	t    json.RawMessage
	list bool // a List of t, list or set by the wrapsSet argument
}

// CDKTF's own wrapper classes for maps of primitives.
var builtinComplex = map[string]builtin{
	"cdktf.StringMap":      {t: schema.Collection("map", schema.String)},
	"cdktf.NumberMap":      {t: schema.Collection("map", schema.Number)},
	"cdktf.BooleanMap":     {t: schema.Collection("map", schema.Bool)},
	"cdktf.AnyMap":         {t: schema.Collection("map", json.RawMessage(`"dynamic"`))},
	"cdktf.StringMapList":  {t: schema.Collection("map", schema.String), list: true},
	"cdktf.NumberMapList":  {t: schema.Collection("map", schema.Number), list: true},
	"cdktf.BooleanMapList": {t: schema.Collection("map", schema.Bool), list: true},
	"cdktf.AnyMapList":     {t: schema.Collection("map", json.RawMessage(`"dynamic"`)), list: true},
}

// Getters CDKTF generates for computed-only primitive attributes.
var getterTypes = map[string]json.RawMessage{
	"getStringAttribute":     schema.String,
	"getNumberAttribute":     schema.Number,
	"getBooleanAttribute":    schema.Bool,
	"getListAttribute":       schema.Collection("list", schema.String),
	"getNumberListAttribute": schema.Collection("list", schema.Number),
	"getStringMapAttribute":  schema.Collection("map", schema.String),
	"getNumberMapAttribute":  schema.Collection("map", schema.Number),
	"getBooleanMapAttribute": schema.Collection("map", schema.Bool),
	"getAnyMapAttribute":     schema.Collection("map", json.RawMessage(`"dynamic"`)),
}

// tsType maps a declared TypeScript field type to a Terraform type;
// collection picks list or set for arrays.
func tsType(ts string, collection func(def string) string) (json.RawMessage, error) {
	switch ts {
	case "string":
		return schema.String, nil
	case "number":
		return schema.Number, nil
	case "boolean | cdktf.IResolvable":
		return schema.Bool, nil
	case "string[]":
		return schema.Collection(collection("list"), schema.String), nil
	case "number[]":
		return schema.Collection(collection("list"), schema.Number), nil
	case "{ [key: string]: string }":
		return schema.Collection("map", schema.String), nil
	case "{ [key: string]: number }":
		return schema.Collection("map", schema.Number), nil
	case "{ [key: string]: boolean | cdktf.IResolvable }":
		return schema.Collection("map", schema.Bool), nil
	}
	return nil, fmt.Errorf("unrecognised TypeScript type %q", ts)
}
