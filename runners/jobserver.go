package runners

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	jobpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/jobmanagement_v1"
	pipepb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/pipeline_v1"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/util/grpcx"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/outflow/outflow/internal/oplog"
)

// cancelWait bounds how long an interrupted launcher waits for the job server to
// cancel its job: the call and the job's end.
const cancelWait = time.Minute

// runOnJobServer runs p on a portable job server (Flink's, prism's) and, when ctx ends
// before the job does, cancels the job there, waits until the job server has it
// ended, and returns an error.
//
// Beam's universal runner (v2.77) only stops waiting when its context ends, and
// leaves the job to the job server. On Flink the job went on RUNNING after the
// launcher had exited: with its workers in a worker pool it went on delivering,
// beside the rerun that resumes it (TestInterruptCancelsJobOnFlink); with LOOPBACK
// workers, gone with the launcher, it was still RUNNING, holding its slots, 20 s
// later. So the SDK runs under a context that ends only once the job has been
// cancelled through the job service, with the id the job server gave it (recorded by
// dialRecordingJobs).
func runOnJobServer(ctx context.Context, p *beam.Pipeline) (beam.PipelineResult, error) {
	useRecordingDial.Do(func() { grpcx.Dial = dialRecordingJobs })
	sub := &submission{}
	runCtx, stopRun := context.WithCancel(context.WithValue(context.WithoutCancel(ctx), submissionKey{}, sub))
	defer stopRun()
	ended, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-ended:
			return
		case <-ctx.Done():
		}
		sub.interrupt()
		stopRun() // a job not yet submitted is not submitted
	}()
	res, err := beamx.RunWithMetrics(runCtx, p)
	close(ended)
	<-watched
	if ctx.Err() != nil && err == nil {
		// The job ended CANCELLED, which the SDK takes for success: its work was not
		// done.
		err = fmt.Errorf("job %s cancelled: %w", sub.jobID(), context.Cause(ctx))
	}
	return res, err
}

// submissionKey keys the *submission of a job in the context the SDK submits it with.
type submissionKey struct{}

// submission is a job the launcher submits to a job server: its id, once the job
// server has given one, and whether the launcher has been interrupted.
type submission struct {
	mu          sync.Mutex
	id          string
	endpoint    string
	interrupted bool
}

func (s *submission) jobID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

// submitted records the job id the job server at endpoint gave; a launcher
// interrupted meanwhile cancels the job at once.
func (s *submission) submitted(endpoint, id string) {
	s.mu.Lock()
	s.id, s.endpoint = id, endpoint
	late := s.interrupted
	s.mu.Unlock()
	if late {
		cancelJob(endpoint, id)
	}
}

// interrupt cancels the job, if the job server has given its id yet.
func (s *submission) interrupt() {
	s.mu.Lock()
	s.interrupted = true
	id, endpoint := s.id, s.endpoint
	s.mu.Unlock()
	if id != "" {
		cancelJob(endpoint, id)
	}
}

// cancelJob asks the job service at endpoint to cancel job id, and waits until the
// job server has it ended (at most cancelWait).
func cancelJob(endpoint, id string) {
	log := oplog.L()
	log.Info("interrupted: cancelling the job on the job server", "job", id, "endpoint", endpoint)
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Warn("could not cancel the job: cancel it on the runner", "job", id, "error", err)
		return
	}
	defer conn.Close()
	client := jobpb.NewJobServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), cancelWait)
	defer cancel()
	if _, err := client.Cancel(ctx, &jobpb.CancelJobRequest{JobId: id}); err != nil {
		log.Warn("could not cancel the job: cancel it on the runner", "job", id, "error", err)
		return
	}
	for {
		st, err := client.GetState(ctx, &jobpb.GetJobStateRequest{JobId: id})
		if err == nil && ended(st.GetState()) {
			log.Info("job ended", "job", id, "state", st.GetState().String())
			return
		}
		select {
		case <-ctx.Done():
			log.Warn("the job has not ended since it was cancelled: see to it on the runner", "job", id,
				"waited", cancelWait, "state", st.GetState().String(), "error", err)
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func ended(s jobpb.JobState_Enum) bool {
	switch s {
	case jobpb.JobState_DONE, jobpb.JobState_FAILED, jobpb.JobState_CANCELLED, jobpb.JobState_DRAINED, jobpb.JobState_UPDATED:
		return true
	}
	return false
}

var useRecordingDial sync.Once

// dialRecordingJobs replaces Beam's grpcx.DefaultDial, which its universal runner
// reaches the job service with (and the SDK every other service): the same blocking,
// insecure connection, plus an interceptor on the job service's calls: it marks a
// streaming job so (markStreaming) as it is prepared, and gives a submission in the
// call's context the id of the job it submitted, which the runner keeps to itself
// until the job has ended.
func dialRecordingJobs(ctx context.Context, endpoint string, timeout time.Duration) (*grpc.ClientConn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	intercept := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoke grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if prep, ok := req.(*jobpb.PrepareJobRequest); ok {
			markStreaming(prep)
		}
		err := invoke(ctx, method, req, reply, cc, opts...)
		if run, ok := reply.(*jobpb.RunJobResponse); ok && err == nil && run.GetJobId() != "" {
			if sub, ok := ctx.Value(submissionKey{}).(*submission); ok {
				sub.submitted(endpoint, run.GetJobId())
			}
		}
		return err
	}
	// As DefaultDial does: connected before the call returns (grpc.DialContext, WithBlock).
	cc, err := grpc.DialContext(ctx, endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithBlock(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)), grpc.WithChainUnaryInterceptor(intercept))
	if err != nil {
		return nil, fmt.Errorf("failed to dial server at %v: %w", endpoint, err)
	}
	return cc, nil
}

// markStreaming sets Beam's Java pipeline option "streaming" on a job whose pipeline
// has an unbounded PCollection (the stream's Kafka source). Beam's Go launcher sends a
// job server no such option, and Beam's Flink runner (2.62) then runs the streaming
// pipeline with its batch defaults: there every timer of the stream fired on a
// 5-second grid, and its first delivery took 40 s; marked streaming, 5 s
// (TestStreamToHTTPOnFlink).
func markStreaming(prep *jobpb.PrepareJobRequest) {
	for _, pc := range prep.GetPipeline().GetComponents().GetPcollections() {
		if pc.GetIsBounded() != pipepb.IsBounded_UNBOUNDED {
			continue
		}
		if prep.PipelineOptions == nil {
			prep.PipelineOptions = &structpb.Struct{}
		}
		if prep.PipelineOptions.Fields == nil {
			prep.PipelineOptions.Fields = map[string]*structpb.Value{}
		}
		prep.PipelineOptions.Fields["beam:option:streaming:v1"] = structpb.NewBoolValue(true)
		return
	}
}
