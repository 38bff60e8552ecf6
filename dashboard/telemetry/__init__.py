"""Pure telemetry logic: channel registry, frame validation, codecs and processors. No I/O here."""
