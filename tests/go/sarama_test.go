package streamhouse_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

func saramaConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V4_0_0_0
	c.ClientID = "streamhouse-go-suite"
	c.Producer.Return.Successes = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Metadata.Retry.Backoff = 100 * time.Millisecond
	return c
}

func saramaAdmin(t *testing.T) sarama.ClusterAdmin {
	t.Helper()
	adm, err := sarama.NewClusterAdmin([]string{bootstrap}, saramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { adm.Close() })
	return adm
}

func saramaCreate(t *testing.T, adm sarama.ClusterAdmin, topic string, partitions int32) {
	t.Helper()
	if err := adm.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false); err != nil {
		t.Fatalf("create %s: %v", topic, err)
	}
}

// Every codec through sarama's idempotent producer, read back with a partition consumer.
func TestSaramaProduceConsumeEveryCodec(t *testing.T) {
	adm := saramaAdmin(t)
	codecs := map[string]sarama.CompressionCodec{
		"none": sarama.CompressionNone, "gzip": sarama.CompressionGZIP, "snappy": sarama.CompressionSnappy,
		"lz4": sarama.CompressionLZ4, "zstd": sarama.CompressionZSTD,
	}
	for name, codec := range codecs {
		t.Run(name, func(t *testing.T) {
			topic := uniqueTopic("sarama-" + name)
			saramaCreate(t, adm, topic, 1)
			config := saramaConfig()
			config.Producer.Compression = codec
			config.Producer.Idempotent = true
			config.Net.MaxOpenRequests = 1
			producer, err := sarama.NewSyncProducer([]string{bootstrap}, config)
			if err != nil {
				t.Fatal(err)
			}
			defer producer.Close()
			const n = 200
			var messages []*sarama.ProducerMessage
			for i := 0; i < n; i++ {
				messages = append(messages, &sarama.ProducerMessage{
					Topic: topic, Key: sarama.StringEncoder(fmt.Sprintf("k%d", i)),
					Value: sarama.StringEncoder(fmt.Sprintf("value %d %s", i, name)),
				})
			}
			if err := producer.SendMessages(messages); err != nil {
				t.Fatal(err)
			}
			consumer, err := sarama.NewConsumer([]string{bootstrap}, saramaConfig())
			if err != nil {
				t.Fatal(err)
			}
			defer consumer.Close()
			pc, err := consumer.ConsumePartition(topic, 0, sarama.OffsetOldest)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			timeout := time.After(60 * time.Second)
			for i := 0; i < n; i++ {
				select {
				case m := <-pc.Messages():
					if m.Offset != int64(i) || string(m.Key) != fmt.Sprintf("k%d", i) || string(m.Value) != fmt.Sprintf("value %d %s", i, name) {
						t.Fatalf("message %d: offset %d key %q value %q", i, m.Offset, m.Key, m.Value)
					}
				case err := <-pc.Errors():
					t.Fatal(err)
				case <-timeout:
					t.Fatalf("only %d of %d messages within 60 s", i, n)
				}
			}
		})
	}
}

type groupHandler struct {
	mu   sync.Mutex
	seen map[string]int
}

func (h *groupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *groupHandler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		h.mu.Lock()
		h.seen[string(m.Value)]++
		h.mu.Unlock()
		s.MarkMessage(m, "")
	}
	return nil
}

func (h *groupHandler) distinct() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.seen)
}

