package cluster

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/messages"
)

// Default bucket names of the stores.
const (
	DefaultLeaseBucket    = "warmpool-leases"
	DefaultSnapshotBucket = "warmpool-slots"
)

// maxNameLength bounds node and slot names in snapshot keys; pool names have
// their own bound, messages.MaxPoolNameLength.
const maxNameLength = 128

// Store errors. The stores also wrap actors.ErrLeaseExists and
// actors.ErrRevisionMismatch, and messages.ErrInvalidID for a bad session id.
var (
	// ErrInvalidKey is returned when a pool, node or slot name would not make
	// a valid KV key: empty, too long, or not only [A-Za-z0-9_-]. Nothing is
	// written.
	ErrInvalidKey = errors.New("invalid store key")
	// ErrNewerSchema is wrapped, per key, by the error List returns alongside
	// the records it could read, for a record written with a schema version
	// newer than this build reads. The record is skipped, not misread.
	ErrNewerSchema = errors.New("record has a newer schema version")
	// ErrBadRecord is wrapped, per key, by the error List returns alongside
	// the records it could read, for a record that is not valid JSON or does
	// not match its key. The record is skipped.
	ErrBadRecord = errors.New("unreadable record")
)

// StoreOptions configure the KV buckets. Zero fields take the defaults.
type StoreOptions struct {
	// Replicas of each bucket's stream, 1 to 5. Default 1.
	Replicas int `json:"replicas"`
	// LeaseBucket holds the leases. Default "warmpool-leases".
	LeaseBucket string `json:"lease_bucket"`
	// SnapshotBucket holds the slot snapshots. Default "warmpool-slots".
	SnapshotBucket string `json:"snapshot_bucket"`
}

func (o StoreOptions) withDefaults() StoreOptions {
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.LeaseBucket == "" {
		o.LeaseBucket = DefaultLeaseBucket
	}
	if o.SnapshotBucket == "" {
		o.SnapshotBucket = DefaultSnapshotBucket
	}
	return o
}

func (o StoreOptions) valid() error {
	if o.Replicas < 1 || o.Replicas > 5 {
		return fmt.Errorf("%w: stores.replicas is %d, must be 1 to 5", messages.ErrConfigValidation, o.Replicas)
	}
	// One bucket for both would put snapshot keys under a pool's lease
	// filter <pool>.> and make List misread them.
	if o.LeaseBucket == o.SnapshotBucket {
		return fmt.Errorf("%w: stores.lease_bucket and stores.snapshot_bucket are both %q, they must differ",
			messages.ErrConfigValidation, o.LeaseBucket)
	}
	return nil
}

// OpenStores creates the lease and snapshot buckets, or updates them to o,
// and returns the stores on them. Buckets keep one revision a key (History
// 1: the revision is the fencing token, older values are of no use) on file
// storage. Keys carry no TTL: the pool checks lease expiry, and so does
// recovery.
func OpenStores(ctx context.Context, js jetstream.JetStream, o StoreOptions) (*LeaseKV, *SnapshotKV, error) {
	o = o.withDefaults()
	if err := o.valid(); err != nil {
		return nil, nil, err
	}
	leases, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      o.LeaseBucket,
		Description: "warmpool session leases: <pool>.<base64url(id)>, written by compare-and-set",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("opening the lease bucket %q: %w", o.LeaseBucket, err)
	}
	slots, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      o.SnapshotBucket,
		Description: "warmpool slot snapshots: <pool>.<node>.<slot>",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("opening the snapshot bucket %q: %w", o.SnapshotBucket, err)
	}
	return newLeaseKV(leases, js.Conn()), &SnapshotKV{kv: slots}, nil
}

// LeaseKV is an actors.LeaseStore on a JetStream KV bucket. Every write is
// a compare-and-set on the key's last revision, so the revision a writer
// holds fences it: a writer that lost the lease cannot change it. It is safe
// for concurrent use.
type LeaseKV struct {
	kv jetstream.KeyValue
	nc *nats.Conn // for writes, and reads from the bucket's leader
	// subjectPrefix is "$KV.<bucket>.", stream "KV_<bucket>".
	subjectPrefix, stream string
}

