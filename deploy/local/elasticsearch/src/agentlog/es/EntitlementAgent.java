package agentlog.es;

import java.lang.instrument.Instrumentation;

/**
 * Elasticsearch 9.x enforces "entitlements" by self-attaching a tiny java agent
 * (lib/entitlement-agent/*.jar in the distribution, not published to Maven Central).
 * EntitlementBootstrap calls VirtualMachine.loadAgent(jar, "<initialization class name>");
 * like the original, the agent only hands the Instrumentation to that class, which lives in
 * the org.elasticsearch.entitlement module (published) and does all the real work.
 */
public final class EntitlementAgent {
    public static void agentmain(String initClassName, Instrumentation inst) throws Exception {
        String cls = (initClassName == null || initClassName.isEmpty())
            ? "org.elasticsearch.entitlement.initialization.EntitlementInitialization"
            : initClassName;
        Class.forName(cls).getMethod("initialize", Instrumentation.class).invoke(null, inst);
    }
}
