"""The Streamlit chat UI (`streamlit run rag_app/ui/app.py`): thin pages over the library."""
