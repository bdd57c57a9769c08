package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/outflow/outflow/io/objectio"
)

// A stream holds its prefix's lease while it runs, renewing it; a backfill given
// --break-lease takes it, and the stream then stops writing and exits 1, naming the
// lease. Stopped normally, a stream leaves no lease behind.
func TestStreamStopsWhenItsLeaseIsBroken(t *testing.T) {
	t.Parallel()
	tp := newTopic(t)
	s3, bucket, s3Cfg := acmeS3(t)
	cfgPath := writeConfig(t, s3Cfg)
	target := s3.ObjectTarget("acme-s3", bucket, "acme")
	store, err := objectio.NewStore(context.Background(), target.Kind, target.Settings)
	if err != nil {
		t.Fatal(err)
	}
	lease := func() (objectio.LeaseInfo, bool) {
		var info objectio.LeaseInfo
		b, _, err := store.(objectio.Leaser).ReadVersion(context.Background(), "acme/"+objectio.LeaseName)
		return info, err == nil && json.Unmarshal(b, &info) == nil
	}

	first := startConfig(t, tp, cfgPath)
	var held objectio.LeaseInfo
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var ok bool
		if held, ok = lease(); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s the stream holds no lease\n%s", first.stderr.String())
		}
	}
	if !strings.HasPrefix(held.Holder, "stream on ") || !strings.Contains(held.Job, "topic impressions") {
		t.Errorf("the lease says %+v, want the stream and its job", held)
	}
	for deadline := time.Now().Add(objectio.LeaseTTL); ; time.Sleep(time.Second) { // renewed
		if now, _ := lease(); now.Expires.After(held.Expires) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream did not renew its lease within %v", objectio.LeaseTTL)
		}
	}
	if code := first.stop(); code != 0 {
		t.Fatalf("exit %d after SIGINT\n%s", code, first.stderr.String())
	}
	if _, ok := lease(); ok {
		t.Fatal("a stream stopped normally left its lease behind")
	}

	j := startConfig(t, tp, cfgPath)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, ok := lease(); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s the stream holds no lease\n%s", j.stderr.String())
		}
	}
	_, took, err := objectio.Acquire(context.Background(), target,
		objectio.LeaseInfo{Job: "backfill of another input", Run: "breaker", Holder: "backfill on test"}, true)
	if err != nil || took == nil || !strings.HasPrefix(took.Holder, "stream on ") {
		t.Fatalf("--break-lease: %v, took %+v", err, took)
	}
	select {
	case <-j.exited:
	case <-time.After(objectio.LeaseTTL):
		t.Fatalf("the stream still runs %v after its lease was taken\n%s", objectio.LeaseTTL, j.stderr.String())
	}
	if code := j.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(j.stderr.String(), "another run took the lease") {
		t.Errorf("exit %d, want 1 saying the lease was taken\n%s", code, j.stderr.String())
	}
	if now, _ := lease(); now.Run != "breaker" {
		t.Errorf("the stream removed the lease it had lost: %+v", now)
	}
}
