"""The documents page (a file, so that st.navigation and AppTest can address it)."""

from rag_app.ui.documents import render

render()
