package fakegcp

import (
	"context"
	"errors"
	"fmt"
	"google.golang.org/api/option"
	"google.golang.org/grpc/credentials/insecure"
	"hash/crc32"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// maxPayload is Secret Manager's payload limit.
const maxPayload = 64 << 10

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var secretIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)

type smVersion struct {
	n         int64
	data      []byte
	crc       int64
	state     secretmanagerpb.SecretVersion_State
	created   time.Time
	destroyed time.Time
	etag      int
}

type smSecret struct {
	name     string
	created  time.Time
	labels   map[string]string
	repl     *secretmanagerpb.Replication
	versions []*smVersion // versions[i].n == i+1
}

// SecretManager implements secretmanagerpb.SecretManagerServiceServer over plain gRPC.
// Secrets are keyed by the name exactly as given ("projects/P/secrets/S").
type SecretManager struct {
	secretmanagerpb.UnimplementedSecretManagerServiceServer

	mu       sync.Mutex
	now      func() time.Time
	secrets  map[string]*smSecret
	denied   map[string]bool
	down     bool
	accesses map[string]int
	log      *slog.Logger

	srv *grpc.Server
	ln  net.Listener
}

// NewSecretManager returns an empty Secret Manager; Start it to serve.
func NewSecretManager() *SecretManager {
	return &SecretManager{
		now:      time.Now,
		secrets:  map[string]*smSecret{},
		denied:   map[string]bool{},
		accesses: map[string]int{},
		log:      discardLogger(),
	}
}

// Start listens on addr (like "127.0.0.1:0") and serves plain (insecure) gRPC until Close.
func (s *SecretManager) Start(addr string) error {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(s.intercept))
	secretmanagerpb.RegisterSecretManagerServiceServer(srv, s)
	s.mu.Lock()
	if s.srv != nil {
		s.mu.Unlock()
		ln.Close()
		return errors.New("fakegcp: secret manager already started")
	}
	s.srv, s.ln = srv, ln
	s.mu.Unlock()
	go srv.Serve(ln) //nolint:errcheck // returns when stopped
	return nil
}

// Addr is "127.0.0.1:PORT", the value for option.WithEndpoint.
func (s *SecretManager) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// ClientOptions point Google's Secret Manager client at the fake listening
// on addr: plain gRPC, no credentials.
func ClientOptions(addr string) []option.ClientOption {
	return []option.ClientOption{option.WithEndpoint(addr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials()))}
}

// Close stops the server, cutting open connections.
func (s *SecretManager) Close() {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// SetNow injects the clock used for create/destroy times (default time.Now).
func (s *SecretManager) SetNow(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now == nil {
		now = time.Now
	}
	s.now = now
}

// SetLogger sets where the server logs (never payloads). Default: discard.
func (s *SecretManager) SetLogger(l *slog.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = l
}

// AddVersion creates secret ("projects/P/secrets/S") if needed and adds an ENABLED
// version; returns its full name "projects/P/secrets/S/versions/N". It panics on a
// malformed secret name (a test bug).
func (s *SecretManager) AddVersion(secret string, data []byte) string {
	if _, _, ok := parseSecretName(secret); !ok {
		panic("fakegcp: AddVersion: malformed secret name " + strconv.Quote(secret))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, ok := s.secrets[secret]
	if !ok {
		sec = &smSecret{name: secret, created: s.now(), repl: automaticReplication()}
		s.secrets[secret] = sec
	}
	return s.addLocked(sec, data).name(sec)
}

func (s *SecretManager) addLocked(sec *smSecret, data []byte) *smVersion {
	v := &smVersion{
		n:       int64(len(sec.versions) + 1),
		data:    append([]byte(nil), data...),
		crc:     int64(crc32.Checksum(data, castagnoli)),
		state:   secretmanagerpb.SecretVersion_ENABLED,
		created: s.now(),
		etag:    1,
	}
	sec.versions = append(sec.versions, v)
	s.log.Info("fakegcp: secret version added", "version", v.name(sec))
	return v
}

// SetVersionState sets a version's state (full name "projects/P/secrets/S/versions/N").
// DESTROYED wipes the payload and cannot be undone.
func (s *SecretManager) SetVersionState(version string, st secretmanagerpb.SecretVersion_State) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, v, err := s.resolveLocked(version)
	if err != nil {
		return err
	}
	return s.setStateLocked(sec, v, st, "")
}

// Deny makes AccessSecretVersion on secret ("projects/P/secrets/S") answer PermissionDenied.
func (s *SecretManager) Deny(secret string, deny bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if deny {
		s.denied[secret] = true
	} else {
		delete(s.denied, secret)
	}
}

// SetDown makes every RPC answer codes.Unavailable. Note that the real client retries
// Unavailable on AccessSecretVersion for up to 60 s unless its context ends sooner.
func (s *SecretManager) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// Accesses counts AccessSecretVersion calls for secret ("projects/P/secrets/S"), every
// outcome included (also while down or denied).
func (s *SecretManager) Accesses(secret string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accesses[secret]
}

// AccessCounts snapshots Accesses for every secret.
func (s *SecretManager) AccessCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.accesses))
	for k, v := range s.accesses {
		out[k] = v
	}
	return out
}

