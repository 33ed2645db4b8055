#!/usr/bin/env python3
"""The README's client compatibility table, from the Go and Java suites' results.

Reads the `go test -v` log that scripts/go-test.sh keeps (.cache/results/go-test.log) and the
Surefire reports of tests/java, and prints the table: one row per capability, one column per
client, each cell passed (yes), failed (FAILED) or not tested (blank). `--check README.md` exits 1
when the README's table (between the client-matrix markers) differs, so the table stays what the
suites last showed; `--write README.md` replaces it.
"""

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GO_LOG = REPO / ".cache/results/go-test.log"
SUREFIRE = REPO / "tests/java/target/surefire-reports"
BEGIN, END = "<!-- client-matrix:begin -->", "<!-- client-matrix:end -->"

CLIENTS = ["franz-go", "sarama", "Java client", "Kafka tools"]

# capability -> {client: test id prefix}. A Go id is `TestName[/subtest]`, a Java one
# `Class.method`; a cell passed when every test starting with its prefix passed.
CAPABILITIES = {
    "produce + consume, every codec": {
        "franz-go": "TestFranzProduceConsumeEveryCodec",
        "sarama": "TestSaramaProduceConsumeEveryCodec",
        "Java client": "ClientsTest.idempotentProducerEveryCodec",
    },
    "idempotent producer": {
        "franz-go": "TestFranzProduceConsumeEveryCodec",
        "sarama": "TestSaramaProduceConsumeEveryCodec",
        "Java client": "ClientsTest.idempotentProducerEveryCodec",
    },
    "console producer / consumer": {"Kafka tools": "ToolsTest.consoleClientsGroupsOffsetsAndRecords"},
    "consumer group (classic)": {
        "franz-go": "TestFranzConsumerGroup",
        "sarama": "TestSaramaConsumerGroup",
        "Java client": "ClientsTest.classicGroupWithCooperativeSticky",
        "Kafka tools": "ToolsTest.consoleClientsGroupsOffsetsAndRecords",
    },
    "consumer group (KIP-848, group.protocol=consumer)": {
        "Java client": "ConsumerProtocolTest.twoMembersShareSixPartitionsExactlyOnce",
        "Kafka tools": "ConsumerProtocolTest.twoMembersShareSixPartitionsExactlyOnce",
    },
    "KIP-848 server-side assignors (uniform, range)": {
        "Java client": "ConsumerProtocolTest.rangeAssignorCoPartitions",
    },
    "group offsets (fetch, alter, reset, delete)": {
        "franz-go": "TestFranzConsumerGroup",
        "sarama": "TestSaramaConsumerGroup",
        "Java client": "AdminTest.offsetsRecordsGroupsClusterAndLogDirs",
        "Kafka tools": "ToolsTest.consoleClientsGroupsOffsetsAndRecords",
    },
    "topics (create, describe, delete)": {
        "franz-go": "TestFranzAdmin",
        "sarama": "TestSaramaAdmin",
        "Java client": "AdminTest.topicsAndConfigs",
        "Kafka tools": "ToolsTest.kafkaTopics",
    },
    "configs: IncrementalAlterConfigs": {
        "franz-go": "TestFranzAdmin",
        "sarama": "TestSaramaAdmin",
        "Java client": "AdminTest.topicsAndConfigs",
        "Kafka tools": "ToolsTest.kafkaConfigs",
    },
    "configs: AlterConfigs (legacy)": {"sarama": "TestSaramaAdmin"},
    "list offsets (earliest, latest, by time)": {
        "franz-go": "TestFranzAdmin",
        "sarama": "TestSaramaAdmin",
        "Java client": "AdminTest.offsetsRecordsGroupsClusterAndLogDirs",
        "Kafka tools": "ToolsTest.consoleClientsGroupsOffsetsAndRecords",
    },
    "list offsets: max timestamp (KIP-734)": {
        "franz-go": "TestFranzAdmin",
        "Java client": "AdminTest.offsetsRecordsGroupsClusterAndLogDirs",
    },
    "delete records": {
        "franz-go": "TestFranzAdmin",
        "Java client": "AdminTest.offsetsRecordsGroupsClusterAndLogDirs",
        "Kafka tools": "ToolsTest.consoleClientsGroupsOffsetsAndRecords",
    },
    "describe cluster": {
        "sarama": "TestSaramaAdmin",
        "Java client": "AdminTest.offsetsRecordsGroupsClusterAndLogDirs",
    },
    "log dirs": {
        "franz-go": "TestFranzAdmin",
        "Java client": "AdminTest.offsetsRecordsGroupsClusterAndLogDirs",
        "Kafka tools": "ToolsTest.aclsAndLogDirs",
    },
    "describe producers": {"Java client": "AdminTest.offsetsRecordsGroupsClusterAndLogDirs"},
    "transactions: list, describe (KIP-664)": {
        "Java client": "ExactlyOnceTest.transactionsAreListedAndDescribed",
    },
    "transactions: Kafka Streams exactly_once_v2": {
        "Java client": "ExactlyOnceTest.wordCountIsExactAcrossARestart",
    },
    "SCRAM users (KIP-554)": {"Java client": "AdminTest.scramUsers"},
    "ACLs": {"Java client": "AdminTest.acls", "Kafka tools": "ToolsTest.aclsAndLogDirs"},
    "producer / consumer perf test": {"Kafka tools": "ToolsTest.perfTests"},
    "compacted topics: Kafka Streams KTable restore": {
        "Java client": "CompactionTest.kTableRestoresFromItsCompactedChangelog",
    },
    "compacted topics: Kafka Connect (distributed)": {
        "Java client": "CompactionTest.connectDistributedResumesFromItsCompactedTopics",
    },
    "Kafka Streams word count (repartition, changelog, restart)": {
        "Java client": "PipelinesTest.wordCountRestartedMidStreamGivesExactCounts",
    },
    "Kafka Connect sink connector (distributed, restart)": {
        "Java client": "PipelinesTest.connectSinkResumesFromItsCommittedOffsets",
    },
}


