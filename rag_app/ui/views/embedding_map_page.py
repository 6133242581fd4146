"""The embedding_map page (a file, so that st.navigation and AppTest can address it)."""

from rag_app.ui.embedding_map import render

render()
