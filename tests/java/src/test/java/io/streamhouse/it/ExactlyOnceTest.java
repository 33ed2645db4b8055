package io.streamhouse.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TransactionDescription;
import org.apache.kafka.clients.admin.TransactionState;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.junit.jupiter.api.Test;

/**
 * Transactions (issue 16): a Kafka Streams word count with processing.guarantee=exactly_once_v2
 * (transactional producers, read_committed consumers, offsets committed in the transaction)
 * stopped and restarted from empty local state, which restores its store from the
 * transactional changelog: the final counts are exact.
 */
class ExactlyOnceTest {
    private static final List<String> WORDS = List.of("alpha", "beta", "gamma", "delta", "eps");

    @Test
    void wordCountIsExactAcrossARestart() throws Exception {
        String input = Server.uniqueTopic("java-eos-input");
        String output = Server.uniqueTopic("java-eos-output");
        String appId = Server.uniqueTopic("java-eos-app");
        try (Admin admin = Admin.create(Server.props())) {
            admin.createTopics(List.of(new NewTopic(input, 2, (short) -1),
                    new NewTopic(output, 2, (short) -1))).all().get();
        }
        Map<String, Long> expected = new HashMap<>();
        Random random = new Random(16);
        produceSentences(input, 300, random, expected);
        KafkaStreams first = start(appId, Files.createTempDirectory("eos-a"), input, output);
        Map<String, Long> half = new HashMap<>(expected);
        CompactionTest.waitFor("the first instance's counts", () -> half.equals(latestCounts(output)), 90);
        // More input while nobody runs: the second instance restores and continues.
        first.close(Duration.ofSeconds(30));
        produceSentences(input, 300, random, expected);
        KafkaStreams second = start(appId, Files.createTempDirectory("eos-b"), input, output);
        try {
            CompactionTest.waitFor("exact counts after the restart", () -> expected.equals(latestCounts(output)), 90);
            Thread.sleep(2000); // a duplicate would show up as a higher count by now
            assertEquals(expected, latestCounts(output));
        } finally {
            second.close(Duration.ofSeconds(30));
        }
    }

    /**
     * The Java producer's transactions as the admin client sees them: an open transaction is
     * listed and described Ongoing with its partition, and its producer's first offset in it
     * is DescribeProducers' current transaction start; once committed it is CompleteCommit and
     * a read_committed consumer reads its records.
     */
    @Test
    void transactionsAreListedAndDescribed() throws Exception {
        String topic = Server.uniqueTopic("java-txn-admin");
        String txnId = Server.uniqueTopic("java-txn");
        TopicPartition tp = new TopicPartition(topic, 0);
        Properties p = Server.props();
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.put("transactional.id", txnId);
        try (Admin admin = Admin.create(Server.props());
                KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) -1))).all().get();
            producer.initTransactions();
            producer.beginTransaction();
            producer.send(new ProducerRecord<>(topic, 0, "k", "v")).get();
            TransactionDescription open = admin.describeTransactions(List.of(txnId))
                    .description(txnId).get();
            assertEquals(TransactionState.ONGOING, open.state());
            assertEquals(java.util.Set.of(tp), open.topicPartitions());
            assertTrue(admin.listTransactions().all().get().stream()
                    .anyMatch(l -> l.transactionalId().equals(txnId)
                            && l.state() == TransactionState.ONGOING));
            var producers = admin.describeProducers(List.of(tp)).partitionResult(tp).get()
                    .activeProducers();
            assertEquals(1, producers.size(), producers::toString);
            assertEquals(java.util.OptionalLong.of(0), producers.get(0).currentTransactionStartOffset());
            producer.commitTransaction();
            CompactionTest.waitFor("the commit completed", () -> {
                try {
                    return admin.describeTransactions(List.of(txnId)).description(txnId).get()
                            .state() == TransactionState.COMPLETE_COMMIT;
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            }, 30);
        }
    }

    private static void produceSentences(String topic, int count, Random random,
            Map<String, Long> counts) {
        try (KafkaProducer<String, String> producer = ClientsTest.producer("none")) {
            for (int i = 0; i < count; i++) {
                StringBuilder sentence = new StringBuilder();
                for (int w = 0; w < 1 + random.nextInt(4); w++) {
                    String word = WORDS.get(random.nextInt(WORDS.size()));
                    sentence.append(word).append(' ');
                    counts.merge(word, 1L, Long::sum);
                }
                producer.send(new ProducerRecord<>(topic, "s" + i, sentence.toString().trim()));
            }
            producer.flush();
        }
    }

    private static KafkaStreams start(String appId, Path stateDir, String input, String output) {
        Properties p = Server.props();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, -1);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
        p.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        p.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .flatMapValues(v -> Arrays.asList(v.split(" ")))
                .groupBy((k, word) -> word)
                .count()
                .toStream()
                .to(output, Produced.with(Serdes.String(), Serdes.Long()));
        KafkaStreams streams = new KafkaStreams(builder.build(), p);
        streams.start();
        return streams;
    }

    /** Each word's newest count in `topic`, read_committed, from the beginning to the end. */
    private static Map<String, Long> latestCounts(String topic) {
        Properties p = Server.props();
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", LongDeserializer.class.getName());
        p.put("isolation.level", "read_committed");
        Map<String, Long> latest = new HashMap<>();
        try (KafkaConsumer<String, Long> consumer = new KafkaConsumer<>(p)) {
            List<TopicPartition> tps = List.of(new TopicPartition(topic, 0),
                    new TopicPartition(topic, 1));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Map<TopicPartition, Long> end = consumer.endOffsets(tps);
            Instant deadline = Instant.now().plusSeconds(20);
            while (tps.stream().anyMatch(tp -> consumer.position(tp) < end.get(tp))
                    && Instant.now().isBefore(deadline)) {
                for (ConsumerRecord<String, Long> r : consumer.poll(Duration.ofMillis(200))) {
                    latest.put(r.key(), r.value());
                }
            }
        }
        return latest;
    }
}
