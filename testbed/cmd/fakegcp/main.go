// Command fakegcp runs local doubles of the Google Cloud services the broker uses, for
// the demo and the end-to-end tests. Everything listens on loopback:
//
//   - an OAuth2 token endpoint (POST /token: JWT-bearer and refresh-token grants; GET /tokeninfo)
//   - Secret Manager over plain gRPC
//   - IAM Credentials generateAccessToken (REST)
//   - a GCE/Cloud Run metadata server (for GCE_METADATA_HOST)
//   - a Healthcare API DICOMweb front that checks bearer tokens per store and proxies
//     to an Orthanc standing in for the DICOM store
//   - Cloud Storage's JSON API (fake-gcs-server), for policies at gs://BUCKET/PREFIX/
//     (the broker's BROKER_STORAGE_ENDPOINT; StorageUrl in the state document)
//   - a small admin API to steer them
//
// Usage:
//
//	fakegcp [--setup setup.json] [--state state.json] [--out-dir DIR]
//	        [--token-addr A] [--secretmanager-addr A] [--iam-addr A] [--metadata-addr A]
//	        [--dicomweb-addr A] [--storage-addr A] [--admin-addr A] [--quiet]
//
// Every address defaults to 127.0.0.1:0 (a free port). SIGINT or SIGTERM stops it.
//
// # Setup document (--setup)
//
// Unknown fields are errors. Output File paths are relative to --out-dir; FromFile
// inputs are relative to the setup file. Every field is optional.
//
//	{
//	  "ProjectId": "demo-project",
//	  "MetadataServiceAccount": "broker@demo-project.iam.gserviceaccount.com",
//	  "TokenLifetime": "1h",
//	  "ServiceAccounts": [
//	    {"Email": "dicom-sa@demo-project.iam.gserviceaccount.com",
//	     "Secret": "projects/demo-project/secrets/dicom-sa", "File": "dicom-sa.json"}
//	  ],
//	  "AuthorizedUsers": [
//	    {"Principal": "alice@example.com", "Secret": "projects/demo-project/secrets/alice"}
//	  ],
//	  "TokenCreators": [
//	    {"Caller": "broker@demo-project.iam.gserviceaccount.com",
//	     "Target": "store-dicom@demo-project.iam.gserviceaccount.com"}
//	  ],
//	  "Secrets": [
//	    {"Name": "projects/demo-project/secrets/broker-config", "FromFile": "policy.json"},
//	    {"Name": "projects/demo-project/secrets/other", "Data": "inline text"}
//	  ],
//	  "Stores": [
//	    {"Path": "projects/demo-project/locations/europe-west2/datasets/d/dicomStores/s",
//	     "Upstream": "http://127.0.0.1:8043/dicom-web/", "Username": "orthanc", "Password": "orthanc",
//	     "Principals": ["dicom-sa@demo-project.iam.gserviceaccount.com", "alice@example.com"]}
//	  ]
//	}
//
// ProjectId and MetadataServiceAccount are the metadata server's identity (defaults
// "demo-project" and "broker@PROJECT.iam.gserviceaccount.com"). Each service account
// gets a fresh RSA-2048 key; its service_account JSON (token_uri pointing at the fake)
// becomes a new version of Secret and/or is written to File with mode 0600. Authorized
// users likewise get authorized_user JSON. TokenCreators are
// roles/iam.serviceAccountTokenCreator bindings for generateAccessToken. A store accepts
// tokens, issued by the fake, of the listed principals only.
//
// # State document (--state)
//
// Written atomically once everything listens:
//
//	{
//	  "Pid": 1234, "ProjectId": "demo-project",
//	  "MetadataServiceAccount": "broker@demo-project.iam.gserviceaccount.com",
//	  "TokenUrl": "http://127.0.0.1:P/token", "TokenServerUrl": "http://127.0.0.1:P",
//	  "SecretManagerAddr": "127.0.0.1:P", "IamCredentialsUrl": "http://127.0.0.1:P",
//	  "MetadataHost": "127.0.0.1:P", "DicomWebBaseUrl": "http://127.0.0.1:P/v1/",
//	  "AdminUrl": "http://127.0.0.1:P",
//	  "ServiceAccounts": [{"Email": "…", "KeyId": "…", "Secret": "projects/…/secrets/dicom-sa",
//	                       "SecretVersion": "projects/…/secrets/dicom-sa/versions/1", "File": "/out/dicom-sa.json"}],
//	  "AuthorizedUsers": [{"Principal": "…", "Secret": "…", "SecretVersion": "…", "File": "…"}],
//	  "Secrets": [{"Name": "projects/…/secrets/broker-config", "Version": "projects/…/versions/1"}],
//	  "Stores": ["projects/…/dicomStores/s"]
//	}
//
// Point the broker at it with BROKER_SECRETMANAGER_ENDPOINT=SecretManagerAddr,
// BROKER_IAMCREDENTIALS_ENDPOINT=IamCredentialsUrl and GCE_METADATA_HOST=MetadataHost;
// a store's DICOMweb URL is DicomWebBaseUrl + Path + "/dicomWeb/".
//
// # Admin API (AdminUrl)
//
// JSON in, JSON out ({} on success); errors are {"error":{"code":"bad_request","message":"…"}}
// with status 400. No answer carries a token or key.
//
//	GET  /state                         the state document (kept up to date)
//	GET  /counters                      {"TokenRequests", "Minted":{principal:n}, "MintedByKey":{keyId:n},
//	                                     "SecretAccesses":{secret:n}, "IamCalls":{target:n},
//	                                     "MetadataTokenRequests", "DicomWeb":{store:{"Accepted","Refused"}}}
//	POST /keys/disable                  {"KeyId"}: JWT grants with that key get 400 invalid_grant
//	POST /keys/enable                   {"KeyId"}
//	POST /keys/rotate                   {"Email", "Secret", "File", "DisableOld"}: new key, delivered as
//	                                    in the setup; answers {"Email","KeyId","SecretVersion","File"}
//	POST /users/revoke                  {"Principal"}: its refresh tokens get 400 invalid_grant
//	POST /token/fail-next               {"Count", "Status"}: next Count token requests fail (Count<0: until reset)
//	POST /token/latency                 {"Latency": "2s"}
//	POST /token/lifetime                {"Lifetime": "5m"}: lifetime of tokens minted from now on
//	POST /clock/advance                 {"By": "50m"}: moves the fakes' clock (token expiry) forward
//	POST /iam/fail-next                 {"Count", "Status"}
//	POST /iam/allow, /iam/revoke        {"Caller", "Target"}
//	POST /secretmanager/down            {"Down": true}: every RPC answers UNAVAILABLE
//	POST /secretmanager/deny            {"Secret", "Deny": true}: access answers PERMISSION_DENIED
//	POST /secretmanager/versions        {"Secret", "Data" | "DataBase64"}: answers {"Version"}
//	POST /secretmanager/version-state   {"Version", "State": "ENABLED" | "DISABLED" | "DESTROYED"}
//	POST /stores                        a Stores entry of the setup (adds or updates a store)
//	POST /stores/bind, /stores/unbind   {"Path", "Principal"}
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/fakegcp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := fakegcp.Run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		stop()
		os.Exit(1)
	}
}
