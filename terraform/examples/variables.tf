variable "project" {
  description = "Project that hosts the broker."
  type        = string
}

variable "region" {
  description = "Cloud Run region."
  type        = string
}

variable "image" {
  description = "First broker image (later ones come from Cloud Build)."
  type        = string
}

variable "accounts" {
  description = "DICOM store accounts; passed to the module, which types and validates them (see ../variables.tf)."
  type        = any
}

variable "agents" {
  description = "Enrolled agents; passed to the module, which types and validates them (see ../variables.tf). Empty until the first site is enrolled."
  type        = any
  default     = {}
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel ids the fleet alerts notify (gcloud beta monitoring channels list); passed to the module."
  type        = list(string)
  default     = []
}