def go_results(log: Path) -> dict[str, bool]:
    results = {}
    for m in re.finditer(r"^\s*--- (PASS|FAIL): (\S+)", log.read_text(), re.M):
        results[m.group(2)] = m.group(1) == "PASS"
    return results


def java_results(reports: Path) -> dict[str, bool]:
    results = {}
    for xml in sorted(reports.glob("TEST-*.xml")):
        for case in ET.parse(xml).getroot().iter("testcase"):
            cls = case.get("classname", "").rsplit(".", 1)[-1]
            name = f"{cls}.{case.get('name', '')}"
            failed = any(case.find(tag) is not None for tag in ("failure", "error", "skipped"))
            results[name] = results.get(name, True) and not failed
    return results


def table(results: dict[str, bool]) -> str:
    lines = ["| capability | " + " | ".join(CLIENTS) + " |",
             "| --- |" + " :---: |" * len(CLIENTS)]
    for capability, cells in CAPABILITIES.items():
        row = []
        for client in CLIENTS:
            prefix = cells.get(client)
            if prefix is None:
                row.append("")
                continue
            ran = [ok for name, ok in results.items()
                   if name == prefix or name.startswith(prefix + "/") or name.startswith(prefix + "(")]
            if not ran:
                sys.exit(f"no result for {client} / {capability} (test {prefix}): run the suites first")
            row.append("yes" if all(ran) else "FAILED")
        lines.append(f"| {capability} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--check", type=Path, metavar="README")
    g.add_argument("--write", type=Path, metavar="README")
    args = p.parse_args()
    results = {**go_results(GO_LOG), **java_results(SUREFIRE)}
    generated = table(results)
    target = args.check or args.write
    if target is None:
        print(generated, end="")
        return
    text = target.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    current = text[start:end].strip("\n") + "\n"
    if args.write:
        target.write_text(text[:start] + "\n" + generated + text[end:])
    elif current != generated:
        sys.exit(f"{target}'s client table differs from the suites' results; "
                 f"run scripts/client-matrix.py --write {target}:\n{generated}")


if __name__ == "__main__":
    main()
