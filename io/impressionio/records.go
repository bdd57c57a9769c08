package impressionio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/mtime"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/outflow/outflow/internal/ack"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/io/kafkaio"
	"github.com/outflow/outflow/transforms/route"
)

func init() {
	register.DoFn6x0[context.Context, beam.EventTime, kafkaio.Record, func(beam.EventTime, impression.Impression),
		func(deadletterio.Record), func(int32, []byte)](&recordsFn{})
}

// FromRecords parses the impressions in Kafka record values (CONTRACT §3: one line,
// or several NDJSON lines, per record) and timestamps each with its impression time,
// kept within `within` of its record's time. The watermark follows record times: an
// impression older than the windows' allowed lateness would be dropped by the runner,
// and one far ahead would hold a window, and the state of its copies, open until the
// watermark reaches it (a producer's clock hours ahead). Such an impression keeps its
// own time, but is windowed at the bound; the object store sinks dead-letter it rather
// than store it in a window not its own (sinks.Deliver), and replay stores it in its
// window. Invalid lines become dead-letter records naming the partition and offset.
//
// Each record's Read mark (package ack) says how many copies of it are to be
// finished: one per invalid line, and one per target each valid impression is
// routed to (route.Target.Matches: the routers downstream decide the same way).
//
// In: PCollection<kafkaio.Record>. Out: PCollection<impression.Impression>,
// PCollection<deadletterio.Record>, marks PCollection<KV<int32, []byte>>.
func FromRecords(s beam.Scope, recs beam.PCollection, within time.Duration, targets []route.Target) (imps, invalid, marks beam.PCollection) {
	s = s.Scope("impressionio.FromRecords")
	return beam.ParDo3(s, &recordsFn{WithinMs: within.Milliseconds(), Targets: targets}, recs)
}

type recordsFn struct {
	WithinMs int64          `json:"within_ms"`
	Targets  []route.Target `json:"targets"`

	lines, invalid, valid, late, ahead metricname.Counter
	read                               ack.Tally // the bundle's Read marks
}

func (fn *recordsFn) Setup() {
	fn.lines = metricname.NewCounter(metricname.Job, metricname.Lines)
	fn.invalid = metricname.NewCounter(metricname.Job, metricname.InvalidLines)
	fn.valid = metricname.NewCounter(metricname.Job, metricname.Valid)
	fn.late = metricname.NewCounter(metricname.Job, metricname.VeryLate)
	fn.ahead = metricname.NewCounter(metricname.Job, metricname.FarAhead)
}

// FinishBundle emits the bundle's Read marks together: one element per partition,
// not one per record. Records are in the global window, as this output is.
func (fn *recordsFn) FinishBundle(_ func(beam.EventTime, impression.Impression), _ func(deadletterio.Record), marks func(int32, []byte)) {
	fn.read.Emit(marks)
}

func (fn *recordsFn) ProcessElement(ctx context.Context, recordTime beam.EventTime, r kafkaio.Record,
	emit func(beam.EventTime, impression.Impression), dead func(deadletterio.Record), marks func(int32, []byte)) {
	// The origin names the record (package ack), and orders repeats of an impression
	// by where they were read.
	origin := ack.Origin(r.Partition, r.Offset)
	received := time.Now().UnixMilli()
	var imps []impression.Impression
	var invalid []deadletterio.Record
	for line := range bytes.Lines(r.Value) {
		line = bytes.TrimRight(line, "\r\n")
		imp, err := impression.Parse(line)
		if errors.Is(err, impression.ErrBlank) {
			continue
		}
		fn.lines.Inc(ctx, 1)
		if err != nil {
			reason := err.Error()
			if ie := (*impression.InvalidError)(nil); errors.As(err, &ie) {
				reason = ie.Reason
			}
			invalid = append(invalid, deadletterio.Invalid(line, reason, fmt.Sprintf(deadletterio.KafkaSource, r.Partition, r.Offset), origin))
			continue
		}
		imp.Origin = origin
		imp.ReceivedAt = received
		imps = append(imps, imp)
	}
	copies := len(invalid)
	for i := range imps {
		for j := range fn.Targets {
			if fn.Targets[j].Matches(&imps[i]) {
				copies++
			}
		}
	}
	fn.read.Read(origin, r.From, copies)
	fn.invalid.Inc(ctx, int64(len(invalid)))
	for _, rec := range invalid {
		dead(rec)
	}
	fn.valid.Inc(ctx, int64(len(imps)))
	for _, imp := range imps {
		ts := imp.Time
		if earliest := recordTime.Milliseconds() - fn.WithinMs; ts < earliest {
			ts = earliest
			fn.late.Inc(ctx, 1)
		} else if latest := recordTime.Milliseconds() + fn.WithinMs; ts > latest {
			ts = latest
			fn.ahead.Inc(ctx, 1)
		}
		emit(mtime.FromMilliseconds(ts), imp)
	}
}
