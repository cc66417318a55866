# tflint configuration for the module and its example. The terraform ruleset
# is bundled with tflint, so no plugin is downloaded (works offline).
config {
  call_module_type = "local"
}

plugin "terraform" {
  enabled = true
  preset  = "all"
}
