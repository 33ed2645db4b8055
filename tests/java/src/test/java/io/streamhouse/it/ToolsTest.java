package io.streamhouse.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * Kafka's own command-line tools (kafka-tools 4.x), each run as its script runs it: a JVM with
 * the tool's main class, asserted on its output.
 */
class ToolsTest {

    /** A tool's exit code and its stdout and stderr together. */
    record Run(int exit, String output) {}

    static Run tool(String mainClass, String stdin, String... args) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(List.of(
                Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-cp", System.getProperty("java.class.path"),
                // As the scripts: a small heap, and the tools' INFO logging off.
                "-Xmx256m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                mainClass));
        cmd.addAll(Arrays.asList(args));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        Thread reader = new Thread(() -> copy(p.getInputStream(), out));
        reader.start();
        try (OutputStream in = p.getOutputStream()) {
            if (stdin != null) {
                in.write(stdin.getBytes(StandardCharsets.UTF_8));
            }
        }
        if (!p.waitFor(90, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            reader.join(5_000);
            throw new AssertionError(mainClass + " " + String.join(" ", args) + " did not finish:\n" + out);
        }
        reader.join(5_000);
        return new Run(p.exitValue(), out.toString(StandardCharsets.UTF_8));
    }

    /** Runs a tool that must succeed; its output. */
    static String ok(String mainClass, String stdin, String... args) throws Exception {
        Run r = tool(mainClass, stdin, args);
        assertEquals(0, r.exit(), () -> mainClass + " " + String.join(" ", args) + " failed:\n" + r.output());
        return r.output();
    }

    private static void copy(InputStream in, ByteArrayOutputStream out) {
        try {
            in.transferTo(out);
        } catch (IOException ignored) {
            // The process ended; what was read is kept.
        }
    }

    static final String TOPICS = "org.apache.kafka.tools.TopicCommand";
    static final String PRODUCER = "org.apache.kafka.tools.ConsoleProducer";
    static final String CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer";
    static final String GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";
    static final String GET_OFFSETS = "org.apache.kafka.tools.GetOffsetShell";
    static final String DELETE_RECORDS = "org.apache.kafka.tools.DeleteRecordsCommand";
    static final String ACLS = "org.apache.kafka.tools.AclCommand";
    static final String LOG_DIRS = "org.apache.kafka.tools.LogDirsCommand";
    static final String CONFIGS = "kafka.admin.ConfigCommand";
    static final String PRODUCER_PERF = "org.apache.kafka.tools.ProducerPerformance";
    static final String CONSUMER_PERF = "org.apache.kafka.tools.ConsumerPerformance";

    static String bs() {
        return Server.get().bootstrap;
    }

    @Test
    void kafkaTopics() throws Exception {
        String topic = Server.uniqueTopic("tool-topics");
        String out = ok(TOPICS, null, "--bootstrap-server", bs(), "--create", "--topic", topic,
                "--partitions", "3", "--replication-factor", "1", "--config", "retention.ms=86400000");
        assertTrue(out.contains("Created topic " + topic + "."), out);
        assertTrue(ok(TOPICS, null, "--bootstrap-server", bs(), "--list").lines().anyMatch(topic::equals));
        out = ok(TOPICS, null, "--bootstrap-server", bs(), "--describe", "--topic", topic);
        assertTrue(out.contains("PartitionCount: 3"), out);
        assertTrue(out.contains("retention.ms=86400000"), out);
        ok(TOPICS, null, "--bootstrap-server", bs(), "--alter", "--topic", topic, "--partitions", "5");
        out = ok(TOPICS, null, "--bootstrap-server", bs(), "--describe", "--topic", topic);
        assertTrue(out.contains("PartitionCount: 5"), out);
        Run bad = tool(TOPICS, null, "--bootstrap-server", bs(), "--create", "--topic", topic + "-bad",
                "--partitions", "1", "--config", "retention.ms=-7");
        // Refused by the tool's own check of Kafka's ranges (the agent applies the same ones,
        // AdminTest shows its refusal).
        assertTrue(bad.exit() != 0 && bad.output().contains("retention.ms"), bad.output());
        ok(TOPICS, null, "--bootstrap-server", bs(), "--delete", "--topic", topic);
        assertFalse(ok(TOPICS, null, "--bootstrap-server", bs(), "--list").lines().anyMatch(topic::equals));
    }

    @Test
    void kafkaConfigs() throws Exception {
        String topic = Server.uniqueTopic("tool-configs");
        ok(TOPICS, null, "--bootstrap-server", bs(), "--create", "--topic", topic, "--partitions", "1");
        String out = ok(CONFIGS, null, "--bootstrap-server", bs(), "--alter", "--entity-type", "topics",
                "--entity-name", topic, "--add-config", "retention.ms=3600000,segment.ms=60000");
        assertTrue(out.contains("Completed updating config for topic " + topic + "."), out);
        out = ok(CONFIGS, null, "--bootstrap-server", bs(), "--describe", "--entity-type", "topics",
                "--entity-name", topic);
        // Only the values set on the topic are listed, as for a Kafka broker.
        assertTrue(out.contains("retention.ms=3600000") && out.contains("segment.ms=60000"), out);
        assertFalse(out.contains("segment.bytes="), out);
        ok(CONFIGS, null, "--bootstrap-server", bs(), "--alter", "--entity-type", "topics",
                "--entity-name", topic, "--delete-config", "retention.ms");
        out = ok(CONFIGS, null, "--bootstrap-server", bs(), "--describe", "--all", "--entity-type", "topics",
                "--entity-name", topic);
        assertTrue(out.contains("retention.ms=604800000 sensitive=false synonyms={DEFAULT_CONFIG:"), out);
        Run bad = tool(CONFIGS, null, "--bootstrap-server", bs(), "--alter", "--entity-type", "topics",
                "--entity-name", topic, "--add-config", "retention.ms=-9");
        assertTrue(bad.exit() != 0 && bad.output().contains("InvalidConfigurationException"), bad.output());
    }

    /** Console producer and consumer, consumer groups (describe, reset, delete), get-offsets, delete-records. */
    @Test
    void consoleClientsGroupsOffsetsAndRecords() throws Exception {
        String topic = Server.uniqueTopic("tool-console");
        String group = Server.uniqueTopic("tool-group");
        ok(TOPICS, null, "--bootstrap-server", bs(), "--create", "--topic", topic, "--partitions", "1");
        ok(PRODUCER, "k1:one\nk2:two\nk3:three\n", "--bootstrap-server", bs(), "--topic", topic,
                "--reader-property", "parse.key=true", "--reader-property", "key.separator=:");
        String out = ok(CONSUMER, null, "--bootstrap-server", bs(), "--topic", topic, "--group", group,
                "--from-beginning", "--max-messages", "3", "--timeout-ms", "30000",
                "--formatter-property", "print.key=true", "--formatter-property", "key.separator=:");
        assertEquals(List.of("k1:one", "k2:two", "k3:three"),
                out.lines().filter(l -> l.startsWith("k")).toList(), out);

        assertTrue(ok(GROUPS, null, "--bootstrap-server", bs(), "--list").lines().anyMatch(group::equals));
        out = ok(GROUPS, null, "--bootstrap-server", bs(), "--describe", "--group", group);
        // GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
        Matcher m = Pattern.compile(Pattern.quote(topic) + "\\s+0\\s+(\\d+)\\s+(\\d+)\\s+(\\d+)").matcher(out);
        assertTrue(m.find(), out);
        assertEquals(List.of("3", "3", "0"), List.of(m.group(1), m.group(2), m.group(3)), out);
        out = ok(GROUPS, null, "--bootstrap-server", bs(), "--reset-offsets", "--group", group,
                "--topic", topic, "--to-earliest", "--execute");
        assertTrue(Pattern.compile(Pattern.quote(topic) + "\\s+0\\s+0").matcher(out).find(), out);

        out = ok(GET_OFFSETS, null, "--bootstrap-server", bs(), "--topic", topic, "--time", "-1");
        assertTrue(out.lines().anyMatch((topic + ":0:3")::equals), out);

        Path json = Files.createTempFile("delete-records", ".json");
        Files.writeString(json, "{\"partitions\":[{\"topic\":\"" + topic + "\",\"partition\":0,\"offset\":2}],\"version\":1}");
        out = ok(DELETE_RECORDS, null, "--bootstrap-server", bs(), "--offset-json-file", json.toString());
        assertTrue(out.contains("low_watermark: 2"), out);
        out = ok(GET_OFFSETS, null, "--bootstrap-server", bs(), "--topic", topic, "--time", "-2");
        assertTrue(out.lines().anyMatch((topic + ":0:2")::equals), out);

        out = ok(GROUPS, null, "--bootstrap-server", bs(), "--delete", "--group", group);
        assertTrue(out.contains("Deletion of requested consumer groups ('" + group + "') was successful"), out);
    }

    @Test
    void aclsAndLogDirs() throws Exception {
        String topic = Server.uniqueTopic("tool-acl");
        ok(TOPICS, null, "--bootstrap-server", bs(), "--create", "--topic", topic, "--partitions", "2");
        ok(PRODUCER, "a\nb\n", "--bootstrap-server", bs(), "--topic", topic);

        ok(ACLS, null, "--bootstrap-server", bs(), "--add", "--allow-principal", "User:alice",
                "--operation", "Read", "--topic", topic);
        String out = ok(ACLS, null, "--bootstrap-server", bs(), "--list", "--topic", topic);
        assertTrue(out.contains("principal=User:alice") && out.contains("operation=READ"), out);
        ok(ACLS, null, "--bootstrap-server", bs(), "--remove", "--force", "--allow-principal", "User:alice",
                "--operation", "Read", "--topic", topic);
        out = ok(ACLS, null, "--bootstrap-server", bs(), "--list", "--topic", topic);
        assertFalse(out.contains("User:alice"), out);

        out = ok(LOG_DIRS, null, "--bootstrap-server", bs(), "--describe", "--topic-list", topic);
        // The JSON line: every partition of the topic with its size; the records make one > 0.
        Matcher sizes = Pattern.compile("\"partition\":\"" + Pattern.quote(topic) + "-(\\d)\",\"size\":(\\d+)").matcher(out);
        long total = 0;
        int partitions = 0;
        while (sizes.find()) {
            partitions++;
            total += Long.parseLong(sizes.group(2));
        }
        assertEquals(2, partitions, out);
        assertTrue(total > 0, out);
    }

    /**
     * kafka-producer-perf-test and kafka-consumer-perf-test. The counts are small so the suite
     * stays quick; the figures in BENCHMARKS.md come from larger runs against a release build
     * ($STREAMHOUSE_PERF_RECORDS sets the count).
     */
    @Test
    void perfTests() throws Exception {
        String topic = Server.uniqueTopic("tool-perf");
        long records = Long.parseLong(System.getenv().getOrDefault("STREAMHOUSE_PERF_RECORDS", "20000"));
        ok(TOPICS, null, "--bootstrap-server", bs(), "--create", "--topic", topic, "--partitions", "6");
        String out = ok(PRODUCER_PERF, null, "--topic", topic, "--num-records", Long.toString(records),
                "--record-size", "1024", "--throughput", "-1",
                "--producer-props", "bootstrap.servers=" + bs(), "acks=all", "linger.ms=5", "compression.type=none");
        System.out.println("kafka-producer-perf-test: " + out.lines().reduce((a, b) -> b).orElse(""));
        Matcher sent = Pattern.compile("(\\d+) records sent, [\\d.]+ records/sec").matcher(out);
        String last = null;
        while (sent.find()) {
            last = sent.group(1);
        }
        assertEquals(Long.toString(records), last, out);
        String consumed = ok(CONSUMER_PERF, null, "--bootstrap-server", bs(), "--topic", topic,
                "--num-records", Long.toString(records), "--timeout", "60000");
        System.out.println("kafka-consumer-perf-test: " + consumed.strip());
        // start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, ...
        String row = consumed.lines().filter(l -> l.matches("^\\d{4}-.*")).reduce((a, b) -> b).orElseThrow(
                () -> new AssertionError("no result row:\n" + consumed));
        assertEquals(Long.toString(records), row.split(",\\s*")[4], row);
    }
}
