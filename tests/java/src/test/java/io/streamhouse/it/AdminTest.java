package io.streamhouse.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.LogDirDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialDeletion;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.clients.admin.UserScramCredentialsDescription;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AccessControlEntryFilter;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.InvalidReplicationFactorException;
import org.apache.kafka.common.errors.ResourceNotFoundException;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourcePatternFilter;
import org.apache.kafka.common.resource.ResourceType;
import org.junit.jupiter.api.Test;

/** Kafka's AdminClient against StreamHouse: what Kafka UIs, operators and tools call. */
class AdminTest {

    static Admin admin() {
        return Admin.create(Server.props());
    }

    static ConfigEntry entry(Admin admin, String topic, String name) throws Exception {
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Config config = admin.describeConfigs(List.of(r)).all().get().get(r);
        ConfigEntry e = config.get(name);
        if (e == null) {
            throw new AssertionError(name + " not described: " + config);
        }
        return e;
    }

    static Throwable cause(ExecutionException e) {
        return e.getCause();
    }

    @Test
    void topicsAndConfigs() throws Exception {
        try (Admin admin = admin()) {
            String topic = Server.uniqueTopic("java-admin");
            admin.createTopics(List.of(new NewTopic(topic, 3, (short) 1)
                    .configs(Map.of("retention.ms", "3600000")))).all().get();
            TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            assertEquals(3, d.partitions().size());
            assertTrue(admin.listTopics().names().get().contains(topic));

            ConfigEntry retention = entry(admin, topic, "retention.ms");
            assertEquals("3600000", retention.value());
            assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, retention.source());
            assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, entry(admin, topic, "segment.ms").source());

            ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            Map<ConfigResource, Collection<AlterConfigOp>> ops = Map.of(r, List.of(
                    new AlterConfigOp(new ConfigEntry("segment.ms", "60000"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("retention.ms", null), AlterConfigOp.OpType.DELETE),
                    new AlterConfigOp(new ConfigEntry("leader.replication.throttled.replicas", "0:1"),
                            AlterConfigOp.OpType.APPEND)));
            admin.incrementalAlterConfigs(ops).all().get();
            assertEquals("60000", entry(admin, topic, "segment.ms").value());
            assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, entry(admin, topic, "retention.ms").source());
            assertEquals("0:1", entry(admin, topic, "leader.replication.throttled.replicas").value());

            ExecutionException refused = assertThrows(ExecutionException.class, () -> admin.incrementalAlterConfigs(
                    Map.of(r, List.of(new AlterConfigOp(new ConfigEntry("cleanup.policy", "compact,forever"),
                            AlterConfigOp.OpType.SET)))).all().get());
            assertInstanceOf(InvalidConfigurationException.class, cause(refused));
            refused = assertThrows(ExecutionException.class, () -> admin.createTopics(List.of(
                    new NewTopic(Server.uniqueTopic("java-bad"), 1, (short) 1)
                            .configs(Map.of("retention.ms", "-7")))).all().get());
            assertInstanceOf(InvalidConfigurationException.class, cause(refused));
            refused = assertThrows(ExecutionException.class, () -> admin.createTopics(List.of(
                    new NewTopic(Server.uniqueTopic("java-bad"), 1, (short) 0))).all().get());
            assertInstanceOf(InvalidReplicationFactorException.class, cause(refused));

