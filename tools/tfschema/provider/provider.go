// Package provider is a schema-only Terraform provider: it serves a derived
// schema (see package schema) over plugin protocol 6 so that
// `terraform validate` and `terraform test` with mock_provider check
// configurations against the real provider's schema without the network.
// Every operation that would touch a cloud API answers with an error.
package provider

import (
	"context"
	"fmt"
	"sort"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/tools/tfschema/schema"
)

// Server implements tfprotov6.ProviderServer from a derived schema.
type Server struct {
	src  *schema.Provider
	resp *tfprotov6.GetProviderSchemaResponse
	meta *tfprotov6.GetMetadataResponse
}

// New converts p to protocol schemas once, so every call is cheap.
func New(p *schema.Provider) (*Server, error) {
	prov, err := p.Provider.Proto()
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	resp := &tfprotov6.GetProviderSchemaResponse{
		Provider:          prov,
		ResourceSchemas:   map[string]*tfprotov6.Schema{},
		DataSourceSchemas: map[string]*tfprotov6.Schema{},
	}
	meta := &tfprotov6.GetMetadataResponse{}
	for name, s := range p.Resources {
		if resp.ResourceSchemas[name], err = s.Proto(); err != nil {
			return nil, fmt.Errorf("resource %s: %w", name, err)
		}
		meta.Resources = append(meta.Resources, tfprotov6.ResourceMetadata{TypeName: name})
	}
	for name, s := range p.DataSources {
		if resp.DataSourceSchemas[name], err = s.Proto(); err != nil {
			return nil, fmt.Errorf("data source %s: %w", name, err)
		}
		meta.DataSources = append(meta.DataSources, tfprotov6.DataSourceMetadata{TypeName: name})
	}
	sort.Slice(meta.Resources, func(i, j int) bool { return meta.Resources[i].TypeName < meta.Resources[j].TypeName })
	sort.Slice(meta.DataSources, func(i, j int) bool { return meta.DataSources[i].TypeName < meta.DataSources[j].TypeName })
	return &Server{src: p, resp: resp, meta: meta}, nil
}

var _ tfprotov6.ProviderServer = (*Server)(nil)

func unsupported(op string) []*tfprotov6.Diagnostic {
	return []*tfprotov6.Diagnostic{{
		Severity: tfprotov6.DiagnosticSeverityError,
		Summary:  "schema-only provider",
		Detail:   op + " is not available: this provider only serves the schema for offline validation.",
	}}
}

// GetMetadata lists the resource and data source types.
func (s *Server) GetMetadata(context.Context, *tfprotov6.GetMetadataRequest) (*tfprotov6.GetMetadataResponse, error) {
	return s.meta, nil
}

// GetProviderSchema returns the derived schema.
func (s *Server) GetProviderSchema(context.Context, *tfprotov6.GetProviderSchemaRequest) (*tfprotov6.GetProviderSchemaResponse, error) {
	return s.resp, nil
}

// GetResourceIdentitySchemas returns no identity schemas.
func (s *Server) GetResourceIdentitySchemas(context.Context, *tfprotov6.GetResourceIdentitySchemasRequest) (*tfprotov6.GetResourceIdentitySchemasResponse, error) {
	return &tfprotov6.GetResourceIdentitySchemasResponse{}, nil
}

// ValidateProviderConfig accepts any configuration that Terraform has already
// checked against the schema.
func (s *Server) ValidateProviderConfig(context.Context, *tfprotov6.ValidateProviderConfigRequest) (*tfprotov6.ValidateProviderConfigResponse, error) {
	return &tfprotov6.ValidateProviderConfigResponse{}, nil
}

// ConfigureProvider refuses: nothing may reach a cloud API.
func (s *Server) ConfigureProvider(context.Context, *tfprotov6.ConfigureProviderRequest) (*tfprotov6.ConfigureProviderResponse, error) {
	return &tfprotov6.ConfigureProviderResponse{Diagnostics: unsupported("ConfigureProvider")}, nil
}

// StopProvider has nothing to stop.
func (s *Server) StopProvider(context.Context, *tfprotov6.StopProviderRequest) (*tfprotov6.StopProviderResponse, error) {
	return &tfprotov6.StopProviderResponse{}, nil
}

// ValidateResourceConfig adds to Terraform core's schema checks the one the
// real provider makes itself: computed-only attributes cannot be set.
func (s *Server) ValidateResourceConfig(_ context.Context, req *tfprotov6.ValidateResourceConfigRequest) (*tfprotov6.ValidateResourceConfigResponse, error) {
	return &tfprotov6.ValidateResourceConfigResponse{Diagnostics: readOnlyDiags(s.src.Resources[req.TypeName], req.Config)}, nil
}

// UpgradeResourceState is unsupported.
func (s *Server) UpgradeResourceState(context.Context, *tfprotov6.UpgradeResourceStateRequest) (*tfprotov6.UpgradeResourceStateResponse, error) {
	return &tfprotov6.UpgradeResourceStateResponse{Diagnostics: unsupported("UpgradeResourceState")}, nil
}

