package io.streamhouse.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.regex.Pattern;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.junit.jupiter.api.Test;

/**
 * KIP-848's consumer group protocol (`group.protocol=consumer`): the coordinator assigns
 * partitions itself (ConsumerGroupHeartbeat), members commit at their member epoch (OffsetCommit
 * v9), and the admin client and kafka-consumer-groups describe the group (ConsumerGroupDescribe,
 * ListGroups v5).
 */
class ConsumerProtocolTest {

    static KafkaConsumer<String, String> consumer(String group, String assignor) {
        Properties p = Server.props();
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", StringDeserializer.class.getName());
        p.put("auto.offset.reset", "earliest");
        p.put("enable.auto.commit", "false");
        p.put("group.id", group);
        p.put("group.protocol", "consumer");
        p.put("group.remote.assignor", assignor);
        return new KafkaConsumer<>(p);
    }

    @Test
    void twoMembersShareSixPartitionsExactlyOnce() throws Exception {
        String topic = Server.uniqueTopic("java-kip848");
        String group = Server.uniqueTopic("java-kip848-g");
        ClientsTest.createTopic(topic, 6);
        int n = 600;
        try (KafkaProducer<String, String> producer = ClientsTest.producer("zstd")) {
            for (int i = 0; i < n; i++) {
                producer.send(new ProducerRecord<>(topic, i % 6, null, Integer.toString(i)));
            }
        }
        Map<String, Integer> seen = new ConcurrentHashMap<>();
        Map<String, Set<TopicPartition>> assigned = new ConcurrentHashMap<>();
        AtomicBoolean stop = new AtomicBoolean();
        List<Throwable> failures = java.util.Collections.synchronizedList(new ArrayList<>());
        List<Thread> members = ClientsTest.startMembers(2, () -> consumer(group, "uniform"), topic,
                seen, assigned, stop, failures);
        String described = null;
        Instant deadline = Instant.now().plusSeconds(120);
        while (Instant.now().isBefore(deadline) && failures.isEmpty()) {
            boolean split = assigned.size() == 2
                    && assigned.values().stream().allMatch(s -> s.size() == 3);
            if (seen.size() == n && split) {
                described = describeWhileStable(group, topic);
                break;
            }
            Thread.sleep(200);
        }
        String tool = ToolsTest.ok(ToolsTest.GROUPS, null, "--bootstrap-server", ToolsTest.bs(),
                "--describe", "--group", group);
        stop.set(true);
        for (Thread t : members) {
            t.join(30_000);
        }
        assertTrue(failures.isEmpty(), () -> "member failed: " + failures);
        assertEquals(n, seen.size(), "distinct records consumed");
        seen.forEach((v, count) -> assertEquals(1, count, "record " + v + " consumed " + count + " times"));
        assertTrue(described != null, "the group settled with three partitions each: " + assigned);
        // kafka-consumer-groups --describe lists every partition with its member.
        for (int p = 0; p < 6; p++) {
            assertTrue(Pattern.compile(Pattern.quote(topic) + "\\s+" + p + "\\s+100\\s+100\\s+0\\s+\\S+")
                    .matcher(tool).find(), tool);
        }
        try (Admin admin = Admin.create(Server.props())) {
            Map<TopicPartition, OffsetAndMetadata> committed =
                    admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
            Map<Integer, Long> byPartition = new HashMap<>();
            committed.forEach((tp, o) -> byPartition.put(tp.partition(), o.offset()));
            assertEquals(Map.of(0, 100L, 1, 100L, 2, 100L, 3, 100L, 4, 100L, 5, 100L), byPartition);
        }
    }

    /** The admin client's view of the running group; returns its assignor's name. */
    private static String describeWhileStable(String group, String topic) throws Exception {
        try (Admin admin = Admin.create(Server.props())) {
            ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group))
                    .describedGroups().get(group).get();
            assertEquals(GroupType.CONSUMER, d.type());
            assertEquals(GroupState.STABLE, d.groupState());
            assertEquals("uniform", d.partitionAssignor());
            assertEquals(2, d.members().size());
            Set<TopicPartition> all = new HashSet<>();
            for (MemberDescription m : d.members()) {
                for (TopicPartition tp : m.assignment().topicPartitions()) {
                    assertTrue(all.add(tp), "assigned twice: " + tp);
                    assertEquals(topic, tp.topic());
                }
            }
            assertEquals(6, all.size());
            boolean listed = false;
            for (GroupListing g : admin.listGroups().all().get()) {
                if (g.groupId().equals(group)) {
                    listed = true;
                    assertEquals(GroupType.CONSUMER, g.type().orElseThrow());
                }
            }
            assertTrue(listed, "ListGroups shows the group");
            return d.partitionAssignor();
        }
    }

    /** The range assignor gives each of two members the same partition numbers of two topics. */
    @Test
    void rangeAssignorCoPartitions() throws Exception {
        String a = Server.uniqueTopic("java-range-a");
        String b = Server.uniqueTopic("java-range-b");
        String group = Server.uniqueTopic("java-range-g");
        ClientsTest.createTopic(a, 4);
        ClientsTest.createTopic(b, 4);
        try (KafkaConsumer<String, String> c1 = consumer(group, "range");
             KafkaConsumer<String, String> c2 = consumer(group, "range")) {
            c1.subscribe(List.of(a, b));
            c2.subscribe(List.of(a, b));
            Instant deadline = Instant.now().plusSeconds(90);
            while (Instant.now().isBefore(deadline)
                    && (c1.assignment().size() != 4 || c2.assignment().size() != 4)) {
                c1.poll(Duration.ofMillis(100));
                c2.poll(Duration.ofMillis(100));
            }
            assertEquals(4, c1.assignment().size(), "c1: " + c1.assignment());
            assertEquals(4, c2.assignment().size(), "c2: " + c2.assignment());
            for (KafkaConsumer<String, String> c : List.of(c1, c2)) {
                Set<Integer> ofA = new HashSet<>();
                Set<Integer> ofB = new HashSet<>();
                c.assignment().forEach(tp -> (tp.topic().equals(a) ? ofA : ofB).add(tp.partition()));
                assertEquals(ofA, ofB, "co-partitioned: " + c.assignment());
            }
        }
    }
}
