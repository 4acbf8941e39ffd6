"""The LLM gateway (openai SDK against any OpenAI-compatible endpoint) and the offline planner."""
