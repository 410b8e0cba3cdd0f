package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/warmpool/warmpool/actors"
)

// writeAttempt bounds one try of a lease write. A try that times out may
// have landed or not: the write is tried again until it gets an answer or
// the caller's ctx ends, and a refusal after such a try is checked against
// what the bucket holds. While the bucket's stream elects a new leader (a
// few seconds after its server dies) writes pause, then go through.
const writeAttempt = 2 * time.Second

// leaseWriteTimeout bounds a lease write whose caller set no deadline,
// retries included: above the few seconds a JetStream leader election
// takes, and still short of any lease's expiry.
const leaseWriteTimeout = 20 * time.Second

// retry runs try (a write, or the read that settles one) until it
// succeeds, is refused for good (a compare-and-set conflict, a bad key, a
// closed connection), or ctx ends.
// unsure reports that an earlier try failed in a way that may have landed.
func retry(ctx context.Context, try func(context.Context) error) (unsure bool, err error) {
	wait := 25 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, writeAttempt)
		err = try(actx)
		cancel()
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return unsure, err
		}
		unsure = true
		select {
		case <-ctx.Done():
			return unsure, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// retryable tells a write that may go through if tried again: a timeout, no
// responder, a connection between servers, or a JetStream without a leader.
func retryable(err error) bool {
	if conflict(err) || errors.Is(err, nats.ErrConnectionClosed) {
		return false
	}
	return jsNotReady(err) || errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrAsyncPublishTimeout)
}

// conflict tells a compare-and-set refusal: the key exists, or is no longer
// at the revision the write named.
func conflict(err error) bool {
	if err == nil {
		return false // the hot path: nothing to unwrap
	}
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || isWrongLastSequence(err)
}

// landed reports whether key's current value in the bucket is val, as the
// leader has it, and its revision: a write whose ack was lost, seen by the
// retry that the bucket refused.
func (l *LeaseKV) landed(ctx context.Context, key string, val []byte) (uint64, bool) {
	cur, err := l.readFromLeader(ctx, key)
	if err != nil || cur.deleted || !bytes.Equal(cur.value, val) {
		return 0, false
	}
	return cur.revision, true
}

// casWrite runs write, a compare-and-set that expects key at revision
// expected (0: absent), until it lands, fails for another reason, or is
// refused for good. After a refusal, settled (which reads the leader's
// copy) says whether an earlier try that may have landed did: then the
// write is done. A refusal is believed only if the leader's copy has moved
// from expected: a leader just elected refuses writes for a moment before
// it has applied its log, and such a write is tried again.
//
// The first try is made under one context: nearly every write lands at
// once. Only a write tried again is bounded as a whole, by ctx's deadline
// or else leaseWriteTimeout.
func (l *LeaseKV) casWrite(ctx context.Context, key string, expected uint64, write func(context.Context) error, settled func(context.Context) bool) (unsure bool, err error) {
	if ctx.Done() == nil {
		// Never cancelled (the pool's writes): casPublish bounds the try
		// by writeAttempt itself, without a context.
		err = write(ctx)
	} else {
		actx, cancel := context.WithTimeout(ctx, writeAttempt)
		err = write(actx)
		cancel()
	}
	if err == nil || !retryable(err) && !conflict(err) {
		return false, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, leaseWriteTimeout)
		defer cancel()
	}
	for {
		if retryable(err) {
			unsure = true
			if !pause(ctx, 25*time.Millisecond) {
				return unsure, err
			}
			var again bool
			again, err = retry(ctx, write)
			unsure = unsure || again
		}
		if err == nil || !conflict(err) {
			return unsure, err
		}
		if unsure && settled(ctx) {
			return unsure, nil
		}
		cur, rerr := l.readFromLeader(ctx, key)
		moved := rerr != nil || cur.deleted != (expected == 0) || expected != 0 && cur.revision != expected
		if moved || !pause(ctx, 50*time.Millisecond) {
			return unsure, err
		}
		var again bool
		again, err = retry(ctx, write)
		unsure = unsure || again
	}
}

// pause waits d, or reports false when ctx ends first.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// gone reports whether key holds no lease, as the leader has it.
func (l *LeaseKV) gone(ctx context.Context, key string) bool {
	cur, err := l.readFromLeader(ctx, key)
	return err == nil && cur.deleted
}

// readFromLeader is leaderRead, tried again while the bucket has no
// leader: the answer decides whether a write landed, so it is worth the
// wait (bounded by ctx).
func (l *LeaseKV) readFromLeader(ctx context.Context, key string) (cur stored, err error) {
	_, err = retry(ctx, func(ctx context.Context) (err error) {
		cur, err = l.leaderRead(ctx, key)
		return err
	})
	return cur, err
}

// stored is a key's last message in a bucket's stream.
type stored struct {
	value    []byte
	revision uint64
	deleted  bool // a delete or purge marker, or no message at all
}

// leaderRead reads key's last message through the stream's leader, unlike
// Get, which any replica may answer from behind: after a refused write, it
// tells whether an earlier try of the same write is what refused it.
func (l *LeaseKV) leaderRead(ctx context.Context, key string) (stored, error) {
	bucket := l.kv.Bucket()
	req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV." + bucket + "." + key})
	ctx, cancel := context.WithTimeout(ctx, writeAttempt)
	defer cancel()
	msg, err := l.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+bucket, req)
	if err != nil {
		return stored{}, fmt.Errorf("reading key %s of bucket %s from its leader: %w", key, bucket, err)
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Seq    uint64 `json:"seq"`
			Data   []byte `json:"data"`
			Header []byte `json:"hdrs"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return stored{}, fmt.Errorf("reading key %s of bucket %s from its leader: %w", key, bucket, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound):
		return stored{deleted: true}, nil
	case resp.Error != nil:
		// As an APIError, so that a leaderless 503 is tried again.
		return stored{}, fmt.Errorf("reading key %s of bucket %s from its leader: %w", key, bucket,
			&jetstream.APIError{Code: resp.Error.Code, ErrorCode: jetstream.ErrorCode(resp.Error.ErrCode), Description: resp.Error.Description})
	case resp.Message == nil:
		return stored{}, fmt.Errorf("reading key %s of bucket %s from its leader: empty reply", key, bucket)
	}
	m := resp.Message
	return stored{value: m.Data, revision: m.Seq, deleted: bytes.Contains(m.Header, []byte(kvOperationHeader))}, nil
}

// unknownIf marks the error of a write given up on while its outcome is
// unknown: a try may have landed. A conflict is an answer, not a doubt.
func unknownIf(unsure bool, err error) error {
	if (unsure || retryable(err)) && !conflict(err) {
		return fmt.Errorf("%w: %w", actors.ErrOutcomeUnknown, err)
	}
	return err
}