var _ actors.LeaseStore = (*LeaseKV)(nil)

func newLeaseKV(kv jetstream.KeyValue, nc *nats.Conn) *LeaseKV {
	return &LeaseKV{kv: kv, nc: nc, subjectPrefix: "$KV." + kv.Bucket() + ".", stream: "KV_" + kv.Bucket()}
}

// leaseKey is <pool>.<base64url(id)>. Session ids are arbitrary UTF-8, and a
// '.', '*', '>' or space in one would split or break the key; base64url
// without padding uses only [A-Za-z0-9_-], which keys allow.
func leaseKey(pool, id string) (string, error) {
	if err := messages.ValidatePoolName(pool); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	if err := messages.ValidateID(id); err != nil {
		return "", err
	}
	// One allocation for the key (and the id's bytes, on the stack when short).
	b := make([]byte, 0, len(pool)+1+base64.RawURLEncoding.EncodedLen(len(id)))
	b = append(append(b, pool...), '.')
	return string(base64.RawURLEncoding.AppendEncode(b, []byte(id))), nil
}

// Create implements actors.LeaseStore: it writes r only if its id holds no
// lease, and returns the new revision.
func (l *LeaseKV) Create(ctx context.Context, r actors.LeaseRecord) (uint64, error) {
	key, val, err := encodeLease(r)
	if err != nil {
		return 0, err
	}
	var rev uint64
	unsure, err := l.casWrite(ctx, key, 0, func(ctx context.Context) (err error) {
		if rev, err = l.casPut(ctx, key, val, 0); conflict(err) {
			// The key may hold a delete marker: the KV API writes at its
			// revision. It is bounded as one try is.
			if ctx.Done() == nil {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, writeAttempt)
				defer cancel()
			}
			rev, err = l.kv.Create(ctx, key, val)
		}
		return err
	}, func(ctx context.Context) bool {
		// An earlier try that timed out may be what holds the key.
		landed, ok := l.landed(ctx, key, val)
		rev = landed
		return ok
	})
	if err == nil {
		return rev, nil
	}
	// On a replicated bucket a Create that lost the race to re-create a
	// deleted key reports the bare wrong-last-sequence code.
	if conflict(err) {
		return 0, fmt.Errorf("%w: pool %s id %q (key %s in bucket %s): %w",
			actors.ErrLeaseExists, r.Pool, r.ID, key, l.kv.Bucket(), err)
	}
	return 0, fmt.Errorf("creating lease key %s in bucket %s: %w", key, l.kv.Bucket(), unknownIf(unsure, err))
}

// Update implements actors.LeaseStore: it rewrites r only if its key is
// still at revision, and returns the new revision.
func (l *LeaseKV) Update(ctx context.Context, r actors.LeaseRecord, revision uint64) (uint64, error) {
	key, val, err := encodeLease(r)
	if err != nil {
		return 0, err
	}
	// Revision 0 means "no such key" to JetStream: Update would create the
	// lease. No writer holds a lease at revision 0.
	if revision == 0 {
		return 0, fmt.Errorf("%w: updating key %s in bucket %s at revision 0, which no lease has",
			actors.ErrRevisionMismatch, key, l.kv.Bucket())
	}
	var rev uint64
	unsure, err := l.casWrite(ctx, key, revision, func(ctx context.Context) (err error) {
		rev, err = l.casPut(ctx, key, val, revision)
		return err
	}, func(ctx context.Context) bool {
		landed, ok := l.landed(ctx, key, val)
		rev = landed
		return ok
	})
	if err != nil {
		return 0, l.writeErr("updating", key, revision, unknownIf(unsure, err))
	}
	return rev, nil
}