func (s *SecretManager) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	s.mu.Lock()
	if r, ok := req.(*secretmanagerpb.AccessSecretVersionRequest); ok {
		if p, sec, _, ok := parseVersionName(r.GetName()); ok {
			s.accesses[secretName(p, sec)]++
		}
	}
	down := s.down
	s.mu.Unlock()
	if down {
		return nil, status.Error(codes.Unavailable, "The service is currently unavailable.")
	}
	return handler(ctx, req)
}

func automaticReplication() *secretmanagerpb.Replication {
	return &secretmanagerpb.Replication{Replication: &secretmanagerpb.Replication_Automatic_{Automatic: &secretmanagerpb.Replication_Automatic{}}}
}

func secretName(project, secret string) string { return "projects/" + project + "/secrets/" + secret }

func (v *smVersion) name(sec *smSecret) string {
	return sec.name + "/versions/" + strconv.FormatInt(v.n, 10)
}

// parseSecretName splits "projects/P/secrets/S".
func parseSecretName(name string) (project, secret string, ok bool) {
	p := strings.Split(name, "/")
	if len(p) != 4 || p[0] != "projects" || p[1] == "" || p[2] != "secrets" || !secretIDRe.MatchString(p[3]) {
		return "", "", false
	}
	return p[1], p[3], true
}

// parseVersionName splits "projects/P/secrets/S/versions/V".
func parseVersionName(name string) (project, secret, version string, ok bool) {
	i := strings.LastIndex(name, "/versions/")
	if i < 0 {
		return "", "", "", false
	}
	project, secret, ok = parseSecretName(name[:i])
	version = name[i+len("/versions/"):]
	if !ok || version == "" || strings.Contains(version, "/") {
		return "", "", "", false
	}
	return project, secret, version, true
}

func (s *SecretManager) secretLocked(name string) (*smSecret, error) {
	if _, _, ok := parseSecretName(name); !ok {
		return nil, status.Errorf(codes.InvalidArgument, "Invalid resource field value in the request: %q is not a valid secret name.", name)
	}
	sec, ok := s.secrets[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "Secret [%s] not found or has no versions.", name)
	}
	return sec, nil
}

// resolveLocked finds a version by full name; "latest" is the most recently
// created version, as in Google's Secret Manager.
func (s *SecretManager) resolveLocked(name string) (*smSecret, *smVersion, error) {
	p, id, ver, ok := parseVersionName(name)
	if !ok {
		return nil, nil, status.Errorf(codes.InvalidArgument, "Invalid resource field value in the request: %q is not a valid secret version name.", name)
	}
	sec, err := s.secretLocked(secretName(p, id))
	if err != nil {
		return nil, nil, err
	}
	if ver == "latest" {
		if len(sec.versions) == 0 {
			return nil, nil, status.Errorf(codes.NotFound, "Secret [%s] not found or has no versions.", sec.name)
		}
		// Google's rule: the most recently created version, whatever its
		// state. Accessing it while disabled or destroyed fails with
		// FAILED_PRECONDITION; there is no fall-back to an older version.
		return sec, sec.versions[len(sec.versions)-1], nil
	}
	n, err := strconv.ParseInt(ver, 10, 64)
	if err != nil || n < 1 {
		return nil, nil, status.Errorf(codes.InvalidArgument, "Invalid resource field value in the request: %q is not a valid secret version name.", name)
	}
	if n > int64(len(sec.versions)) {
		return nil, nil, status.Errorf(codes.NotFound, "Secret Version [%s] not found.", name)
	}
	return sec, sec.versions[n-1], nil
}

