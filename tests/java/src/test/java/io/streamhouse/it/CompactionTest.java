package io.streamhouse.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.nio.file.StandardOpenOption;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.connect.cli.ConnectDistributed;
import org.apache.kafka.connect.runtime.Connect;
import org.apache.kafka.connect.runtime.Herder;
import org.apache.kafka.connect.runtime.distributed.DistributedHerder;
import org.apache.kafka.connect.runtime.rest.entities.ConnectorInfo;
import org.apache.kafka.connect.util.FutureCallback;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyKeyValueStore;
import org.junit.jupiter.api.Test;

/**
 * Kafka Streams and Kafka Connect against compacted topics (issue 15): a KTable's changelog
 * topic, created by Streams with cleanup.policy=compact, is compacted by the agent (offsets with
 * gaps), and a new instance with empty local state restores the table from it exactly; a Connect
 * worker in distributed mode restarts from its compacted config and offset topics.
 */
class CompactionTest {
    private static final String STORE = "latest";

    @Test
    void kTableRestoresFromItsCompactedChangelog() throws Exception {
        String input = Server.uniqueTopic("java-table-input");
        String appId = Server.uniqueTopic("java-table-app");
        try (Admin admin = Admin.create(Server.props())) {
            admin.createTopics(List.of(new NewTopic(input, 1, (short) -1))).all().get();
        }
        Map<String, String> expected = produceUpdates(input, 20_000, 300);

        KafkaStreams first = start(appId, Files.createTempDirectory("streams-a"), input);
        waitFor("the first instance's table", () -> table(first).equals(expected), 60);
        first.close(Duration.ofSeconds(30));

        String changelog = appId + "-" + STORE + "-changelog";
        String[] seen = {"nothing read"};
        waitFor("the changelog compacted to one record per key", () -> {
            List<ConsumerRecord<String, String>> log = readChangelog(changelog);
            Set<String> keys = new HashSet<>();
            log.forEach(r -> keys.add(r.key()));
            long span = log.get(log.size() - 1).offset() - log.get(0).offset() + 1;
            seen[0] = log.size() + " records of " + keys.size() + " keys over " + span + " offsets";
            // The log's last record is never compacted away, so it may repeat a key.
            return log.size() <= keys.size() + 1 && span > log.size();
        }, 90, () -> seen[0]);

        KafkaStreams second = start(appId, Files.createTempDirectory("streams-b"), input);
        try {
            waitFor("the table restored from the compacted changelog",
                    () -> table(second).equals(expected), 60);
        } finally {
            second.close(Duration.ofSeconds(30));
        }
    }

    /**
     * A Connect worker in distributed mode keeps its connector configs, source offsets and
     * statuses in topics it creates compacted (and checks they are). After those topics were
     * compacted, a new worker restores the connector from them and resumes the source where
     * the offsets say: every line of the file reaches the topic exactly once.
     */
    @Test
    void connectDistributedResumesFromItsCompactedTopics() throws Exception {
        String prefix = Server.uniqueTopic("java-connect");
        String topic = prefix + "-lines";
        Path file = Files.createTempFile("connect-source", ".txt");
        ClientsTest.createTopic(topic, 1);
        Map<String, String> worker = workerProps(prefix);
        Connect<DistributedHerder> first = new ConnectDistributed().startConnect(worker);
        int lines = 0;
        try {
            for (int round = 0; round < 5; round++) {
                // Each round rewrites the connector's config and moves its source offset: the
                // config and offset topics get superseded records for compaction to remove.
                putConnector(first, prefix, file, topic, 100 + round);
                lines = appendLines(file, lines, 40);
                int want = lines;
                waitFor("round " + round + " in the topic", () -> readValues(topic).size() == want, 60);
                // Connect's delivery is at least once: a reconfiguration restarts the task from
                // the last committed source offset, so the next round waits for this round's
                // offset to be committed (every 200 ms) before it reconfigures.
                long size = Files.size(file);
                waitFor("round " + round + "'s source offset committed",
                        () -> committedPosition(prefix + "-offsets", prefix) == size, 30);
            }
            for (String internal : List.of(prefix + "-configs", prefix + "-offsets")) {
                waitFor(internal + " compacted", () -> hasGaps(internal), 90);
            }
        } finally {
            first.stop();
        }
        Connect<DistributedHerder> second = new ConnectDistributed().startConnect(worker);
        try {
            lines = appendLines(file, lines, 40);
            int want = lines;
            waitFor("the new worker's lines", () -> readValues(topic).size() >= want, 60);
            Thread.sleep(2000); // a replay from the start of the file would show up by now
            List<String> values = readValues(topic);
            assertEquals(lines, values.size(), "every line exactly once");
            assertEquals(lines, new HashSet<>(values).size());
        } finally {
            second.stop();
        }
    }

