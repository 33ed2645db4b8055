package io.streamhouse.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.connect.cli.ConnectDistributed;
import org.apache.kafka.connect.runtime.Connect;
import org.apache.kafka.connect.runtime.Herder;
import org.apache.kafka.connect.runtime.distributed.DistributedHerder;
import org.apache.kafka.connect.runtime.rest.entities.ConnectorInfo;
import org.apache.kafka.connect.util.FutureCallback;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.junit.jupiter.api.Test;

/**
 * Pipelines as people run them (issue 14): a Kafka Streams word count with a repartition and a
 * changelog topic, stopped mid-stream and resumed by a new instance with empty local state; a
 * Kafka Connect sink connector in distributed mode, stopped and resumed by a new worker.
 */
class PipelinesTest {
    private static final String[] WORDS = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta",
        "eta", "theta", "iota", "kappa", "lambda", "mu"};

    @Test
    void wordCountRestartedMidStreamGivesExactCounts() throws Exception {
        String input = Server.uniqueTopic("java-wc-input");
        String output = Server.uniqueTopic("java-wc-output");
        String appId = Server.uniqueTopic("java-wc-app");
        ClientsTest.createTopic(input, 3);
        ClientsTest.createTopic(output, 3);
        Map<String, Long> expected = new HashMap<>();
        Random random = new Random(14);
        List<String> sentences = new ArrayList<>();
        for (int i = 0; i < 6_000; i++) {
            StringBuilder s = new StringBuilder();
            for (int w = 1 + random.nextInt(6); w > 0; w--) {
                String word = WORDS[random.nextInt(WORDS.length)];
                s.append(word).append(' ');
                expected.merge(word, 1L, Long::sum);
            }
            sentences.add(s.toString().trim());
        }
        // The input keeps arriving while the first instance stops and the second starts.
        AtomicReference<Throwable> producerFailure = new AtomicReference<>();
        Thread feeder = new Thread(() -> {
            try (KafkaProducer<String, String> producer = ClientsTest.producer("lz4")) {
                for (int i = 0; i < sentences.size(); i++) {
                    producer.send(new ProducerRecord<>(input, "s" + i, sentences.get(i)));
                    if (i % 500 == 499) {
                        producer.flush();
                        Thread.sleep(300);
                    }
                }
            } catch (Throwable e) {
                producerFailure.set(e);
            }
        });
        feeder.start();
        KafkaStreams first = wordCount(appId, Files.createTempDirectory("wc-a"), input, output);
        CompactionTest.waitFor("the first instance to count something",
                () -> !latestCounts(output).isEmpty(), 90);
        first.close(Duration.ofSeconds(60));
        KafkaStreams second = wordCount(appId, Files.createTempDirectory("wc-b"), input, output);
        try {
            feeder.join(120_000);
            assertTrue(producerFailure.get() == null, () -> "producer: " + producerFailure.get());
            CompactionTest.waitFor("the exact final counts",
                    () -> latestCounts(output).equals(expected), 120);
        } finally {
            second.close(Duration.ofSeconds(60));
        }
    }

    private static KafkaStreams wordCount(String appId, Path stateDir, String input, String output) {
        Properties p = Server.props();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, -1);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.AT_LEAST_ONCE);
        // Every update reaches the output, so the last value per word is the count.
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .flatMapValues(sentence -> Arrays.asList(sentence.split(" ")))
                // A new key: Streams writes through a repartition topic.
                .groupBy((key, word) -> word, Grouped.with(Serdes.String(), Serdes.String()))
                // A state store backed by a changelog topic, restored by the second instance.
                .count(Materialized.as("counts"))
                .toStream()
                .to(output, Produced.with(Serdes.String(), Serdes.Long()));
        KafkaStreams streams = new KafkaStreams(builder.build(), p);
        streams.start();
        return streams;
    }

    /** The last count written for each word, reading every partition of `output` to its end. */
    private static Map<String, Long> latestCounts(String output) {
        Properties p = Server.props();
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", LongDeserializer.class.getName());
        Map<String, Long> latest = new HashMap<>();
        try (KafkaConsumer<String, Long> consumer = new KafkaConsumer<>(p)) {
            List<TopicPartition> tps = new ArrayList<>();
            consumer.partitionsFor(output).forEach(i -> tps.add(new TopicPartition(output, i.partition())));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Map<TopicPartition, Long> end = consumer.endOffsets(tps);
            Instant deadline = Instant.now().plusSeconds(30);
            while (tps.stream().anyMatch(tp -> consumer.position(tp) < end.get(tp))
                    && Instant.now().isBefore(deadline)) {
                for (ConsumerRecord<String, Long> r : consumer.poll(Duration.ofMillis(200))) {
                    latest.put(r.key(), r.value());
                }
            }
        }
        return latest;
    }

    /**
     * The file sink connector in a distributed worker writes every record of a topic to a file;
     * a new worker after a clean stop resumes from the sink's committed offsets: every record
     * exactly once, in partition order.
     */
    @Test
    void connectSinkResumesFromItsCommittedOffsets() throws Exception {
        String prefix = Server.uniqueTopic("java-sink");
        String topic = prefix + "-records";
        Path file = Files.createTempFile("connect-sink", ".txt");
        ClientsTest.createTopic(topic, 1);
        Map<String, String> worker = CompactionTest.workerProps(prefix);
        int sent = produceLines(topic, 0, 300);
        Connect<DistributedHerder> first = new ConnectDistributed().startConnect(worker);
        try {
            putSink(first, prefix, topic, file);
            CompactionTest.waitFor("the first 300 lines in the file",
                    () -> lines(file).size() >= 300, 90);
        } finally {
            first.stop();
        }
        sent = produceLines(topic, sent, 200);
        Connect<DistributedHerder> second = new ConnectDistributed().startConnect(worker);
        try {
            CompactionTest.waitFor("all 500 lines in the file", () -> lines(file).size() >= 500, 90);
            Thread.sleep(2000); // a replay from an older offset would show up by now
        } finally {
            second.stop();
        }
        List<String> got = lines(file);
        List<String> want = new ArrayList<>();
        for (int i = 0; i < sent; i++) {
            want.add("record-" + i);
        }
        assertEquals(want, got, "every record once, in order");
        assertEquals(sent, new HashSet<>(got).size());
    }

    private static int produceLines(String topic, int from, int count) {
        try (KafkaProducer<String, String> producer = ClientsTest.producer("snappy")) {
            for (int i = from; i < from + count; i++) {
                producer.send(new ProducerRecord<>(topic, null, "record-" + i));
            }
            producer.flush();
        }
        return from + count;
    }

    private static void putSink(Connect<DistributedHerder> connect, String name, String topic,
            Path file) throws Exception {
        Map<String, String> config = Map.of(
                "name", name,
                "connector.class", "org.apache.kafka.connect.file.FileStreamSinkConnector",
                "tasks.max", "1",
                "file", file.toString(),
                "topics", topic);
        FutureCallback<Herder.Created<ConnectorInfo>> done = new FutureCallback<>();
        connect.herder().putConnectorConfig(name, config, true, done);
        done.get(60, TimeUnit.SECONDS);
    }

    private static List<String> lines(Path file) {
        try {
            return Files.readAllLines(file).stream().filter(l -> !l.isEmpty()).toList();
        } catch (java.io.IOException e) {
            throw new IllegalStateException(e);
        }
    }
}
