"""rag_app: settings, models, the index, retrieval, answering, the chat UI, the API, evaluation."""