// Delete implements actors.LeaseStore: it deletes the lease only if its key
// is still at revision.
func (l *LeaseKV) Delete(ctx context.Context, pool, id string, revision uint64) error {
	key, err := leaseKey(pool, id)
	if err != nil {
		return err
	}
	// LastRevision(0) is no condition at all: the delete would go through
	// whoever holds the lease.
	if revision == 0 {
		return fmt.Errorf("%w: deleting key %s in bucket %s at revision 0, which no lease has",
			actors.ErrRevisionMismatch, key, l.kv.Bucket())
	}
	unsure, err := l.casWrite(ctx, key, revision, func(ctx context.Context) error {
		return l.casDelete(ctx, key, revision)
	}, func(ctx context.Context) bool {
		// The delete marker an earlier try wrote moved the revision.
		return l.gone(ctx, key)
	})
	if err != nil {
		return l.writeErr("deleting", key, revision, unknownIf(unsure, err))
	}
	return nil
}

func (l *LeaseKV) writeErr(op, key string, revision uint64, err error) error {
	if conflict(err) {
		return fmt.Errorf("%w: %s key %s in bucket %s at revision %d: %w",
			actors.ErrRevisionMismatch, op, key, l.kv.Bucket(), revision, err)
	}
	return fmt.Errorf("%s key %s in bucket %s at revision %d: %w", op, key, l.kv.Bucket(), revision, err)
}

// Get reads the lease of id in pool; ok is false when there is none. A read
// may be answered by a stale replica: use it to route, never to decide who
// holds a lease (only a compare-and-set write decides that).
func (l *LeaseKV) Get(ctx context.Context, pool, id string) (lease actors.StoredLease, ok bool, err error) {
	key, err := leaseKey(pool, id)
	if err != nil {
		return lease, false, err
	}
	e, err := l.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return lease, false, nil
	}
	if err != nil {
		return lease, false, fmt.Errorf("reading lease key %s in bucket %s: %w", key, l.kv.Bucket(), err)
	}
	r, err := decodeLease(pool, l.kv.Bucket(), key, e.Value())
	if err != nil {
		return lease, false, err
	}
	return actors.StoredLease{Record: r, Revision: e.Revision()}, true, nil
}

// Lookup is Get, except that a miss is checked with the bucket's leader: a
// replica behind it misses a lease just written, and a request that
// missed it would be told the session has none.
func (l *LeaseKV) Lookup(ctx context.Context, pool, id string) (lease actors.StoredLease, ok bool, err error) {
	if lease, ok, err = l.Get(ctx, pool, id); ok || err != nil {
		return lease, ok, err
	}
	key, _ := leaseKey(pool, id) // Get checked it
	cur, err := l.leaderRead(ctx, key)
	if err != nil || cur.deleted {
		return lease, false, err
	}
	r, err := decodeLease(pool, l.kv.Bucket(), key, cur.value)
	if err != nil {
		return lease, false, err
	}
	return actors.StoredLease{Record: r, Revision: cur.revision}, true, nil
}

// List implements actors.LeaseStore: the current leases of pool, sorted by
// id. A record it cannot read (ErrNewerSchema, ErrBadRecord) is left out and
// named in the returned error, which then comes with the leases it could
// read; any other error comes with no leases.
func (l *LeaseKV) List(ctx context.Context, pool string) ([]actors.StoredLease, error) {
	if err := messages.ValidatePoolName(pool); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	entries, err := currentValues(ctx, l.kv, pool+".>")
	if err != nil {
		return nil, err
	}
	var out []actors.StoredLease
	var skipped []error
	for _, e := range entries {
		r, err := decodeLease(pool, e.Bucket(), e.Key(), e.Value())
		if err != nil {
			skipped = append(skipped, err)
			continue
		}
		out = append(out, actors.StoredLease{Record: r, Revision: e.Revision()})
	}
	slices.SortFunc(out, func(a, b actors.StoredLease) int {
		return cmp.Or(strings.Compare(a.Record.Pool, b.Record.Pool), strings.Compare(a.Record.ID, b.Record.ID))
	})
	return out, errors.Join(skipped...)
}

