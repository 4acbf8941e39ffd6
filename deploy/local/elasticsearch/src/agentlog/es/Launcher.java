package agentlog.es;

import org.elasticsearch.bootstrap.ServerArgs;
import org.elasticsearch.common.io.stream.OutputStreamStreamOutput;
import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.KeyStoreWrapper;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.InternalSettingsPreparer;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.io.SequenceInputStream;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

/**
 * Minimal stand-in for Elasticsearch's server-cli (which is not published to Maven Central).
 *
 * The real distribution runs two JVMs: the CLI parses config/elasticsearch.yml into a
 * {@link ServerArgs}, serializes it to the server JVM's stdin, and keeps that pipe open; the
 * server ({@code org.elasticsearch.bootstrap.Elasticsearch}) reads the args and then treats EOF
 * on stdin as "parent died, exit".
 *
 * We do the same in ONE JVM: build the ServerArgs with Elasticsearch's own classes (exactly as
 * EnvironmentAwareCommand/ServerCli do), then replace System.in with "serialized args followed
 * by a stream that never ends" and call the real Elasticsearch.main. The node therefore never
 * sees EOF; it stops on SIGTERM through its own shutdown hook (like `kill` on a real node).
 *
 * Needs: -Des.path.home, -Des.path.conf, the ES jars on --module-path, and
 * --add-opens org.elasticsearch.server/org.elasticsearch.bootstrap=ALL-UNNAMED
 * (Elasticsearch.main lives in a package-private class).
 */
public final class Launcher {

    public static void main(String[] argv) throws Throwable {
        Path home = Path.of(System.getProperty("es.path.home"));
        Path conf = Path.of(System.getProperty("es.path.conf"));

        // ES's logging facade must be wired before any ES class logs (the CLI launcher does
        // the same); log4j itself is configured later by Elasticsearch.main.
        LogConfigurator.configureESLogging();

        // Same as EnvironmentAwareCommand.createEnv: reads config/elasticsearch.yml,
        // substitutes ${ENV_VARS}, applies path.home.
        Environment env = InternalSettingsPreparer.prepareEnvironment(
            Settings.EMPTY,
            Map.of("path.home", home.toString()),
            conf,
            () -> System.getenv().getOrDefault("HOSTNAME", "agentlog-es")
        );

        // No keystore on disk: an in-memory one holding only the bootstrap seed,
        // which is what a fresh distribution would create.
        KeyStoreWrapper secrets = KeyStoreWrapper.create();

        // daemonize=false (stdout stays open -> console log), quiet=false, no ES pid file
        // (the caller records our pid).
        ServerArgs args = new ServerArgs(false, false, null, secrets, env.settings(), env.configDir(), env.logsDir());
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        try (OutputStreamStreamOutput out = new OutputStreamStreamOutput(buf)) {
            args.writeTo(out);
        }
        System.setIn(new SequenceInputStream(new ByteArrayInputStream(buf.toByteArray()), new NeverEndingInput()));

        Method main = Class.forName("org.elasticsearch.bootstrap.Elasticsearch").getDeclaredMethod("main", String[].class);
        main.setAccessible(true);
        try {
            main.invoke(null, (Object) new String[0]);
        } catch (InvocationTargetException e) {
            throw e.getCause();
        }
        // main returns once the node is started; its non-daemon threads keep the JVM alive.
    }

    /** stdin after the args: blocks forever, so the server's CLI-monitor thread never sees EOF. */
    private static final class NeverEndingInput extends InputStream {
        private final CountDownLatch never = new CountDownLatch(1);

        @Override
        public int read() {
            try {
                never.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            return -1;
        }
    }
}
