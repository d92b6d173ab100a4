package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// devBucket is the part of a JetStream KV bucket a device uses: watch its
// own keys, put and delete its own keys. Unlike jetstream.KeyValue it
// never asks for the bucket's stream info, which a device is not allowed:
// with a subjects filter, stream info lists every key of the bucket, that
// is every device and pod of the fleet. It speaks the KV wire format
// ($KV.<bucket>.<key> subjects, the KV-Operation header), so the provider's
// ordinary KV handles see what it writes.
type devBucket struct {
	js     nats.JetStreamContext
	bucket string
}

func newDevBucket(nc *nats.Conn, bucket string) (*devBucket, error) {
	js, err := nc.JetStream()
	if err != nil {
		return nil, fmt.Errorf("opening jetstream: %w", err)
	}
	return &devBucket{js: js, bucket: bucket}, nil
}

func (b *devBucket) subject(key string) string { return "$KV." + b.bucket + "." + key }

// Put writes value at key.
func (b *devBucket) Put(ctx context.Context, key string, value []byte) error {
	_, err := b.js.Publish(b.subject(key), value, nats.Context(ctx))
	return err
}

// Delete deletes key, leaving a delete marker as jetstream.KeyValue does.
func (b *devBucket) Delete(ctx context.Context, key string) error {
	m := nats.NewMsg(b.subject(key))
	m.Header.Set("KV-Operation", "DEL")
	_, err := b.js.PublishMsg(m, nats.Context(ctx))
	return err
}

// Get reads key with a direct get of the last message on its subject, the
// one read a device's permissions allow. A key never written, or purged
// without a marker, is (nil, nil); a deleted one is an entry whose
// Operation says so.
func (b *devBucket) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := b.js.GetLastMsg("KV_"+b.bucket, b.subject(key), nats.DirectGet(), nats.Context(ctx))
	if errors.Is(err, nats.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	return &bucketEntry{bucket: b.bucket, key: key, value: m.Data, revision: m.Sequence, created: m.Time, op: kvOperation(m.Header)}, nil
}

// kvOperation reads the KV-Operation header of an entry.
func kvOperation(h nats.Header) jetstream.KeyValueOp {
	switch h.Get("KV-Operation") {
	case "DEL":
		return jetstream.KeyValueDelete
	case "PURGE":
		return jetstream.KeyValuePurge
	}
	return jetstream.KeyValuePut
}

// bucketWatch delivers the entries of a watch: first the current value of
// every matching key, then nil, then every change. Updates closes when the
// watch breaks.
type bucketWatch struct {
	updates chan jetstream.KeyValueEntry
	sub     *nats.Subscription

	mu       sync.Mutex
	initDone bool
	pending  uint64
	received uint64
}

func (w *bucketWatch) Updates() <-chan jetstream.KeyValueEntry { return w.updates }

// Stop ends the watch.
func (w *bucketWatch) Stop() error { return w.sub.Unsubscribe() }

// Watch watches the keys matching filter ("<device>.>"), with an ordered
// push consumer created on the filtered subject alone (what the device's
// permissions allow).
func (b *devBucket) Watch(ctx context.Context, filter string) (*bucketWatch, error) {
	w := &bucketWatch{updates: make(chan jetstream.KeyValueEntry, 256)}
	prefix := b.subject("")
	update := func(m *nats.Msg) {
		md, err := m.Metadata()
		if err != nil || !strings.HasPrefix(m.Subject, prefix) {
			return
		}
		op := kvOperation(m.Header)
		w.mu.Lock()
		defer w.mu.Unlock()
		w.updates <- &bucketEntry{bucket: b.bucket, key: m.Subject[len(prefix):], value: m.Data,
			revision: md.Sequence.Stream, created: md.Timestamp, delta: md.NumPending, op: op}
		if !w.initDone {
			w.received++
			if w.received >= w.pending || md.NumPending == 0 {
				w.initDone = true
				w.updates <- nil
			}
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	sub, err := b.js.Subscribe(b.subject(filter), update,
		nats.BindStream("KV_"+b.bucket), nats.OrderedConsumer(), nats.DeliverLastPerSubject(), nats.Context(ctx))
	if err != nil {
		return nil, err
	}
	sub.SetClosedHandler(func(string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		close(w.updates)
	})
	if pending, err := sub.InitialConsumerPending(); err == nil {
		if pending == 0 {
			w.initDone = true
			w.updates <- nil
		} else {
			w.pending = pending
		}
	}
	w.sub = sub
	return w, nil
}

// bucketEntry is one entry of a watch.
type bucketEntry struct {
	bucket, key string
	value       []byte
	revision    uint64
	created     time.Time
	delta       uint64
	op          jetstream.KeyValueOp
}

var _ jetstream.KeyValueEntry = (*bucketEntry)(nil)

func (e *bucketEntry) Bucket() string                  { return e.bucket }
func (e *bucketEntry) Key() string                     { return e.key }
func (e *bucketEntry) Value() []byte                   { return e.value }
func (e *bucketEntry) Revision() uint64                { return e.revision }
func (e *bucketEntry) Created() time.Time              { return e.created }
func (e *bucketEntry) Delta() uint64                   { return e.delta }
func (e *bucketEntry) Operation() jetstream.KeyValueOp { return e.op }