func encodeLease(r actors.LeaseRecord) (key string, val []byte, err error) {
	if key, err = leaseKey(r.Pool, r.ID); err != nil {
		return "", nil, err
	}
	if r.Version == 0 {
		r.Version = actors.LeaseSchema
	}
	for _, t := range []time.Time{r.CreatedAt, r.ExpiresAt} {
		if y := t.Year(); y < 0 || y > 9999 {
			return "", nil, fmt.Errorf("encoding the lease of key %s: time %s is outside years 0 to 9999", key, t)
		}
	}
	return key, r.AppendJSON(make([]byte, 0, 384)), nil
}

func decodeLease(pool, bucket, key string, val []byte) (actors.LeaseRecord, error) {
	var r actors.LeaseRecord
	if err := json.Unmarshal(val, &r); err != nil {
		return r, fmt.Errorf("%w: key %s in bucket %s: %w", ErrBadRecord, key, bucket, err)
	}
	if r.Version > actors.LeaseSchema {
		return r, fmt.Errorf("%w: key %s in bucket %s has lease schema %d, this build reads up to %d",
			ErrNewerSchema, key, bucket, r.Version, actors.LeaseSchema)
	}
	// The key, not the value, is what Create and Update fenced: a value
	// that names another lease is not to be trusted.
	enc, _ := strings.CutPrefix(key, pool+".")
	id, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || r.Pool != pool || r.ID != string(id) {
		return r, fmt.Errorf("%w: key %s in bucket %s holds the lease of pool %s id %q",
			ErrBadRecord, key, bucket, r.Pool, r.ID)
	}
	return r, nil
}

// isWrongLastSequence tells a compare-and-set conflict in the form the API
// reports it (10071, or 10164 on replicated streams), for the paths where
// nats.go does not map it to ErrKeyExists or ErrKeyRevisionMismatch.
func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// SnapshotKV is an actors.SnapshotStore on a JetStream KV bucket: the latest
// snapshot of each slot under <pool>.<node>.<slot>. Writes are plain puts:
// a slot has one writer, its node. It is safe for concurrent use.
type SnapshotKV struct {
	kv jetstream.KeyValue
}

var _ actors.SnapshotStore = (*SnapshotKV)(nil)

// validName checks a node or slot name, a key token of its own.
func validName(kind, s string) error {
	if s == "" || len(s) > maxNameLength {
		return fmt.Errorf("%w: %s name %q must be 1 to %d characters of [A-Za-z0-9_-]", ErrInvalidKey, kind, s, maxNameLength)
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("%w: %s name %q must be 1 to %d characters of [A-Za-z0-9_-]", ErrInvalidKey, kind, s, maxNameLength)
		}
	}
	return nil
}

func snapshotPrefix(pool, node string) (string, error) {
	if err := messages.ValidatePoolName(pool); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	if err := validName("node", node); err != nil {
		return "", err
	}
	return pool + "." + node + ".", nil
}

// Put implements actors.SnapshotStore. A snapshot in state "gone" deletes
// the slot's key: the slot is forgotten, and recovery has nothing to adopt.
func (s *SnapshotKV) Put(ctx context.Context, snap actors.SlotSnapshot) error {
	prefix, err := snapshotPrefix(snap.Pool, snap.Node)
	if err != nil {
		return err
	}
	if err := validName("slot", snap.Slot); err != nil {
		return err
	}
	key := prefix + snap.Slot
	if snap.State == actors.Gone.String() {
		if err := s.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("deleting snapshot key %s in bucket %s: %w", key, s.kv.Bucket(), err)
		}
		return nil
	}
	if snap.Version == 0 {
		snap.Version = actors.SnapshotSchema
	}
	val, err := json.Marshal(snap)
	if err != nil {
		return fmt.Errorf("encoding the snapshot of key %s: %w", key, err)
	}
	if _, err := s.kv.Put(ctx, key, val); err != nil {
		return fmt.Errorf("writing snapshot key %s in bucket %s: %w", key, s.kv.Bucket(), err)
	}
	return nil
}

