"""The LLM: the model that writes the answers, wherever it runs.

- `client`: chat completions from any OpenAI-compatible endpoint, streamed, with time limits
  that hold (`ChatClient`, the `Chat` protocol, `connect`, `redact_url`);
- `queue`: the first-come-first-served queue in front of the model's slots, inside this process;
- `local`: the bundled default model, a GGUF served by llama.cpp (xllamacpp) on 127.0.0.1 in a
  child process.
"""
