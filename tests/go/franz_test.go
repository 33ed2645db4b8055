package streamhouse_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func franzClient(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(bootstrap)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func franzAdmin(t *testing.T) *kadm.Client {
	return kadm.NewClient(franzClient(t))
}

func franzCreate(t *testing.T, ctx context.Context, adm *kadm.Client, topic string, partitions int32, configs map[string]*string) {
	t.Helper()
	r, err := adm.CreateTopic(ctx, partitions, -1, configs, topic)
	if err == nil {
		err = r.Err
	}
	if err != nil {
		t.Fatalf("create %s: %v (%s)", topic, err, r.ErrMessage)
	}
}

// Every codec the protocol has, through franz-go's idempotent producer (its default) and back.
func TestFranzProduceConsumeEveryCodec(t *testing.T) {
	ctx := testContext(t)
	adm := franzAdmin(t)
	codecs := map[string]kgo.CompressionCodec{
		"none": kgo.NoCompression(), "gzip": kgo.GzipCompression(), "snappy": kgo.SnappyCompression(),
		"lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression(),
	}
	for name, codec := range codecs {
		t.Run(name, func(t *testing.T) {
			topic := uniqueTopic("franz-" + name)
			franzCreate(t, ctx, adm, topic, 1, nil)
			producer := franzClient(t, kgo.ProducerBatchCompression(codec), kgo.DefaultProduceTopic(topic))
			const n = 500
			var records []*kgo.Record
			for i := 0; i < n; i++ {
				value := strings.Repeat(fmt.Sprintf("value-%d ", i), 20)
				records = append(records, &kgo.Record{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(value)})
			}
			if err := producer.ProduceSync(ctx, records...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			consumer := franzClient(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			var got []*kgo.Record
			for len(got) < n {
				fetches := consumer.PollFetches(ctx)
				if err := fetches.Err(); err != nil {
					t.Fatalf("after %d records: %v", len(got), err)
				}
				got = append(got, fetches.Records()...)
			}
			if len(got) != n {
				t.Fatalf("consumed %d records, produced %d", len(got), n)
			}
			for i, r := range got {
				if r.Offset != int64(i) || string(r.Key) != fmt.Sprintf("k%d", i) || string(r.Value) != string(records[i].Value) {
					t.Fatalf("record %d: offset %d key %q", i, r.Offset, r.Key)
				}
			}
		})
	}
}

// Two members of one group (cooperative-sticky, franz-go's default) share three partitions;
// every record is consumed once and the committed offsets reach the end.
func TestFranzConsumerGroup(t *testing.T) {
	ctx := testContext(t)
	adm := franzAdmin(t)
	topic, group := uniqueTopic("franz-group"), uniqueTopic("franz-g")
	franzCreate(t, ctx, adm, topic, 3, nil)
	producer := franzClient(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	const n = 90
	for i := 0; i < n; i++ {
		if err := producer.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[string]int{}
	consume := func(cl *kgo.Client, stop <-chan struct{}) error {
		for {
			select {
			case <-stop:
				return nil
			default:
			}
			pollCtx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			fetches := cl.PollFetches(pollCtx)
			cancel()
			for _, e := range fetches.Errors() {
				if !errors.Is(e.Err, context.DeadlineExceeded) {
					return e.Err
				}
			}
			mu.Lock()
			for _, r := range fetches.Records() {
				seen[string(r.Value)]++
			}
			mu.Unlock()
			if err := cl.CommitUncommittedOffsets(ctx); err != nil {
				return err
			}
		}
	}
	members := []*kgo.Client{
		franzClient(t, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit()),
		franzClient(t, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit()),
	}
	stop := make(chan struct{})
	errs := make(chan error, len(members))
	for _, m := range members {
		go func(m *kgo.Client) { errs <- consume(m, stop) }(m)
	}
	deadline := time.Now().Add(60 * time.Second)
	var described kadm.DescribedGroup
	for {
		mu.Lock()
		done := len(seen) == n
		mu.Unlock()
		if done {
			groups, err := adm.DescribeGroups(ctx, group)
			if err != nil {
				t.Fatal(err)
			}
			described = groups[group]
			if described.State == "Stable" && len(described.Members) == 2 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumed %d of %d distinct records; group %+v", len(seen), n, described)
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	for range members {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for v, count := range seen {
		if count != 1 {
			t.Errorf("record %s consumed %d times", v, count)
		}
	}
	if described.Protocol != "cooperative-sticky" {
		t.Errorf("group protocol %q", described.Protocol)
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	committed.Each(func(o kadm.OffsetResponse) { total += o.At })
	if total != n {
		t.Fatalf("committed offsets add up to %d, want %d", total, n)
	}
}

// Topics, configs (incremental), offsets (start, end, max timestamp, after a time), records
// deletion, log dirs and the cluster, through kadm.
func TestFranzAdmin(t *testing.T) {
	ctx := testContext(t)
	adm := franzAdmin(t)
	topic := uniqueTopic("franz-admin")
	hour := "3600000"
	franzCreate(t, ctx, adm, topic, 2, map[string]*string{"retention.ms": &hour})

	source := func(key string) (string, kmsg.ConfigSource) {
		t.Helper()
		rcs, err := adm.DescribeTopicConfigs(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := rcs.On(topic, nil)
		if err != nil || rc.Err != nil {
			t.Fatal(err, rc.Err)
		}
		for _, c := range rc.Configs {
			if c.Key == key {
				return c.MaybeValue(), c.Source
			}
		}
		t.Fatalf("%s not described", key)
		return "", 0
	}
	if v, s := source("retention.ms"); v != hour || s != kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("retention.ms = %s from %v", v, s)
	}
	if _, s := source("segment.ms"); s != kmsg.ConfigSourceDefaultConfig {
		t.Fatalf("segment.ms from %v", s)
	}
	minute := "60000"
	alter := []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "segment.ms", Value: &minute},
		{Op: kadm.DeleteConfig, Name: "retention.ms"},
	}
	responses, err := adm.AlterTopicConfigs(ctx, alter, topic)
	if err != nil || responses[0].Err != nil {
		t.Fatalf("alter: %v %v", err, responses)
	}
	if v, s := source("segment.ms"); v != minute || s != kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("segment.ms = %s from %v", v, s)
	}
	if v, s := source("retention.ms"); v != "604800000" || s != kmsg.ConfigSourceDefaultConfig {
		t.Fatalf("retention.ms = %s from %v", v, s)
	}
	forever := "compact,forever"
	responses, err = adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "cleanup.policy", Value: &forever}}, topic)
	if err != nil || !errors.Is(responses[0].Err, kerr.InvalidConfig) {
		t.Fatalf("cleanup.policy=compact,forever: %v %+v", err, responses)
	}

	// Timestamps 1000..1009 then 5000 then 2000: the largest is at offset 10.
	producer := franzClient(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var records []*kgo.Record
	for i, ts := range []int64{1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 5000, 2000} {
		records = append(records, &kgo.Record{Partition: 0, Value: []byte(fmt.Sprint(i)), Timestamp: time.UnixMilli(ts)})
	}
	if err := producer.ProduceSync(ctx, records...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	expect := func(what string, listed kadm.ListedOffsets, err error, want int64) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		o, ok := listed.Lookup(topic, 0)
		if !ok || o.Err != nil || o.Offset != want {
			t.Fatalf("%s: %+v, want offset %d", what, o, want)
		}
	}
	end, err := adm.ListEndOffsets(ctx, topic)
	expect("end", end, err, 12)
	maxTs, err := adm.ListMaxTimestampOffsets(ctx, topic)
	expect("max timestamp", maxTs, err, 10)
	after, err := adm.ListOffsetsAfterMilli(ctx, 1500, topic)
	expect("after 1500 ms", after, err, 10)

	deletion := kadm.Offsets{}
	deletion.Add(kadm.Offset{Topic: topic, Partition: 0, At: 4})
	deleted, err := adm.DeleteRecords(ctx, deletion)
	if err != nil || deleted.Error() != nil {
		t.Fatalf("delete records: %v %v", err, deleted.Error())
	}
	start, err := adm.ListStartOffsets(ctx, topic)
	expect("start after delete", start, err, 4)

	dirs, err := adm.DescribeAllLogDirs(ctx, kadm.TopicsSet{topic: {0: {}, 1: {}}})
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	dirs.Each(func(d kadm.DescribedLogDir) {
		d.Topics.Each(func(p kadm.DescribedLogDirPartition) { size += p.Size })
	})
	if size <= 0 {
		t.Fatalf("log dirs report %d bytes for %s", size, topic)
	}
	meta, err := adm.BrokerMetadata(ctx)
	if err != nil || len(meta.Brokers) != 1 || meta.Controller != meta.Brokers[0].NodeID {
		t.Fatalf("brokers: %v %+v", err, meta)
	}

	if _, err := adm.DeleteTopic(ctx, topic); err != nil {
		t.Fatal(err)
	}
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if topics.Has(topic) {
		t.Fatalf("%s still listed after deletion", topic)
	}
}