            admin.deleteTopics(List.of(topic)).all().get();
            assertFalse(admin.listTopics().names().get().contains(topic));
        }
    }

    @Test
    void offsetsRecordsGroupsClusterAndLogDirs() throws Exception {
        String topic = Server.uniqueTopic("java-offsets");
        String group = Server.uniqueTopic("java-offsets-g");
        TopicPartition tp = new TopicPartition(topic, 0);
        try (Admin admin = admin()) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) -1))).all().get();
            // Timestamps 1000..1004, then 9000, then 2000: the largest is at offset 5.
            long[] timestamps = {1000, 1001, 1002, 1003, 1004, 9000, 2000};
            try (KafkaProducer<String, String> producer = ClientsTest.producer("zstd")) {
                for (int i = 0; i < timestamps.length; i++) {
                    producer.send(new ProducerRecord<>(topic, 0, timestamps[i], "k" + i, "v" + i)).get();
                }
            }
            Map<String, Long> expected = Map.of(
                    "earliest", 0L, "latest", 7L, "maxTimestamp", 5L, "earliestLocal", 0L,
                    "latestTiered", 6L, "forTimestamp(1500)", 5L);
            Map<String, OffsetSpec> specs = Map.of(
                    "earliest", OffsetSpec.earliest(), "latest", OffsetSpec.latest(),
                    "maxTimestamp", OffsetSpec.maxTimestamp(), "earliestLocal", OffsetSpec.earliestLocal(),
                    "latestTiered", OffsetSpec.latestTiered(), "forTimestamp(1500)", OffsetSpec.forTimestamp(1500));
            for (Map.Entry<String, OffsetSpec> spec : specs.entrySet()) {
                ListOffsetsResult.ListOffsetsResultInfo info =
                        admin.listOffsets(Map.of(tp, spec.getValue())).partitionResult(tp).get();
                assertEquals(expected.get(spec.getKey()), info.offset(), spec.getKey());
            }
            assertEquals(9000L, admin.listOffsets(Map.of(tp, OffsetSpec.maxTimestamp()))
                    .partitionResult(tp).get().timestamp());

            admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(2))).all().get();
            assertEquals(2L, admin.listOffsets(Map.of(tp, OffsetSpec.earliest())).partitionResult(tp).get().offset());

            // Offsets of a group without members: committed, listed, described, deleted.
            admin.alterConsumerGroupOffsets(group, Map.of(tp, new OffsetAndMetadata(4))).all().get();
            assertEquals(4L, admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get()
                    .get(tp).offset());
            assertTrue(admin.listGroups().all().get().stream().anyMatch(g -> g.groupId().equals(group)));
            admin.deleteConsumerGroups(List.of(group)).all().get();
            assertTrue(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get().isEmpty());

            DescribeClusterResult cluster = admin.describeCluster();
            Collection<Node> nodes = cluster.nodes().get();
            assertEquals(1, nodes.size());
            Node node = nodes.iterator().next();
            assertEquals(node.id(), cluster.controller().get().id());
            assertEquals("streamhouse", cluster.clusterId().get());

            Map<String, LogDirDescription> dirs =
                    admin.describeLogDirs(List.of(node.id())).allDescriptions().get().get(node.id());
            long size = dirs.values().stream()
                    .flatMap(d -> d.replicaInfos().entrySet().stream())
                    .filter(e -> e.getKey().equals(tp))
                    .mapToLong(e -> e.getValue().size())
                    .sum();
            assertTrue(size > 0, "log dirs report " + size + " bytes for " + tp + ": " + dirs);

            // The idempotent producer above: one producer, its last sequence that of the 7th record.
            var producers = admin.describeProducers(List.of(tp)).partitionResult(tp).get().activeProducers();
            assertEquals(1, producers.size(), producers::toString);
            assertEquals(timestamps.length - 1, producers.get(0).lastSequence());

        }
    }

    @Test
    void acls() throws Exception {
        try (Admin admin = admin()) {
            String topic = Server.uniqueTopic("java-acl");
            AclBinding binding = new AclBinding(
                    new ResourcePattern(ResourceType.TOPIC, topic, PatternType.LITERAL),
                    new AccessControlEntry("User:alice", "*", AclOperation.READ, AclPermissionType.ALLOW));
            admin.createAcls(List.of(binding)).all().get();
            AclBindingFilter filter = new AclBindingFilter(
                    new ResourcePatternFilter(ResourceType.TOPIC, topic, PatternType.LITERAL),
                    AccessControlEntryFilter.ANY);
            assertEquals(List.of(binding), List.copyOf(admin.describeAcls(filter).values().get()));
            assertEquals(List.of(binding), List.copyOf(admin.deleteAcls(List.of(filter)).all().get()));
            assertTrue(admin.describeAcls(filter).values().get().isEmpty());
        }
    }

    @Test
    void scramUsers() throws Exception {
        try (Admin admin = admin()) {
            String user = Server.uniqueTopic("java-user");
            ScramCredentialInfo sha256 = new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192);
            admin.alterUserScramCredentials(List.of(
                    new UserScramCredentialUpsertion(user, sha256, "secret-1"))).all().get();
            UserScramCredentialsDescription described =
                    admin.describeUserScramCredentials(List.of(user)).description(user).get();
            assertEquals(List.of(sha256), described.credentialInfos());
            admin.alterUserScramCredentials(List.of(
                    new UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_256))).all().get();
            ExecutionException gone = assertThrows(ExecutionException.class,
                    () -> admin.describeUserScramCredentials(List.of(user)).description(user).get());
            assertInstanceOf(ResourceNotFoundException.class, cause(gone));
        }
    }
}
