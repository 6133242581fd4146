"""The Streamlit chat UI (`streamlit run rag_app/ui/app.py`): thin pages over the library.

Besides the pages, the helpers only the UI uses (and the API through `services`): `sources`
(a cited PDF page rendered with the passage marked, or the marked section), `conversations`
(saved chats, feedback) and `safety` (Markdown escaping, safe upload names).
"""
