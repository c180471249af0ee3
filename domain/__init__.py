"""The ground: the product's shared vocabulary, importing nothing else of ours.

Models (tickets, suggestions, decisions, results), the one error tree, settings types, the admin
mapping schema, and the two pure guards every layer applies (``sanitize`` for what we write,
``redact`` for what we log). ``connectors`` and ``enrichers`` build on it; the flow (``triage``)
builds on those; ``function_app.py`` sits on top. ``tests/test_layers.py`` enforces the order.
"""