// List implements actors.SnapshotStore: the snapshots of node's slots in
// pool, sorted by slot. A record it cannot read (ErrNewerSchema,
// ErrBadRecord) is left out and named in the returned error, which then
// comes with the snapshots it could read; any other error comes with none.
func (s *SnapshotKV) List(ctx context.Context, pool, node string) ([]actors.SlotSnapshot, error) {
	prefix, err := snapshotPrefix(pool, node)
	if err != nil {
		return nil, err
	}
	entries, err := currentValues(ctx, s.kv, prefix+">")
	if err != nil {
		return nil, err
	}
	var out []actors.SlotSnapshot
	var skipped []error
	for _, e := range entries {
		var snap actors.SlotSnapshot
		key := e.Key()
		switch err := json.Unmarshal(e.Value(), &snap); {
		case err != nil:
			skipped = append(skipped, fmt.Errorf("%w: key %s in bucket %s: %w", ErrBadRecord, key, e.Bucket(), err))
		case snap.Version > actors.SnapshotSchema:
			skipped = append(skipped, fmt.Errorf("%w: key %s in bucket %s has snapshot schema %d, this build reads up to %d",
				ErrNewerSchema, key, e.Bucket(), snap.Version, actors.SnapshotSchema))
		case key != prefix+snap.Slot || snap.Pool != pool || snap.Node != node:
			skipped = append(skipped, fmt.Errorf("%w: key %s in bucket %s holds the snapshot of pool %s node %s slot %s",
				ErrBadRecord, key, e.Bucket(), snap.Pool, snap.Node, snap.Slot))
		default:
			out = append(out, snap)
		}
	}
	slices.SortFunc(out, func(a, b actors.SlotSnapshot) int { return strings.Compare(a.Slot, b.Slot) })
	return out, errors.Join(skipped...)
}

// currentValues reads the current, undeleted values of the keys matching
// filter. It runs one watch: an ordered consumer delivering the last message
// of each key, values included, in one pass. Listing keys and then getting
// each would cost a round trip a key, and a Get may be answered by a stale
// replica. The watch sends a nil entry once the initial values are all in
// (at once when there are none), which is where the read stops.
func currentValues(ctx context.Context, kv jetstream.KeyValue, filter string) ([]jetstream.KeyValueEntry, error) {
	w, err := kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("listing %s in bucket %s: %w", filter, kv.Bucket(), err)
	}
	defer func() {
		_ = w.Stop()
		// The watcher's callback blocks while its channel is full; drain it
		// so that a burst of updates after Stop cannot strand it. The
		// channel closes once the subscription has wound down.
		go func() {
			for range w.Updates() {
			}
		}()
	}()
	var out []jetstream.KeyValueEntry
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("listing %s in bucket %s: the watch ended early", filter, kv.Bucket())
			}
			if e == nil {
				return out, nil
			}
			out = append(out, e)
		case <-ctx.Done():
			return nil, fmt.Errorf("listing %s in bucket %s: %w", filter, kv.Bucket(), ctx.Err())
		}
	}
}

// purgeInterval and purgeAge: how often the node removes delete markers, and
// how old they must be. Every ended lease and gone slot leaves a marker; old
// ones serve no compare-and-set (a Create after a purge works the same) and
// only grow the buckets.
const (
	purgeInterval = time.Hour
	purgeAge      = 30 * time.Minute
)

// purgeDeleted removes delete markers older than purgeAge from both buckets.
func purgeDeleted(ctx context.Context, leases *LeaseKV, slots *SnapshotKV) error {
	opt := jetstream.DeleteMarkersOlderThan(purgeAge)
	if err := leases.kv.PurgeDeletes(ctx, opt); err != nil {
		return fmt.Errorf("purging lease delete markers: %w", err)
	}
	if err := slots.kv.PurgeDeletes(ctx, opt); err != nil {
		return fmt.Errorf("purging snapshot delete markers: %w", err)
	}
	return nil
}
