package wire

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestValidStoreName: "." and ".." fail the rule's first character, and
// nothing that could leave one Orthanc path segment passes.
func TestValidStoreName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"my-google", true}, {"a", true}, {"A9", true}, {"a.b_c-d", true}, {"9", true}, {"My.Store", true},
		{strings.Repeat("x", 63), true}, {strings.Repeat("x", 64), false},
		{"", false}, {".", false}, {"..", false}, {".a", false}, {"-a", false}, {"_a", false},
		{"../../peers/evil", false}, {"a/b", false}, {`a\b`, false}, {"a%2Fb", false}, {"a b", false},
		{"a\n", false}, {"a\x00", false}, {"é", false}, {"a:b", false}, {"a?b", false}, {"a#b", false}, {"a@b", false},
	}
	for _, tc := range tests {
		if got := ValidStoreName(tc.name); got != tc.ok {
			t.Errorf("ValidStoreName(%q) = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

// agentIDCases are ids with the verdict of AgentIDRule (broker) and
// TerraformAgentIDRule (terraform).
var agentIDCases = []struct {
	id                string
	broker, terraform bool
}{
	{"clinic-a", true, true}, {"a", true, true}, {"A.b_c-9", true, true}, {"9", true, true},
	{strings.Repeat("a", 63), true, true},
	{strings.Repeat("a", 64), true, false},
	{strings.Repeat("a", 128), true, false},
	{strings.Repeat("a", 129), false, false},
	{"site@clinic.example", true, false},
	{"", false, false}, {".", false, false}, {"-a", false, false}, {"_a", false, false}, {"@a", false, false},
	{"a b", false, false}, {"a/b", false, false}, {"a:b", false, false}, {"a\n", false, false}, {"é", false, false},
}

func TestValidAgentID(t *testing.T) {
	for _, tc := range agentIDCases {
		if got := ValidAgentID(tc.id); got != tc.broker {
			t.Errorf("ValidAgentID(%q) = %v, want %v", tc.id, got, tc.broker)
		}
		if got := ValidTerraformAgentID(tc.id); got != tc.terraform {
			t.Errorf("ValidTerraformAgentID(%q) = %v, want %v", tc.id, got, tc.terraform)
		}
	}
}

// TestTerraformAgentIDRuleIsNarrower: an id terraform's agents variable
// takes is one the broker's policy takes, so a planned policy never fails
// at the broker's start. Checked on every string of up to two characters
// over an alphabet with each class of character, plus the length limits.
func TestTerraformAgentIDRuleIsNarrower(t *testing.T) {
	alphabet := []string{"", "a", "Z", "0", ".", "_", "-", "@", " ", "/", "é"}
	for _, a := range alphabet {
		for _, b := range alphabet {
			for _, id := range []string{a + b, a + b + strings.Repeat("x", 61), a + b + strings.Repeat("x", 62)} {
				if ValidTerraformAgentID(id) && !ValidAgentID(id) {
					t.Errorf("terraform takes agent id %q, the broker does not", id)
				}
			}
		}
	}
}

// terraformRule returns the pattern of the condition
// can(regex("...", <elem>)) over keys(var.<variable>) in
// terraform/variables.tf. Terraform's regex is RE2, like Go's regexp, so
// the text is the rule.
func terraformRule(t *testing.T, variable, elem string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "..", "terraform", "variables.tf"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`for\s+` + elem + `\s+in\s+keys\(var\.` + variable + `\)\s*:\s*can\(regex\(("(?:[^"\\]|\\.)*"),\s*` + elem + `\)\)`)
	m := re.FindAllSubmatch(src, -1)
	if len(m) != 1 {
		t.Fatalf("terraform/variables.tf: %d conditions can(regex(\"...\", %s)) for %s in keys(var.%s), want 1", len(m), elem, elem, variable)
	}
	pattern, err := strconv.Unquote(string(m[0][1]))
	if err != nil {
		t.Fatalf("the rule's HCL string: %v", err)
	}
	return pattern
}

// TestTerraformRulesMatch: the module's copies of the rules are these
// rules, character for character, so what `terraform plan` accepts is
// what the broker and the agent accept.
func TestTerraformRulesMatch(t *testing.T) {
	for _, tc := range []struct {
		variable, elem, want string
	}{
		{"accounts", "name", StoreNameRule},
		{"agents", "id", TerraformAgentIDRule},
	} {
		if got := terraformRule(t, tc.variable, tc.elem); got != tc.want {
			t.Errorf("terraform/variables.tf: var.%s keys are checked with %q; the rule is %q (internal/wire): copy it", tc.variable, got, tc.want)
		}
	}
}
