package io.streamhouse.it;

import java.io.File;
import java.io.IOException;
import java.net.HttpURLConnection;
import java.net.ServerSocket;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * One {@code streamhouse serve} for the whole test JVM: the binary named by $STREAMHOUSE_BIN
 * (else the workspace's debug build), on free loopback ports, as the pytest and Go suites start
 * it. Stopped with SIGTERM when the JVM exits.
 */
final class Server {
    private static Server instance;
    private static final AtomicInteger SEQ = new AtomicInteger();

    final String bootstrap;
    private final Process process;
    private final Path log;

    private Server(String bootstrap, Process process, Path log) {
        this.bootstrap = bootstrap;
        this.process = process;
        this.log = log;
    }

    /** The running server, started on first use. */
    static synchronized Server get() {
        if (instance == null) {
            try {
                instance = start();
            } catch (IOException | InterruptedException e) {
                throw new IllegalStateException("starting streamhouse failed", e);
            }
        }
        return instance;
    }

    /** A topic name no other test of this run uses. */
    static String uniqueTopic(String prefix) {
        return prefix + "-" + ProcessHandle.current().pid() + "-" + SEQ.incrementAndGet();
    }

    /** Client properties pointing at the server. */
    static Properties props() {
        Properties p = new Properties();
        p.put("bootstrap.servers", get().bootstrap);
        p.put("client.id", "streamhouse-java-suite");
        return p;
    }

    private static Server start() throws IOException, InterruptedException {
        String explicit = System.getenv("STREAMHOUSE_BIN");
        Path bin = explicit != null && !explicit.isEmpty()
                ? Paths.get(explicit)
                : Paths.get("..", "..", "target", "debug", "streamhouse");
        if (!Files.isExecutable(bin)) {
            throw new IllegalStateException("streamhouse binary not found at " + bin.toAbsolutePath()
                    + " (cargo build, or set STREAMHOUSE_BIN)");
        }
        Path dir = Files.createTempDirectory("streamhouse-java-");
        int kafkaPort = freePort();
        int httpPort = freePort();
        String bootstrap = "127.0.0.1:" + kafkaPort;
        Path log = dir.resolve("server.log");
        ProcessBuilder pb = new ProcessBuilder(List.of(bin.toAbsolutePath().toString(), "serve",
                "--data-dir", dir.resolve("data").toString(),
                "--kafka-addr", bootstrap,
                "--http-addr", "127.0.0.1:" + httpPort,
                // Compacted topics (CompactionTest) compact within seconds, not minutes.
                "--consolidation-max-age-ms", "1000",
                "--compaction-interval-ms", "1000"));
        pb.environment().put("RUST_LOG", "warn");
        pb.redirectErrorStream(true).redirectOutput(log.toFile()).redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")));
        Process process = pb.start();
        Server server = new Server(bootstrap, process, log);
        Runtime.getRuntime().addShutdownHook(new Thread(server::stop));
        server.waitHealthy("http://127.0.0.1:" + httpPort + "/health");
        return server;
    }

    private void waitHealthy(String url) throws IOException, InterruptedException {
        Instant deadline = Instant.now().plus(Duration.ofSeconds(30));
        while (Instant.now().isBefore(deadline)) {
            if (!process.isAlive()) {
                throw new IllegalStateException("server exited with " + process.exitValue() + ":\n" + logTail());
            }
            try {
                HttpURLConnection c = (HttpURLConnection) URI.create(url).toURL().openConnection();
                c.setConnectTimeout(1000);
                c.setReadTimeout(1000);
                if (c.getResponseCode() == 200) {
                    return;
                }
            } catch (IOException notYet) {
                // Not listening yet.
            }
            Thread.sleep(100);
        }
        throw new IllegalStateException(url + " not healthy within 30 s:\n" + logTail());
    }

    /** The end of the server's log, for failure messages. */
    String logTail() {
        try {
            String s = Files.readString(log);
            return s.length() > 8000 ? s.substring(s.length() - 8000) : s;
        } catch (IOException e) {
            return "(no server log: " + e + ")";
        }
    }

    private void stop() {
        process.destroy(); // SIGTERM: a clean shutdown
        try {
            if (!process.waitFor(15, java.util.concurrent.TimeUnit.SECONDS)) {
                process.destroyForcibly();
            }
        } catch (InterruptedException e) {
            process.destroyForcibly();
        }
    }

    private static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }
}