    static Map<String, String> workerProps(String prefix) {
        Map<String, String> p = new HashMap<>();
        p.put("bootstrap.servers", Server.get().bootstrap);
        p.put("group.id", prefix + "-workers");
        p.put("config.storage.topic", prefix + "-configs");
        p.put("offset.storage.topic", prefix + "-offsets");
        p.put("status.storage.topic", prefix + "-status");
        for (String store : List.of("config", "offset", "status")) {
            p.put(store + ".storage.replication.factor", "-1");
        }
        p.put("offset.storage.partitions", "1");
        p.put("status.storage.partitions", "1");
        p.put("key.converter", "org.apache.kafka.connect.storage.StringConverter");
        p.put("value.converter", "org.apache.kafka.connect.storage.StringConverter");
        p.put("offset.flush.interval.ms", "200");
        p.put("listeners", "http://127.0.0.1:0");
        return p;
    }

    private static void putConnector(Connect<DistributedHerder> connect, String name, Path file,
            String topic, int batchSize) throws Exception {
        Map<String, String> config = Map.of(
                "name", name,
                "connector.class", "org.apache.kafka.connect.file.FileStreamSourceConnector",
                "tasks.max", "1",
                "file", file.toString(),
                "topic", topic,
                "batch.size", String.valueOf(batchSize));
        FutureCallback<Herder.Created<ConnectorInfo>> done = new FutureCallback<>();
        connect.herder().putConnectorConfig(name, config, true, done);
        done.get(60, TimeUnit.SECONDS);
    }

    private static int appendLines(Path file, int from, int count) throws Exception {
        StringBuilder text = new StringBuilder();
        for (int i = from; i < from + count; i++) {
            text.append("line-").append(i).append('\n');
        }
        Files.writeString(file, text, StandardOpenOption.APPEND);
        return from + count;
    }

    /** Every value of partition 0 of `topic`, from the beginning to the end. */
    static List<String> readValues(String topic) {
        List<String> values = new ArrayList<>();
        readChangelog(topic).forEach(r -> values.add(r.value()));
        return values;
    }

    /** FileStreamSource's committed source offset, as the worker's JSON converter writes it. */
    private static final java.util.regex.Pattern POSITION =
            java.util.regex.Pattern.compile("\"position\":(\\d+)");

    /**
     * The file position the offsets topic last records for `connector` (FileStreamSource stores
     * `{"position":N}`), or -1 before the first commit.
     */
    private static long committedPosition(String offsetsTopic, String connector) {
        long position = -1;
        for (ConsumerRecord<String, String> r : readChangelog(offsetsTopic)) {
            if (r.key() != null && r.key().contains("\"" + connector + "\"") && r.value() != null) {
                var m = POSITION.matcher(r.value());
                if (m.find()) {
                    position = Long.parseLong(m.group(1));
                }
            }
        }
        return position;
    }

    /** Whether partition 0 of `topic` holds fewer records than offsets: compaction removed some. */
    private static boolean hasGaps(String topic) {
        TopicPartition tp = new TopicPartition(topic, 0);
        long offsets;
        try (KafkaConsumer<String, String> consumer = ClientsTest.consumer(null)) {
            offsets = consumer.endOffsets(List.of(tp)).get(tp)
                    - consumer.beginningOffsets(List.of(tp)).get(tp);
        }
        return readChangelog(topic).size() < offsets;
    }

