package io.streamhouse.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;

/** The Java producer (idempotent, every codec) and consumer (classic group, cooperative-sticky). */
class ClientsTest {

    static void createTopic(String topic, int partitions) throws Exception {
        try (Admin admin = Admin.create(Server.props())) {
            admin.createTopics(List.of(new NewTopic(topic, partitions, (short) -1))).all().get();
        }
    }

    static KafkaProducer<String, String> producer(String compression) {
        Properties p = Server.props();
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.put("compression.type", compression);
        p.put("linger.ms", "5");
        // Idempotence is the Java producer's default since 3.0; said here so the test means it.
        p.put("enable.idempotence", "true");
        p.put("acks", "all");
        return new KafkaProducer<>(p);
    }

    static KafkaConsumer<String, String> consumer(String group) {
        Properties p = Server.props();
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", StringDeserializer.class.getName());
        p.put("auto.offset.reset", "earliest");
        p.put("enable.auto.commit", "false");
        if (group != null) {
            p.put("group.id", group);
            p.put("group.protocol", "classic");
            p.put("partition.assignment.strategy", CooperativeStickyAssignor.class.getName());
        }
        return new KafkaConsumer<>(p);
    }

    @ParameterizedTest
    @ValueSource(strings = {"none", "gzip", "snappy", "lz4", "zstd"})
    void idempotentProducerEveryCodec(String codec) throws Exception {
        String topic = Server.uniqueTopic("java-" + codec);
        createTopic(topic, 1);
        int n = 1000;
        try (KafkaProducer<String, String> producer = producer(codec)) {
            List<java.util.concurrent.Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                sent.add(producer.send(new ProducerRecord<>(topic, "k" + i, ("value " + i + " ").repeat(10))));
            }
            for (int i = 0; i < n; i++) {
                assertEquals(i, sent.get(i).get().offset());
            }
        }
        try (KafkaConsumer<String, String> consumer = consumer(null)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<ConsumerRecord<String, String>> got = new ArrayList<>();
            Instant deadline = Instant.now().plusSeconds(60);
            while (got.size() < n && Instant.now().isBefore(deadline)) {
                consumer.poll(Duration.ofMillis(500)).forEach(got::add);
            }
            assertEquals(n, got.size());
            for (int i = 0; i < n; i++) {
                assertEquals(i, got.get(i).offset());
                assertEquals("k" + i, got.get(i).key());
                assertEquals(("value " + i + " ").repeat(10), got.get(i).value());
            }
        }
    }

    /**
     * Starts `count` group members in threads: each subscribes to `topic`, counts every value it
     * receives in `seen`, commits after every poll and publishes its assignment, until `stop`.
     */
    static List<Thread> startMembers(int count,
            java.util.function.Supplier<KafkaConsumer<String, String>> newConsumer, String topic,
            Map<String, Integer> seen, Map<String, Set<TopicPartition>> assigned, AtomicBoolean stop,
            List<Throwable> failures) {
        List<Thread> members = new ArrayList<>();
        for (int m = 0; m < count; m++) {
            String name = "member-" + m;
            Thread t = new Thread(() -> {
                try (KafkaConsumer<String, String> c = newConsumer.get()) {
                    c.subscribe(List.of(topic));
                    while (!stop.get()) {
                        ConsumerRecords<String, String> records = c.poll(Duration.ofMillis(200));
                        records.forEach(r -> seen.merge(r.value(), 1, Integer::sum));
                        c.commitSync();
                        assigned.put(name, c.assignment());
                    }
                } catch (Throwable e) {
                    failures.add(e);
                }
            });
            t.start();
            members.add(t);
        }
        return members;
    }

    /** Two members of a classic group with the cooperative-sticky assignor share four partitions. */
    @Test
    void classicGroupWithCooperativeSticky() throws Exception {
        String topic = Server.uniqueTopic("java-group");
        String group = Server.uniqueTopic("java-g");
        createTopic(topic, 4);
        int n = 200;
        try (KafkaProducer<String, String> producer = producer("lz4")) {
            for (int i = 0; i < n; i++) {
                producer.send(new ProducerRecord<>(topic, i % 4, null, Integer.toString(i)));
            }
        }
        Map<String, Integer> seen = new ConcurrentHashMap<>();
        AtomicBoolean stop = new AtomicBoolean();
        Map<String, Set<TopicPartition>> assigned = new ConcurrentHashMap<>();
        List<Throwable> failures = java.util.Collections.synchronizedList(new ArrayList<>());
        List<Thread> members = startMembers(2, () -> consumer(group), topic, seen, assigned,
                stop, failures);
        Instant deadline = Instant.now().plusSeconds(90);
        while (Instant.now().isBefore(deadline)) {
            boolean split = assigned.size() == 2 && assigned.values().stream().allMatch(s -> s.size() == 2);
            if (seen.size() == n && split) {
                break;
            }
            Thread.sleep(200);
        }
        stop.set(true);
        for (Thread t : members) {
            t.join(30_000);
        }
        assertTrue(failures.isEmpty(), () -> "member failed: " + failures);
        assertEquals(n, seen.size(), "distinct records consumed");
        seen.forEach((v, count) -> assertEquals(1, count, "record " + v + " consumed " + count + " times"));
        assertEquals(2, assigned.size());
        assigned.values().forEach(s -> assertEquals(2, s.size(), "assignment " + assigned));
        try (Admin admin = Admin.create(Server.props())) {
            Map<TopicPartition, OffsetAndMetadata> committed =
                    admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
            Map<Integer, Long> byPartition = new HashMap<>();
            committed.forEach((tp, o) -> byPartition.put(tp.partition(), o.offset()));
            assertEquals(Map.of(0, 50L, 1, 50L, 2, 50L, 3, 50L), byPartition);
        }
    }
}