// A sarama consumer group (sticky strategy) consumes every record once and commits the end.
func TestSaramaConsumerGroup(t *testing.T) {
	adm := saramaAdmin(t)
	topic, group := uniqueTopic("sarama-group"), uniqueTopic("sarama-g")
	saramaCreate(t, adm, topic, 2)
	config := saramaConfig()
	config.Producer.Partitioner = sarama.NewRoundRobinPartitioner
	producer, err := sarama.NewSyncProducer([]string{bootstrap}, config)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	const n = 40
	for i := 0; i < n; i++ {
		if _, _, err := producer.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	gc := saramaConfig()
	gc.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategySticky()}
	gc.Consumer.Offsets.AutoCommit.Interval = 100 * time.Millisecond
	cg, err := sarama.NewConsumerGroup([]string{bootstrap}, group, gc)
	if err != nil {
		t.Fatal(err)
	}
	h := &groupHandler{seen: map[string]int{}}
	ctx, cancel := context.WithCancel(testContext(t))
	done := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if err := cg.Consume(ctx, []string{topic}, h); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) {
				done <- err
				return
			}
		}
		done <- nil
	}()
	deadline := time.Now().Add(60 * time.Second)
	for h.distinct() < n && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	// Let the auto-commit interval pass before closing (closing commits too).
	time.Sleep(300 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := cg.Close(); err != nil {
		t.Fatal(err)
	}
	if got := h.distinct(); got != n {
		t.Fatalf("consumed %d of %d distinct records", got, n)
	}
	for v, c := range h.seen {
		if c != 1 {
			t.Errorf("record %s consumed %d times", v, c)
		}
	}
	offsets, err := adm.ListConsumerGroupOffsets(group, map[string][]int32{topic: {0, 1}})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, b := range offsets.Blocks[topic] {
		total += b.Offset
	}
	if total != n {
		t.Fatalf("committed offsets add up to %d, want %d", total, n)
	}
}

// Topic creation and deletion, incremental and legacy config changes, offsets by time and the
// cluster description, through sarama's ClusterAdmin and client.
func TestSaramaAdmin(t *testing.T) {
	adm := saramaAdmin(t)
	topic := uniqueTopic("sarama-admin")
	saramaCreate(t, adm, topic, 1)
	minute := "60000"
	err := adm.IncrementalAlterConfig(sarama.TopicResource, topic, map[string]sarama.IncrementalAlterConfigsEntry{
		"segment.ms": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &minute},
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	entry := func(name string) sarama.ConfigEntry {
		t.Helper()
		entries, err := adm.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name == name {
				return e
			}
		}
		t.Fatalf("%s not described", name)
		return sarama.ConfigEntry{}
	}
	if e := entry("segment.ms"); e.Value != minute || e.Source != sarama.SourceTopic {
		t.Fatalf("segment.ms: %+v", e)
	}
	// The legacy API replaces the topic's settings: segment.ms returns to its default.
	day := "86400000"
	if err := adm.AlterConfig(sarama.TopicResource, topic, map[string]*string{"retention.ms": &day}, false); err != nil {
		t.Fatal(err)
	}
	if e := entry("retention.ms"); e.Value != day || e.Source != sarama.SourceTopic {
		t.Fatalf("retention.ms: %+v", e)
	}
	if e := entry("segment.ms"); e.Value != "600000" || e.Source != sarama.SourceDefault {
		t.Fatalf("segment.ms: %+v", e)
	}
	bad := "-5"
	err = adm.IncrementalAlterConfig(sarama.TopicResource, topic, map[string]sarama.IncrementalAlterConfigsEntry{
		"retention.ms": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &bad},
	}, false)
	if !errors.Is(err, sarama.ErrInvalidConfig) {
		t.Fatalf("retention.ms=-5: %v", err)
	}

	client, err := sarama.NewClient([]string{bootstrap}, saramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	producer, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	for i, ts := range []int64{1000, 3000, 2000} {
		_, _, err := producer.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(fmt.Sprint(i)), Timestamp: time.UnixMilli(ts)})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		at   int64
		want int64
	}{{sarama.OffsetOldest, 0}, {sarama.OffsetNewest, 3}, {1500, 1}, {2500, 1}, {9999, -1}} {
		got, err := client.GetOffset(topic, 0, c.at)
		if err != nil || got != c.want {
			t.Fatalf("offset at %d: %d %v, want %d", c.at, got, err, c.want)
		}
	}
	brokers, controller, err := adm.DescribeCluster()
	if err != nil || len(brokers) != 1 || controller != brokers[0].ID() {
		t.Fatalf("cluster: %v %d %v", brokers, controller, err)
	}
	if err := adm.DeleteTopic(topic); err != nil {
		t.Fatal(err)
	}
	topics, err := adm.ListTopics()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := topics[topic]; ok {
		t.Fatalf("%s still listed after deletion", topic)
	}
}
