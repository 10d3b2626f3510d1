// Command kubehistory-apiserver runs every stage of kubehistory in one process: audit ingest, the
// JetStream queue (embedded by default), Git writers, the index and the aggregated history API.
package main

import (
	"os"

	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/component-base/cli"

	"github.com/kubehistory/kubehistory/pkg/cmd/server"
)

func main() {
	ctx := genericapiserver.SetupSignalContext()
	os.Exit(cli.Run(server.NewCommand(ctx)))
}
