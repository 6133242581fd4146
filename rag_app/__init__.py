"""rag_app: settings, embeddings, store (and later retrieval, answering, UI, evaluation)."""