func (s *SecretManager) versionProto(sec *smSecret, v *smVersion) *secretmanagerpb.SecretVersion {
	pv := &secretmanagerpb.SecretVersion{
		Name:                           v.name(sec),
		CreateTime:                     timestamppb.New(v.created),
		State:                          v.state,
		Etag:                           fmt.Sprintf("\"%d\"", v.etag),
		ClientSpecifiedPayloadChecksum: true,
	}
	if v.state == secretmanagerpb.SecretVersion_DESTROYED {
		pv.DestroyTime = timestamppb.New(v.destroyed)
	}
	return pv
}

func (s *SecretManager) secretProto(sec *smSecret) *secretmanagerpb.Secret {
	labels := map[string]string{}
	for k, v := range sec.labels {
		labels[k] = v
	}
	return &secretmanagerpb.Secret{
		Name:        sec.name,
		CreateTime:  timestamppb.New(sec.created),
		Labels:      labels,
		Replication: sec.repl,
		Etag:        "\"1\"",
	}
}

func (s *SecretManager) setStateLocked(sec *smSecret, v *smVersion, st secretmanagerpb.SecretVersion_State, etag string) error {
	if etag != "" && etag != fmt.Sprintf("\"%d\"", v.etag) {
		return status.Error(codes.Aborted, "The etag provided in the request does not match the current etag of the resource.")
	}
	switch st {
	case secretmanagerpb.SecretVersion_ENABLED, secretmanagerpb.SecretVersion_DISABLED:
		if v.state == secretmanagerpb.SecretVersion_DESTROYED {
			return status.Errorf(codes.FailedPrecondition, "Secret Version [%s] is in DESTROYED state.", v.name(sec))
		}
	case secretmanagerpb.SecretVersion_DESTROYED:
		if v.state != secretmanagerpb.SecretVersion_DESTROYED {
			v.data, v.destroyed = nil, s.now()
		}
	default:
		return status.Errorf(codes.InvalidArgument, "invalid state %v", st)
	}
	if v.state != st {
		v.etag++
	}
	v.state = st
	s.log.Info("fakegcp: secret version state set", "version", v.name(sec), "state", st.String())
	return nil
}

// AccessSecretVersion returns the payload of an ENABLED version.
func (s *SecretManager) AccessSecretVersion(_ context.Context, req *secretmanagerpb.AccessSecretVersionRequest) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Google checks permission before existence.
	if p, id, _, ok := parseVersionName(req.GetName()); ok && s.denied[secretName(p, id)] {
		return nil, status.Errorf(codes.PermissionDenied, "Permission 'secretmanager.versions.access' denied for resource '%s' (or it may not exist).", req.GetName())
	}
	sec, v, err := s.resolveLocked(req.GetName())
	if err != nil {
		return nil, err
	}
	if v.state != secretmanagerpb.SecretVersion_ENABLED {
		return nil, status.Errorf(codes.FailedPrecondition, "Secret Version [%s] is in %s state.", v.name(sec), v.state)
	}
	crc := v.crc
	return &secretmanagerpb.AccessSecretVersionResponse{
		Name:    v.name(sec),
		Payload: &secretmanagerpb.SecretPayload{Data: append([]byte(nil), v.data...), DataCrc32C: &crc},
	}, nil
}

// GetSecretVersion returns a version's metadata; "latest" resolves as for access.
func (s *SecretManager) GetSecretVersion(_ context.Context, req *secretmanagerpb.GetSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, v, err := s.resolveLocked(req.GetName())
	if err != nil {
		return nil, err
	}
	return s.versionProto(sec, v), nil
}

