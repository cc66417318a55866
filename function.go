// Package function is the Cloud Functions (gen2) entry point: it registers
// the HTTP function "Broker", which serves the broker API. cmd/broker serves
// the same function locally and on Cloud Run.
package function

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"sync"

	"github.com/GoogleCloudPlatform/functions-framework-go/functions"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/cloudlog"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

func init() {
	functions.HTTP("Broker", serve)
}

var (
	once     sync.Once
	instance *broker.Broker
	initErr  error
)

// Prepare builds the broker from the environment. cmd/broker calls it
// before serving so a bad policy stops start-up; on Cloud Functions the
// first request calls it.
func Prepare(ctx context.Context) error {
	once.Do(func() {
		log := cloudlog.New(os.Stdout, slog.LevelInfo)
		cfg, err := broker.ConfigFromEnv(os.Getenv)
		if err != nil {
			initErr = err
		} else {
			cfg.Log = log
			instance, initErr = broker.New(ctx, cfg)
		}
		if initErr != nil {
			log.Log(ctx, slog.LevelError+4, "broker cannot start", "error", initErr.Error())
		}
	})
	return initErr
}

func serve(w http.ResponseWriter, r *http.Request) {
	if Prepare(r.Context()) != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(wire.Status(wire.CodeUnavailable))
		_ = json.NewEncoder(w).Encode(wire.ErrorResponse{Error: wire.ErrorBody{
			Code: wire.CodeUnavailable, Message: "broker configuration failed to load; see logs"}})
		return
	}
	instance.ServeHTTP(w, r)
}
