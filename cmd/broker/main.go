// Command broker serves the broker API locally and on Cloud Run: the same
// "Broker" function Cloud Functions runs, at the root path, on $PORT.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"

	function "github.com/orthanc-gcp-broker/orthanc-gcp-broker"
)

func main() {
	if os.Getenv("FUNCTION_TARGET") == "" {
		os.Setenv("FUNCTION_TARGET", "Broker")
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	if err := function.Prepare(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "broker:", err)
		os.Exit(1)
	}
	// BROKER_LISTEN_HOST (e.g. 127.0.0.1) keeps a laptop broker off the
	// network; Cloud Run needs the default, all interfaces.
	if err := funcframework.StartHostPort(os.Getenv("BROKER_LISTEN_HOST"), port); err != nil {
		fmt.Fprintln(os.Stderr, "broker:", err)
		os.Exit(1)
	}
}
