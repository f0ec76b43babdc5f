"""``flamingo serve``: an OpenAI-compatible HTTP API for a Flamingo model, batched, with a web page.

Needs ``pip install "flamingo-vlm[serve]"``. Modules: ``app`` (``create_app``), ``batching`` (the
engine), ``mapping`` (chat → Flamingo prompt, ``PromptFormat``), ``schema`` (request bodies), ``media``
(image URLs), ``limits`` (``ServeLimits``), ``middleware``, ``errors``, ``metrics``, ``config``
(``ServeConfig``). Nothing is imported here, so ``flamingo --help`` works without FastAPI installed.
The mapping of chats to prompts, the limits, errors and metrics: docs/serving.md.
"""
