package wire

import "regexp"

// StoreNameRule is the rule for store (account) names, the one the broker's
// policy enforces, the agent checks every name from the broker against and
// terraform/variables.tf repeats for its accounts variable (a test holds
// that copy to this one). A store name is also the name of the agent's
// Orthanc DICOMweb server, so part of an Orthanc URL path: Orthanc decodes
// %2F and resolves "..", so escaping alone cannot keep a name such as
// "../../peers/evil" inside {root}servers/. Only names that match reach
// Orthanc (docs/design.md, "Agent behaviour"). The first character
// excludes "." and "..".
const StoreNameRule = `^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`

// AgentIDRule is the broker policy's rule for agent ids, the iss and sub
// of every assertion. `agent enrol` refuses an id outside it, since the
// broker could never know that agent.
const AgentIDRule = `^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$`

// TerraformAgentIDRule is the terraform module's narrower rule for the
// keys of its agents variable (terraform/variables.tf; a test holds that
// copy to this one): no '@' and at most 63 characters. Every id it takes,
// AgentIDRule takes too. The agent's tools that write or advise terraform
// input (`agent enrol`, `agent migrate`) check it, so what they print is
// never refused by `terraform plan`.
const TerraformAgentIDRule = `^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`

var (
	storeNameRE        = regexp.MustCompile(StoreNameRule)
	agentIDRE          = regexp.MustCompile(AgentIDRule)
	terraformAgentIDRE = regexp.MustCompile(TerraformAgentIDRule)
)

// ValidStoreName reports whether name matches StoreNameRule.
func ValidStoreName(name string) bool { return storeNameRE.MatchString(name) }

// ValidAgentID reports whether id matches AgentIDRule.
func ValidAgentID(id string) bool { return agentIDRE.MatchString(id) }

// ValidTerraformAgentID reports whether id matches TerraformAgentIDRule.
func ValidTerraformAgentID(id string) bool { return terraformAgentIDRE.MatchString(id) }
