"""kcat (librdkafka's CLI) against the server: metadata, produce, consume."""

import json
import shutil
import subprocess

import pytest

from kafka_util import create_topic

KCAT_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def kcat():
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if path is None:
        pytest.fail("kcat not installed: run scripts/setup-test-deps.sh", pytrace=False)
    return path


def run_kcat(kcat, bootstrap, *args, stdin=None):
    proc = subprocess.run([kcat, "-b", bootstrap, *args], input=stdin, capture_output=True,
                          timeout=KCAT_TIMEOUT_S)
    assert proc.returncode == 0, (f"kcat {' '.join(args)} exited {proc.returncode}\n"
                                  f"stderr: {proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode()


def test_metadata_lists_broker_and_topic(kcat, server, topic):
    create_topic(server.bootstrap, topic, 3)

    text = run_kcat(kcat, server.bootstrap, "-L")
    assert f"at 127.0.0.1:{server.kafka_port}" in text, text
    assert f'topic "{topic}" with 3 partitions' in text, text

    meta = json.loads(run_kcat(kcat, server.bootstrap, "-L", "-J"))
    assert [b["name"] for b in meta["brokers"]] == [server.bootstrap]
    broker_ids = {b["id"] for b in meta["brokers"]}
    (listed,) = [t for t in meta["topics"] if t["topic"] == topic]
    assert sorted(p["partition"] for p in listed["partitions"]) == [0, 1, 2]
    assert all(p["leader"] in broker_ids for p in listed["partitions"]), listed


def test_produce_consume_round_trip(kcat, server, topic):
    create_topic(server.bootstrap, topic, 3)
    sent = {1: [(f"k{i}", f"one-{i}") for i in range(20)],
            2: [(f"k{i}", f"two {i} with spaces") for i in range(7)]}
    for partition, records in sent.items():
        lines = "".join(f"{k}:{v}\n" for k, v in records)
        run_kcat(kcat, server.bootstrap, "-P", "-t", topic, "-p", str(partition), "-K:",
                 stdin=lines.encode())

    out = run_kcat(kcat, server.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e",
                   "-f", "%k:%s:%o\n")
    got = sorted(out.splitlines())
    expected = sorted(f"{k}:{v}:{offset}" for records in sent.values()
                      for offset, (k, v) in enumerate(records))
    assert got == expected

    # Per partition, in order: kcat prints records as fetched, so order is checked too.
    for partition, records in sent.items():
        out = run_kcat(kcat, server.bootstrap, "-C", "-t", topic, "-p", str(partition),
                       "-o", "beginning", "-e", "-f", "%p|%o|%k|%s\n")
        assert out.splitlines() == [f"{partition}|{o}|{k}|{v}" for o, (k, v) in enumerate(records)]
    empty = run_kcat(kcat, server.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "beginning",
                     "-e", "-f", "%o\n")
    assert empty == ""


def test_readme_quick_start_runs_as_written(kcat, server, binary):
    """The README's quick start, command by command, on a default server (no auto-creation):
    the CLI creates the topic, then kcat produces and consumes."""
    import os
    import re
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"Then use any Kafka client:\n\n```sh\n(.*?)```", readme, re.S).group(1)
    env = dict(os.environ, STREAMHOUSE_BOOTSTRAP=server.bootstrap,
               STREAMHOUSE_HTTP=f"http://127.0.0.1:{server.http_port}")
    outputs = []
    for line in block.strip().splitlines():
        command = line.split("  #")[0].strip()
        # The README's commands with this test's binary and server address.
        command = command.replace("cargo run --release -p streamhouse --", shlex.quote(str(binary)))
        command = command.replace("kcat -b 127.0.0.1:9092", f"{kcat} -b {server.bootstrap}")
        proc = subprocess.run(command, shell=True, env=env, capture_output=True, timeout=KCAT_TIMEOUT_S)
        assert proc.returncode == 0, f"{command}\n{proc.stderr.decode(errors='replace')}"
        outputs.append(proc.stdout.decode())
    assert outputs[-1].splitlines() == ["hello", "world"], outputs[-1]
