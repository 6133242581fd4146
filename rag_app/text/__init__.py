"""Text rules shared by retrieval, answering and the evaluation: one home for each (words and
stop words here; sentences, numbers and quotes still in rag_app.evidence, moving here)."""
