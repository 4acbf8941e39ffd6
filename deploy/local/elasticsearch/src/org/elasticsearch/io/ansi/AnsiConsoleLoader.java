package org.elasticsearch.io.ansi;

import java.util.function.Supplier;

/**
 * The node loads this class by name from lib/tools/ansi-console/*.jar (the distribution's
 * jansi-based jar is not on Maven Central). The real loader returns null whenever stdout is
 * not a terminal; ours always runs with stdout redirected to a log file, so: always null
 * (= plain console logging).
 */
public class AnsiConsoleLoader implements Supplier<Object> {
    @Override
    public Object get() {
        return null;
    }
}