// AddSecretVersion adds an ENABLED version to an existing secret.
func (s *SecretManager) AddSecretVersion(_ context.Context, req *secretmanagerpb.AddSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	data := req.GetPayload().GetData()
	if len(data) > maxPayload {
		return nil, status.Errorf(codes.InvalidArgument, "Secret payload data length must be less than or equal to %d bytes.", maxPayload)
	}
	if c := req.GetPayload().DataCrc32C; c != nil && *c != int64(crc32.Checksum(data, castagnoli)) {
		return nil, status.Error(codes.InvalidArgument, "Checksum mismatch: the provided data_crc32c does not match the payload.")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.secretLocked(req.GetParent())
	if err != nil {
		return nil, err
	}
	return s.versionProto(sec, s.addLocked(sec, data)), nil
}

// CreateSecret creates a secret with no versions.
func (s *SecretManager) CreateSecret(_ context.Context, req *secretmanagerpb.CreateSecretRequest) (*secretmanagerpb.Secret, error) {
	parent := req.GetParent()
	project, ok := strings.CutPrefix(parent, "projects/")
	if !ok || project == "" || strings.Contains(project, "/") {
		return nil, status.Errorf(codes.InvalidArgument, "Invalid resource field value in the request: %q is not a valid parent.", parent)
	}
	if !secretIDRe.MatchString(req.GetSecretId()) {
		return nil, status.Errorf(codes.InvalidArgument, "Invalid secret_id %q.", req.GetSecretId())
	}
	if req.GetSecret().GetReplication() == nil {
		return nil, status.Error(codes.InvalidArgument, "Secret.replication is required.")
	}
	name := secretName(project, req.GetSecretId())
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, exists := s.secrets[name]; exists {
		return nil, status.Errorf(codes.AlreadyExists, "Secret [%s] already exists.", name)
	}
	sec := &smSecret{name: name, created: s.now(), repl: req.GetSecret().GetReplication(), labels: map[string]string{}}
	for k, v := range req.GetSecret().GetLabels() {
		sec.labels[k] = v
	}
	s.secrets[name] = sec
	s.log.Info("fakegcp: secret created", "secret", name)
	return s.secretProto(sec), nil
}

// GetSecret returns a secret's metadata.
func (s *SecretManager) GetSecret(_ context.Context, req *secretmanagerpb.GetSecretRequest) (*secretmanagerpb.Secret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.secretLocked(req.GetName())
	if err != nil {
		return nil, err
	}
	return s.secretProto(sec), nil
}

// ListSecretVersions lists versions newest first, paginated by page_size/page_token.
// Filters are not supported (InvalidArgument).
func (s *SecretManager) ListSecretVersions(_ context.Context, req *secretmanagerpb.ListSecretVersionsRequest) (*secretmanagerpb.ListSecretVersionsResponse, error) {
	if req.GetFilter() != "" {
		return nil, status.Error(codes.InvalidArgument, "fakegcp: filters are not supported")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.secretLocked(req.GetParent())
	if err != nil {
		return nil, err
	}
	all := make([]*secretmanagerpb.SecretVersion, 0, len(sec.versions))
	for _, v := range sec.versions {
		all = append(all, s.versionProto(sec, v))
	}
	// Newest first, as Google lists them.
	for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
		all[i], all[j] = all[j], all[i]
	}
	start := 0
	if t := req.GetPageToken(); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 || n > len(all) {
			return nil, status.Error(codes.InvalidArgument, "Invalid page token.")
		}
		start = n
	}
	size := int(req.GetPageSize())
	if size <= 0 || size > 25000 {
		size = 25000
	}
	end := min(start+size, len(all))
	resp := &secretmanagerpb.ListSecretVersionsResponse{Versions: all[start:end], TotalSize: int32(len(all))}
	if end < len(all) {
		resp.NextPageToken = strconv.Itoa(end)
	}
	return resp, nil
}

func (s *SecretManager) stateRPC(name, etag string, st secretmanagerpb.SecretVersion_State) (*secretmanagerpb.SecretVersion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, v, err := s.resolveLocked(name)
	if err != nil {
		return nil, err
	}
	if err := s.setStateLocked(sec, v, st, etag); err != nil {
		return nil, err
	}
	return s.versionProto(sec, v), nil
}

// DisableSecretVersion sets a version DISABLED.
func (s *SecretManager) DisableSecretVersion(_ context.Context, req *secretmanagerpb.DisableSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return s.stateRPC(req.GetName(), req.GetEtag(), secretmanagerpb.SecretVersion_DISABLED)
}

// EnableSecretVersion sets a version ENABLED.
func (s *SecretManager) EnableSecretVersion(_ context.Context, req *secretmanagerpb.EnableSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return s.stateRPC(req.GetName(), req.GetEtag(), secretmanagerpb.SecretVersion_ENABLED)
}

// DestroySecretVersion destroys a version's payload for good.
func (s *SecretManager) DestroySecretVersion(_ context.Context, req *secretmanagerpb.DestroySecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return s.stateRPC(req.GetName(), req.GetEtag(), secretmanagerpb.SecretVersion_DESTROYED)
}
