// Package runners turns Beam's runner flags into a running pipeline: the one place
// that knows which runners outflow supports.
//
//   - default (no --runner): embedded prism, in this process, nothing to install;
//   - --runner=universal --endpoint=HOST:PORT: a portable job server (Flink's job
//     server, or prism started as one); pass --environment_type=LOOPBACK to run the
//     workers in this process, as local job servers need;
//   - --runner=dataflow with the usual Dataflow flags (--project, --region,
//     --staging_location, …).
package runners

import (
	"context"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"
)

// Run runs p on the runner named by --runner (embedded prism when none is) and
// returns its result, whose metrics are the committed values.
func Run(ctx context.Context, p *beam.Pipeline) (beam.PipelineResult, error) {
	return beamx.RunWithMetrics(ctx, p)
}

// FlagsHelp describes the runner flags for a command's usage message.
const FlagsHelp = `runner flags (Beam's):
  --runner NAME           prism (default: embedded, nothing to install), universal, dataflow
  --endpoint HOST:PORT    job server for --runner=universal (Flink's, or prism's own)
  --environment_type T    LOOPBACK runs workers in this process (local job servers); DOCKER
  --project, --region, --staging_location, --temp_location …   Dataflow`
