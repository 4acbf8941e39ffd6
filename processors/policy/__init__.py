"""The tool-call policy engine: Cedar policies decide if a tool call is allowed, denied or needs approval."""
