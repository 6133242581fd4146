"""The index: what a sync writes and a search reads.

- `store`: the Chroma side (a logical collection of chunks and the file records behind them,
  the embedding fingerprint, the writer lock and lease, the BM25 index kept beside it);
- `lexical`: the BM25 index over the same chunks, saved beside the store.
"""
