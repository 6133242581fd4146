"""The HTTP API other programs call (`python -m rag_app api`): OpenAI-compatible chat
completions with checked citations, search, and documents.

    app.py      create_app(settings): the routes, their errors, the bearer key
    answers.py  a conversation into the answer path, run in a thread, out as OpenAI objects
    guard.py    Host, Origin, rate and body-size limits (ASGI middleware)
    schemas.py  the request and response models (/openapi.json)
    server.py   serve(): checks the address and the key, runs uvicorn
"""