// ReadResource is unsupported.
func (s *Server) ReadResource(context.Context, *tfprotov6.ReadResourceRequest) (*tfprotov6.ReadResourceResponse, error) {
	return &tfprotov6.ReadResourceResponse{Diagnostics: unsupported("ReadResource")}, nil
}

// PlanResourceChange is unsupported.
func (s *Server) PlanResourceChange(context.Context, *tfprotov6.PlanResourceChangeRequest) (*tfprotov6.PlanResourceChangeResponse, error) {
	return &tfprotov6.PlanResourceChangeResponse{Diagnostics: unsupported("PlanResourceChange")}, nil
}

// ApplyResourceChange is unsupported.
func (s *Server) ApplyResourceChange(context.Context, *tfprotov6.ApplyResourceChangeRequest) (*tfprotov6.ApplyResourceChangeResponse, error) {
	return &tfprotov6.ApplyResourceChangeResponse{Diagnostics: unsupported("ApplyResourceChange")}, nil
}

// ImportResourceState is unsupported.
func (s *Server) ImportResourceState(context.Context, *tfprotov6.ImportResourceStateRequest) (*tfprotov6.ImportResourceStateResponse, error) {
	return &tfprotov6.ImportResourceStateResponse{Diagnostics: unsupported("ImportResourceState")}, nil
}

// MoveResourceState is unsupported.
func (s *Server) MoveResourceState(context.Context, *tfprotov6.MoveResourceStateRequest) (*tfprotov6.MoveResourceStateResponse, error) {
	return &tfprotov6.MoveResourceStateResponse{Diagnostics: unsupported("MoveResourceState")}, nil
}

// UpgradeResourceIdentity is unsupported.
func (s *Server) UpgradeResourceIdentity(context.Context, *tfprotov6.UpgradeResourceIdentityRequest) (*tfprotov6.UpgradeResourceIdentityResponse, error) {
	return &tfprotov6.UpgradeResourceIdentityResponse{Diagnostics: unsupported("UpgradeResourceIdentity")}, nil
}

// ValidateDataResourceConfig rejects computed-only attributes that are set,
// as ValidateResourceConfig does.
func (s *Server) ValidateDataResourceConfig(_ context.Context, req *tfprotov6.ValidateDataResourceConfigRequest) (*tfprotov6.ValidateDataResourceConfigResponse, error) {
	return &tfprotov6.ValidateDataResourceConfigResponse{Diagnostics: readOnlyDiags(s.src.DataSources[req.TypeName], req.Config)}, nil
}

// ReadDataSource is unsupported.
func (s *Server) ReadDataSource(context.Context, *tfprotov6.ReadDataSourceRequest) (*tfprotov6.ReadDataSourceResponse, error) {
	return &tfprotov6.ReadDataSourceResponse{Diagnostics: unsupported("ReadDataSource")}, nil
}

// CallFunction is unsupported: the schema has no functions.
func (s *Server) CallFunction(context.Context, *tfprotov6.CallFunctionRequest) (*tfprotov6.CallFunctionResponse, error) {
	return &tfprotov6.CallFunctionResponse{Error: &tfprotov6.FunctionError{Text: "schema-only provider has no functions"}}, nil
}

// GetFunctions returns none.
func (s *Server) GetFunctions(context.Context, *tfprotov6.GetFunctionsRequest) (*tfprotov6.GetFunctionsResponse, error) {
	return &tfprotov6.GetFunctionsResponse{}, nil
}

// ValidateEphemeralResourceConfig is unsupported: the schema has no ephemeral resources.
func (s *Server) ValidateEphemeralResourceConfig(context.Context, *tfprotov6.ValidateEphemeralResourceConfigRequest) (*tfprotov6.ValidateEphemeralResourceConfigResponse, error) {
	return &tfprotov6.ValidateEphemeralResourceConfigResponse{Diagnostics: unsupported("ValidateEphemeralResourceConfig")}, nil
}

// OpenEphemeralResource is unsupported.
func (s *Server) OpenEphemeralResource(context.Context, *tfprotov6.OpenEphemeralResourceRequest) (*tfprotov6.OpenEphemeralResourceResponse, error) {
	return &tfprotov6.OpenEphemeralResourceResponse{Diagnostics: unsupported("OpenEphemeralResource")}, nil
}

// RenewEphemeralResource is unsupported.
func (s *Server) RenewEphemeralResource(context.Context, *tfprotov6.RenewEphemeralResourceRequest) (*tfprotov6.RenewEphemeralResourceResponse, error) {
	return &tfprotov6.RenewEphemeralResourceResponse{Diagnostics: unsupported("RenewEphemeralResource")}, nil
}

// CloseEphemeralResource is unsupported.
func (s *Server) CloseEphemeralResource(context.Context, *tfprotov6.CloseEphemeralResourceRequest) (*tfprotov6.CloseEphemeralResourceResponse, error) {
	return &tfprotov6.CloseEphemeralResourceResponse{Diagnostics: unsupported("CloseEphemeralResource")}, nil
}