    /** Updates and deletions of `keys` keys; returns each live key's last value. */
    private static Map<String, String> produceUpdates(String topic, int count, int keys) {
        Map<String, String> latest = new HashMap<>();
        Random random = new Random(15);
        try (KafkaProducer<String, String> producer = ClientsTest.producer("lz4")) {
            for (int i = 0; i < count; i++) {
                String key = "k" + random.nextInt(keys);
                String value = random.nextInt(20) == 0 ? null : "v" + i;
                producer.send(new ProducerRecord<>(topic, key, value));
                if (value == null) {
                    latest.remove(key);
                } else {
                    latest.put(key, value);
                }
            }
            producer.flush();
        }
        return latest;
    }

    private static KafkaStreams start(String appId, Path stateDir, String input) {
        Properties p = Server.props();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        p.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        p.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, -1);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        // Every update reaches the changelog, so compaction has superseded records to remove.
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        StreamsBuilder builder = new StreamsBuilder();
        // The changelog's dirty tail is compacted within a second whatever its share of the log
        // (max.compaction.lag.ms): under the default dirty ratio alone, a tail written after the
        // last round and under half the log stays uncompacted, as on Kafka, and the log would
        // keep a superseded record for as long as the test waits (a CI run failed so).
        builder.table(input, Consumed.with(Serdes.String(), Serdes.String()),
                Materialized.<String, String, KeyValueStore<Bytes, byte[]>>as(STORE)
                        .withLoggingEnabled(Map.of("max.compaction.lag.ms", "1000")));
        KafkaStreams streams = new KafkaStreams(builder.build(), p);
        streams.start();
        return streams;
    }

    /** The table as the instance's store holds it now (empty while it is not running). */
    private static Map<String, String> table(KafkaStreams streams) {
        Map<String, String> out = new HashMap<>();
        if (streams.state() != KafkaStreams.State.RUNNING) {
            return out;
        }
        ReadOnlyKeyValueStore<String, String> store = streams.store(
                StoreQueryParameters.fromNameAndType(STORE, QueryableStoreTypes.keyValueStore()));
        try (KeyValueIterator<String, String> all = store.all()) {
            while (all.hasNext()) {
                KeyValue<String, String> kv = all.next();
                out.put(kv.key, kv.value);
            }
        }
        return out;
    }

    /**
     * Partition 0 of `topic`, read from the beginning to its end offset as of the call (records
     * appended meanwhile are left out); offsets only increase.
     */
    private static List<ConsumerRecord<String, String>> readChangelog(String topic) {
        TopicPartition tp = new TopicPartition(topic, 0);
        List<ConsumerRecord<String, String>> log = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = ClientsTest.consumer(null)) {
            if (consumer.partitionsFor(topic).isEmpty()) {
                return log;
            }
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            long end = consumer.endOffsets(List.of(tp)).get(tp);
            Instant deadline = Instant.now().plusSeconds(30);
            while (consumer.position(tp) < end && Instant.now().isBefore(deadline)) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    long previous = log.isEmpty() ? -1 : log.get(log.size() - 1).offset();
                    assertTrue(r.offset() > previous, "offset " + r.offset() + " after " + previous);
                    if (r.offset() < end) {
                        log.add(r);
                    }
                }
            }
            assertTrue(consumer.position(tp) >= end, "the changelog is read to its end");
        }
        return log;
    }

    static void waitFor(String what, java.util.function.BooleanSupplier done, int seconds)
            throws InterruptedException {
        waitFor(what, done, seconds, () -> "");
    }

    /** As above; a timeout's message ends with `lastSeen` (what the last check found). */
    static void waitFor(String what, java.util.function.BooleanSupplier done, int seconds,
            java.util.function.Supplier<String> lastSeen) throws InterruptedException {
        Instant deadline = Instant.now().plusSeconds(seconds);
        while (!done.getAsBoolean()) {
            assertTrue(Instant.now().isBefore(deadline),
                    () -> "timed out waiting for " + what + " (last: " + lastSeen.get() + ")");
            Thread.sleep(500);
        }
    }
}
